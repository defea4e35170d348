"""Shared helpers for the kapdata tests: tiny hand-written files, a tmp database, table snapshots."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from kapdata import db, ingest

REPO = Path(__file__).resolve().parent.parent

#: Every fixture date is in 2025, so "today" only matters for the future-date rule.
TODAY = dt.date(2026, 1, 15)

PATIENTS_HEADER = "patient_id,clinic,provider,age_band,sex,primary_condition,route"
SESSIONS_HEADER = "patient_id,session_date,route,dose_mg"
SCORES_HEADER = "patient_id,instrument,assessed_on,total"
SCORES_PHASE_HEADER = "patient_id,instrument,assessed_on,total,phase"

SNAPSHOT_TABLES = ("patients", "sessions", "scores", "batches")


def write_text(path: Path, text: str, *, bom: bool = False, crlf: bool = False) -> Path:
    """Write exactly ``text`` (lines joined by LF, or CRLF) with an optional UTF-8 byte order mark."""
    body = text.replace("\n", "\r\n") if crlf else text
    data = body.encode("utf-8")
    if bom:
        data = b"\xef\xbb\xbf" + data
    path.write_bytes(data)
    return path


def csv_lines(header: str, rows: Iterable[Sequence[Any]]) -> str:
    lines = [header] + [",".join("" if v is None else str(v) for v in row) for row in rows]
    return "\n".join(lines) + "\n"


def sessions_rows(patient_id: str, dates: Iterable[str]) -> list[tuple[Any, ...]]:
    return [(patient_id, d, "IV", 35) for d in dates]


def load(
    db_file: Path,
    *files: Path,
    on_error: ingest.OnError = "reject",
    rejects: Path | None = None,
    today: dt.date = TODAY,
    new_patients: bool = True,
) -> ingest.LoadResult:
    """Load with new patients allowed (most tests load a scores file alone); the default rule, a score for
    an unknown patient is an error, is tested with ``new_patients=False`` (tests/test_ingest.py)."""
    return ingest.load_files(
        list(files), db_file, on_error=on_error, rejects=rejects, today=today, new_patients=new_patients
    )


def snapshot(db_file: Path) -> dict[str, Any]:
    """Full contents of the data tables (sorted rows) plus the data version, for before/after checks."""
    if not Path(db_file).exists():
        return {"exists": False}
    out: dict[str, Any] = {"exists": True}
    with db.session(db_file, read_only=True) as con:
        for table in SNAPSHOT_TABLES:
            rows = con.execute("SELECT * FROM " + table).fetchall()  # a fixed table name
            out[table] = sorted(rows, key=repr)
        row = con.execute("SELECT value FROM meta WHERE key = 'data_version'").fetchone()
        out["data_version"] = row[0] if row else None
    return out


def query(db_file: Path, sql: str, params: Sequence[Any] | dict[str, Any] | None = None) -> list[tuple]:
    with db.reader(db_file) as con:
        return con.execute(sql, params).fetchall()


def outcome(db_file: Path, patient_id: str, instrument: str, phase: str) -> dict[str, Any]:
    """One row of the ``outcomes`` view as a dict (None where SQL has NULL)."""
    with db.reader(db_file) as con:
        cur = con.execute(
            "SELECT * FROM outcomes WHERE patient_id = ? AND instrument = ? AND phase = ?",
            [patient_id, instrument, phase],
        )
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
    assert len(rows) == 1, f"expected one outcomes row for {patient_id} {instrument} {phase}: {rows}"
    return dict(zip(names, rows[0], strict=True))


def phase_of(db_file: Path, patient_id: str, instrument: str, assessed_at: str) -> str:
    rows = query(
        db_file,
        "SELECT phase FROM scores_phased WHERE patient_id = ? AND instrument = ? AND assessed_at = ?",
        [patient_id, instrument, assessed_at],
    )
    assert len(rows) == 1, rows
    return rows[0][0]


def errors_text(result: ingest.LoadResult) -> list[str]:
    return [str(p) for p in result.errors]


def run_cli(
    *args: str, cwd: Path, env_db: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """``python -m kapdata ARGS`` in a fresh process (the package from this checkout)."""
    env = {k: v for k, v in os.environ.items() if k != "KAP_DB"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if env_db is not None:
        env["KAP_DB"] = env_db
    return subprocess.run(
        [sys.executable, "-m", "kapdata", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "ro")
con.execute("SELECT count(*) FROM scores").fetchall()
print("ready", flush=True)
time.sleep(float(sys.argv[3]))
con.close()
"""


def hold(db_file: Path, mode: str, seconds: float) -> subprocess.Popen:
    """Another process that opens the database (read-only or read-write) and keeps it for a while."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db_file), mode, str(seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read() if proc.stderr else ""
    return proc


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    return tmp_path / "kap.duckdb"


def _write_base_files(folder: Path) -> list[Path]:
    patients = csv_lines(PATIENTS_HEADER, [("B1", "North", "Dr A", "25-34", "female", "MDD", "IV")])
    sessions = csv_lines(SESSIONS_HEADER, sessions_rows("B1", ["2025-03-01", "2025-03-29"]))
    scores = csv_lines(SCORES_HEADER, [("B1", "PHQ-9", "2025-02-20", 18), ("B1", "PHQ-9", "2025-04-10", 9)])
    return [
        write_text(folder / "base_patients.csv", patients),
        write_text(folder / "base_sessions.csv", sessions),
        write_text(folder / "base_scores.csv", scores),
    ]


@pytest.fixture(scope="session")
def _base_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("base")
    template = folder / "template.duckdb"
    load(template, *_write_base_files(folder))
    return template


@pytest.fixture
def base_db(tmp_path: Path, db_file: Path, _base_template: Path) -> Path:
    """A database holding patient B1 (batch 1), two sessions 2025-03-01 and -29 (batch 2) and two PHQ-9
    scores, 18 on 2025-02-20 and 9 on 2025-04-10 (batch 3); the three files are in ``tmp_path`` too."""
    _write_base_files(tmp_path)
    shutil.copyfile(_base_template, db_file)
    return db_file
