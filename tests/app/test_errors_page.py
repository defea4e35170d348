"""No traceback reaches a person: a missing, corrupt or read-only database gives each page one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from .conftest import ROOT

PAGES = ("overview", "patient_trends", "clinic_outcomes", "research_export", "data_import", "definitions")


def run_page(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60).run()
    at.switch_page(f"pages/{page}.py").run()
    return at


@pytest.fixture()
def user_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAP_DEBUG", raising=False)
    monkeypatch.chdir(ROOT)


@pytest.mark.parametrize("page", PAGES)
def test_a_corrupt_database_gives_one_line_and_no_traceback(
    tmp_path: Path, user_env, monkeypatch, page
) -> None:
    bad = tmp_path / "kap.duckdb"
    bad.write_bytes(b"this is not a database" * 200)
    monkeypatch.setenv("KAP_DB", str(bad))
    at = run_page(page)
    assert not at.exception
    errors = [e.value for e in at.error]
    assert errors and errors[0].startswith(f"The database file ({bad}) could not be read"), errors
    assert "Traceback" not in " ".join(errors) and "IO Error" not in " ".join(errors)
    assert bad.read_bytes() == b"this is not a database" * 200  # never overwritten


def test_a_read_only_database_still_serves_the_overview(app_db: Path, tmp_path: Path, user_env, monkeypatch):
    # Tests run as root, who can write any file: a read-only disk is simulated by refusing every read-write
    # open, as DuckDB does on a read-only file system.
    import duckdb

    from kapdata import db

    real = duckdb.connect

    def read_only_disk(database: str, read_only: bool = False, **kw):
        if not read_only:
            raise duckdb.IOException(f'IO Error: Cannot open file "{database}": Read-only file system')
        return real(database, read_only=True, **kw)

    copy = tmp_path / "kap.duckdb"
    shutil.copy(app_db, copy)
    monkeypatch.setattr(db.duckdb, "connect", read_only_disk)
    monkeypatch.setenv("KAP_DB", str(copy))
    at = run_page("overview")
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.metric  # the overview's numbers are there
    at = run_page("settings")
    assert not at.exception
