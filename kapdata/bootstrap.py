"""First run: create the database and load the bundled synthetic sample cohort.

The bundled demo (``sample_data/``) was generated to end on a fixed day. So that it looks alive on any
day — patients in preparation, dosing, integration and follow-up, integration mostly not overdue — its
dates are moved forward (or back) by whole days before loading, so that its last date is today: every
``session_date`` and ``assessed_on`` gets the same shift, a time of day or offset after the date is kept,
and nothing ends up after today. The shifted copies are written to a temporary folder, loaded through the
ordinary import (same validation, same batches), and the folder is removed whatever happens. A sample
folder given explicitly (``init --sample-dir``) is loaded as it is unless ``shift_dates=True``.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pyarrow.csv as pacsv

from kapdata import db, ingest

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_data"
SAMPLE_FILES = ("patients.csv", "sessions.csv", "scores.csv")
#: Columns (as the import normalises headers) whose values start with a date: these are shifted.
DATE_COLUMNS: tuple[str, ...] = ("session_date", "assessed_on")

_READ_CSV = (
    "SELECT * FROM read_csv(?, all_varchar = true, header = true, delim = ',', quote = '\"', "
    "escape = '\"', encoding = 'utf-8', null_padding = false)"
)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _date_columns(con: duckdb.DuckDBPyConnection, path: Path) -> list[str]:
    names = [d[0] for d in con.execute(_READ_CSV + " LIMIT 0", [str(path)]).description]
    return [n for n in names if ingest.normalize_header(n) in DATE_COLUMNS]


def last_date(files: Sequence[Path]) -> dt.date | None:
    """The latest date in the files' date columns (``session_date``, ``assessed_on``); None if none."""
    latest: dt.date | None = None
    with duckdb.connect() as con:
        for path in files:
            for col in _date_columns(con, path):
                row = con.execute(
                    f"SELECT max(try_cast(left({_quoted(col)}, 10) AS DATE)) FROM ({_READ_CSV})", [str(path)]
                ).fetchone()
                if row and row[0] is not None and (latest is None or row[0] > latest):
                    latest = row[0]
    return latest


def shift_files(files: Sequence[Path], days: int, out_dir: Path) -> list[Path]:
    """Copies of ``files`` in ``out_dir`` (created if needed; same names), every date moved by ``days``.

    Only the leading ``YYYY-MM-DD`` of a value changes; a time of day after it is kept. A value that is
    not a date is left as it is (the import then reports it). Other columns are copied unchanged.
    """
    out: list[Path] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    options = pacsv.WriteOptions(quoting_style="needed")
    with duckdb.connect() as con:
        for path in files:
            target = out_dir / path.name
            dates = set(_date_columns(con, path))
            names = [d[0] for d in con.execute(_READ_CSV + " LIMIT 0", [str(path)]).description]
            select = []
            for name in names:
                col = _quoted(name)
                if name in dates:
                    select.append(
                        f"coalesce(strftime(try_cast(left({col}, 10) AS DATE) + CAST($days AS INTEGER), "
                        f"'%Y-%m-%d') || substr({col}, 11), {col}) AS {col}"
                    )
                else:
                    select.append(col)
            table = con.sql(
                f"SELECT {', '.join(select)} FROM ({_READ_CSV.replace('?', '$path')})",
                params={"path": str(path)} | ({"days": int(days)} if dates else {}),
            ).to_arrow_table()
            pacsv.write_csv(table, target, write_options=options)
            out.append(target)
    return out


def ensure_database(
    path: str | os.PathLike[str] | None = None,
    sample_dir: str | os.PathLike[str] | None = None,
    *,
    today: dt.date | None = None,
    shift_dates: bool | None = None,
) -> str:
    """Create the database if needed, and load the sample cohort into it only when this call created it.

    An existing database is never given the demo, even when it holds no data (every batch undone, or a
    real database being set up): synthetic patients must not mix with a clinic's own. The demo's batches
    are marked ``demo`` in the batch history. If loading the demo fails, the new file is removed again.

    ``shift_dates`` (default: only for the bundled demo, i.e. no ``sample_dir``) moves the sample's dates
    so its last one is ``today`` (default: the real today).
    """
    folder = Path(sample_dir) if sample_dir else SAMPLE_DIR
    shift = (sample_dir is None) if shift_dates is None else shift_dates
    day = today or dt.date.today()
    target = db.db_path(path)
    created = not target.exists()
    try:
        return _create_or_check(target, created, folder, shift, day)
    except BaseException:
        if created:  # a half-made demo database is ours to remove; nothing else was in it
            for leftover in (target, Path(str(target) + ".wal")):
                leftover.unlink(missing_ok=True)
        raise


def _create_or_check(target: Path, created: bool, folder: Path, shift: bool, day: dt.date) -> str:
    path = target
    with db.session(path) as con:
        if not db.is_empty(con):
            return f"{db.db_path(path)}: ready"
        if not created:
            return (
                f"{db.db_path(path)}: ready, holds no data (the demo cohort is loaded only into a new "
                "database; load your files)"
            )
        files = [folder / name for name in SAMPLE_FILES if (folder / name).exists()]
        if not files:
            return f"{db.db_path(path)}: created, empty (no sample files in {folder})"
        if not shift:
            result = ingest.load_with_connection(con, files, today=day, new_patients=True)
            days = 0
        else:
            end = last_date(files)
            days = (day - end).days if end is not None else 0
            work = Path(tempfile.mkdtemp(prefix="kap-sample-"))
            try:
                shifted = shift_files(files, days, work)
                result = ingest.load_with_connection(con, shifted, today=day, new_patients=True)
            finally:
                shutil.rmtree(work, ignore_errors=True)
        batch_ids = [f.batch_id for f in result.files if f.batch_id is not None]
        con.execute("UPDATE batches SET demo = true WHERE list_contains(?, batch_id)", [batch_ids])
    loaded = sum(f.rows_loaded for f in result.files)
    message = f"{db.db_path(path)}: created and loaded {loaded} sample rows from {folder}"
    if shift:
        message += f" (dates moved by {days:+d} days to end on {day.isoformat()})"
    return message
