"""First run: create the database and load the bundled synthetic sample cohort."""

from __future__ import annotations

import os
from pathlib import Path

from kapdata import db, ingest

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_data"
SAMPLE_FILES = ("patients.csv", "sessions.csv", "scores.csv")


def ensure_database(
    path: str | os.PathLike[str] | None = None, sample_dir: str | os.PathLike[str] | None = None
) -> str:
    """Create the database if needed; load the sample cohort into it when it holds no data yet."""
    folder = Path(sample_dir) if sample_dir else SAMPLE_DIR
    with db.session(path) as con:
        if not db.is_empty(con):
            return f"{db.db_path(path)}: ready"
        files = [folder / name for name in SAMPLE_FILES if (folder / name).exists()]
        if not files:
            return f"{db.db_path(path)}: created, empty (no sample files in {folder})"
        result = ingest.load_with_connection(con, files)
    loaded = sum(f.rows_loaded for f in result.files)
    return f"{db.db_path(path)}: created and loaded {loaded} sample rows from {folder}"
