"""The command line imports only what a command needs (issue 14): a test of structure, not of time.

Each case runs ``kapdata.__main__.main([...])`` in a fresh interpreter and lists the heavy modules that ended
up in ``sys.modules``. ``outcomes --out`` is written by DuckDB alone: no pandas, pyarrow, numpy or argon2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kapdata import db, ingest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("pandas", "pyarrow", "numpy", "argon2", "fhir.resources", "plotly", "pydantic", "streamlit")

_PROBE = """
import json, sys
from kapdata.__main__ import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # --help
    code = exc.code
heavy = [m for m in json.loads(__HEAVY__) if m in sys.modules]
print(json.dumps({"code": code, "heavy": heavy}))
"""


def _imported(*argv: str, cwd: Path) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "KAP_DB"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    code = _PROBE.replace("__HEAVY__", repr(json.dumps(HEAVY)))
    res = subprocess.run(
        [sys.executable, "-c", code, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("imports")
    path = folder / "kap.duckdb"
    sample = REPO / "sample_data"
    ingest.load_files([sample / "patients.csv", sample / "sessions.csv", sample / "scores.csv"], path)
    return path


def test_outcomes_out_imports_no_pandas_pyarrow_or_argon2(small_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.csv"
    got = _imported("outcomes", "--db", str(small_db), "--out", str(out), cwd=tmp_path)
    assert got == {"code": 0, "heavy": []}
    assert out.read_text(encoding="utf-8").startswith("patient_id,instrument,phase,")


def test_help_imports_nothing_heavy(tmp_path: Path) -> None:
    assert _imported("--help", cwd=tmp_path) == {"code": 0, "heavy": []}


def test_the_probe_can_see_a_heavy_import(tmp_path: Path) -> None:
    """The checks here can fail: ``sample`` does use pandas (it builds frames), and the probe sees it.
    (``summary`` used to be the witness; it no longer imports pandas since the cohort module imports it
    only where a frame is built.)"""
    got = _imported("sample", "--patients", "20", "--out", str(tmp_path / "s"), cwd=tmp_path)
    assert got["code"] == 0
    assert "pandas" in got["heavy"]  # type: ignore[operator]


def test_summary_imports_no_pandas(small_db: Path, tmp_path: Path) -> None:
    got = _imported("summary", "--db", str(small_db), cwd=tmp_path)
    assert got["code"] == 0
    assert "pandas" not in got["heavy"]  # type: ignore[operator]


def test_reading_checks_the_schema_with_one_query(small_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``db.reader`` asks one cheap question of ``meta`` (not information_schema) before a read."""
    seen: list[str] = []
    real = db.connect

    class Spy:
        def __init__(self, con: object) -> None:
            self._con = con

        def execute(self, sql: str, *args: object) -> object:
            seen.append(sql)
            return self._con.execute(sql, *args)  # type: ignore[attr-defined]

        def close(self) -> None:
            self._con.close()  # type: ignore[attr-defined]

    monkeypatch.setattr(db, "connect", lambda *a, **k: Spy(real(*a, **k)))
    monkeypatch.setattr(db, "_schema_checked", {})
    with db.reader(small_db):
        pass
    assert len(seen) == 1
    assert "FROM meta" in seen[0] and "information_schema" not in seen[0]


def test_load_of_a_native_csv_imports_no_pandas(tmp_path: Path) -> None:
    got = _imported(
        "load", str(REPO / "sample_data" / "patients.csv"), "--db", str(tmp_path / "k.duckdb"), cwd=tmp_path
    )
    assert got["code"] == 0
    # No pandas (the column-mapping preview imports it only when it runs), no pyarrow or numpy (a native CSV
    # is read by DuckDB alone), no pydantic (FHIR only for a FHIR source).
    assert got["heavy"] == []


@pytest.mark.parametrize("file_format", ["parquet", "csv"])
def test_export_imports_no_pandas(small_db: Path, tmp_path: Path, file_format: str) -> None:
    """The export's path (DuckDB writes the Parquet file; the dictionary and Table 1 are plain text) does not
    import pandas: the cohort module imports it only in the functions that build frames."""
    out = tmp_path / "x"
    got = _imported("export", "--db", str(small_db), "--format", file_format, "--out", str(out), cwd=tmp_path)
    assert got["code"] == 0
    assert "pandas" not in got["heavy"]  # type: ignore[operator]
    assert (out / f"data.{file_format}").exists() and (out / "manifest.json").exists()


def test_parquet_export_imports_no_pyarrow_or_numpy(small_db: Path, tmp_path: Path) -> None:
    """``export --format parquet`` needs no Arrow: DuckDB writes the file, the data dictionary's types come
    from DuckDB's, the small CSV files are written as text."""
    out = tmp_path / "x"
    got = _imported("export", "--db", str(small_db), "--format", "parquet", "--out", str(out), cwd=tmp_path)
    assert got == {"code": 0, "heavy": []}
