"""Two sessions at once in one app process (issue 11, point 1): a patient view while another person's large
upload is being checked, and while its final write is being saved. Both finish with the right data."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

import kapui.patient as ui
from kapdata import db, ingest, sample

from ..test_concurrency import PausedLoad, rows_in, totals
from .conftest import ROOT

PAGE = "pages/patient_trends.py"


@pytest.fixture()
def two_cohorts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[Path]]:
    db_file = tmp_path / "kap.duckdb"
    ingest.load_files(sample.write_sample(60, tmp_path / "first", seed=3), db_file)
    second = sample.write_sample(400, tmp_path / "second", seed=4)
    for f in second:
        f.write_text(f.read_text().replace("K0", "S0"))
    monkeypatch.setenv("KAP_DB", str(db_file))
    monkeypatch.chdir(ROOT)
    return db_file, second


def patient_view(patient: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
    at.query_params[ui.PARAM] = patient
    at.run()
    at.switch_page(PAGE).run()
    return at


def test_a_patient_view_while_a_large_upload_is_checked(two_cohorts, monkeypatch):
    db_file, second = two_cohorts
    before = totals(db_file)
    load = PausedLoad(monkeypatch, second, db_file).start()
    try:
        at = patient_view("K00001")
        assert not at.exception, at.exception
        assert not at.error or all("Safety" in e.value for e in at.error)
        assert at.title[0].value == "Patient K00001"
    finally:
        result = load.finish()
    assert result.committed
    p, s, c = rows_in(second)
    assert totals(db_file) == (before[0] + p, before[1] + s, before[2] + c)
    at = patient_view("S00001")  # the new patient is there at once
    assert not at.exception, at.exception
    assert at.title[0].value == "Patient S00001"


def test_a_patient_view_during_the_final_write_waits_then_shows_the_new_patient(two_cohorts, monkeypatch):
    db_file, second = two_cohorts
    in_write = threading.Event()
    release = threading.Event()
    original = db.bump_data_version

    def slow_bump(con: Any) -> None:
        original(con)
        if not in_write.is_set():
            in_write.set()
            assert release.wait(60)

    monkeypatch.setattr(db, "bump_data_version", slow_bump)
    loader = threading.Thread(target=lambda: ingest.load_files(second, db_file), daemon=True)
    loader.start()
    assert in_write.wait(60)
    threading.Timer(1.0, release.set).start()  # the write ends while the page is waiting for it
    at = patient_view("S00001")
    loader.join(60)
    assert not at.exception, at.exception
    assert at.title[0].value == "Patient S00001"
