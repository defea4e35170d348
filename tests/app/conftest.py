"""A small synthetic database shared by the page tests (AppTest) — built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from kapdata import db, ingest, sample

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def app_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("appdb")
    files = sample.write_sample(120, folder / "csv", seed=11)
    path = folder / "kap.duckdb"
    ingest.load_files(files, path)
    return path


@pytest.fixture()
def app_env(app_db: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KAP_DB", str(app_db))
    monkeypatch.chdir(ROOT)
    return app_db


def counts(path: Path) -> dict[str, int]:
    with db.reader(path) as con:
        row = con.execute(
            "SELECT (SELECT count(*) FROM patients), (SELECT count(*) FROM scores), "
            "(SELECT count(*) FROM sessions)"
        ).fetchone()
    assert row is not None
    return {"patients": row[0], "scores": row[1], "sessions": row[2]}


@pytest.fixture(autouse=True)
def _raise_page_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Page tests see a page's exception (``at.exception``) instead of the one-line message users get."""
    monkeypatch.setenv("KAP_DEBUG", "1")


@pytest.fixture(autouse=True)
def _private_temp_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each page test stages uploads in its own temporary folder, so tests that check that staged uploads
    leave the disk are not confused by another process (a second test run) using the system's temp dir."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path_factory.mktemp("tmp")))
