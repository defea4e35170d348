"""The Patient trends page driven with AppTest: caseload, choosing a patient, the URL, the patient view.

Most tests use the hand-made cohort of tests/test_patient.py (known flags) with the page's "today" fixed;
one runs on the shared synthetic sample database.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import kapui.patient as ui
from kapdata import db
from kapdata import patient as pt

from ..test_patient import TODAY, build_cohort
from .conftest import ROOT

PAGE = "pages/patient_trends.py"


@pytest.fixture(scope="module")
def cohort_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cohort(tmp_path_factory.mktemp("trends_app"))


@pytest.fixture()
def cohort_env(cohort_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KAP_DB", str(cohort_path))
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(ui, "today", lambda: TODAY)
    return cohort_path


def open_page(patient: str | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
    if patient is not None:
        at.query_params[ui.PARAM] = patient
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def caseload_ids(at: AppTest) -> list[str]:
    return at.dataframe[0].value["patient_id"].tolist()


def test_caseload_ranks_fixture_patients_by_need_for_attention(cohort_env):
    at = open_page()
    assert at.title[0].value == "Patient trends"
    assert caseload_ids(at) == ["S1", "D1", "O1", "N1", "R2", "R1"]
    flags = at.dataframe[0].value["flags"].tolist()
    assert flags[:4] == [
        "⚠ Safety: PHQ-9 item 9 = 1",
        "▲ Reliable deterioration: GAD-7",
        "Overdue: 76 days since last score",
        "No baseline",
    ]
    counts = {m.label.split(": ")[-1]: m.value for m in at.metric}
    assert counts == {
        "Patients": "6",
        "Safety": "1",
        "Deterioration": "1",
        "Overdue": "1",
        "No baseline": "1",
    }


def test_sidebar_provider_filter_narrows_the_caseload(cohort_env):
    at = open_page()
    at.sidebar.multiselect(key="f_providers").select("PR2").run()
    assert caseload_ids(at) == ["O1", "N1"]


def test_phase_pills_narrow_the_caseload(cohort_env):
    at = open_page()
    at.button_group[0].set_value(["dosing"]).run()
    assert caseload_ids(at) == ["S1", "N1"]


def test_choosing_a_patient_opens_the_view_and_puts_it_in_the_url(cohort_env):
    at = open_page()
    at.selectbox(key=ui.PICK_KEY).select("S1").run()
    assert at.query_params[ui.PARAM] in ("S1", ["S1"])
    assert at.title[0].value == "Patient S1"
    assert "Safety: PHQ-9 item 9 = 1" in at.error[0].value
    strip = " ".join(m.value for m in at.markdown)
    assert "**dosing**" in strip and "**60**" in strip and "**3**" in strip  # phase, days in phase, sessions
    metric = at.metric[0]
    assert (metric.label, metric.value) == ("PHQ-9 · depression · latest", "9")
    assert "baseline 16" in at.caption[0].value and "latest 9" in at.caption[0].value
    badges = [m.value for m in at.markdown if "-badge[" in m.value]
    assert badges == [
        ":green-badge[:material/check: Reliable improvement]",
        ":green-badge[:material/check: Recovery]",
        ":green-badge[:material/check: Reliable recovery]",
        ":gray-badge[:material/close: 3 not met]",  # response, remission, reliable deterioration
    ]


def test_clicking_a_caseload_row_opens_that_patient(cohort_env):
    at = open_page()
    at.session_state[f"{ui.TABLE_KEY}_0"] = {"selection": {"rows": [2], "columns": [], "cells": []}}
    at.run()
    assert at.title[0].value == "Patient O1"
    assert at.query_params[ui.PARAM] in ("O1", ["O1"])
    assert any("Overdue" in w.value for w in at.warning)


def test_deep_link_reloads_to_the_same_patient_view(cohort_env):
    at = open_page(patient="D1")
    assert at.title[0].value == "Patient D1"
    assert any("Reliable deterioration" in w.value and "GAD-7" in w.value for w in at.warning)
    assert [t.label for t in at.tabs] == ["GAD-7", "PCL-5"]
    # GAD-7: the trend (no items); PCL-5: the trend and the item heatmap
    assert len(at.get("plotly_chart")) == 3
    clusters = at.dataframe[0].value
    assert clusters["dsm5_met"].tolist() == [True, False]
    assert at.get("download_button")[0].label == "Progress report (HTML)"


def test_unknown_patient_in_the_url_warns_and_shows_the_caseload(cohort_env):
    at = open_page(patient="NOPE")
    assert any("NOPE" in w.value for w in at.warning)
    assert caseload_ids(at)[0] == "S1"


def test_back_to_caseload_clears_the_patient_from_the_url(cohort_env):
    at = open_page(patient="S1")
    at.button[0].click().run()
    assert ui.PARAM not in at.query_params
    assert at.title[0].value == "Patient trends"


def test_session_log_and_assessments_are_shown_with_highlights(cohort_env):
    at = open_page(patient="S1")
    log = at.dataframe[0].value
    assert log["bp_post"].tolist() == ["165/98", "140/101", "160/100"]
    assessments = at.dataframe[1].value
    assert assessments["safety_answer"].tolist() == ["item 9 = 1", "item 9 = 0"]
    assert assessments["phase"].tolist() == ["integration", "preparation"]


def test_patient_view_opens_on_the_sample_database(app_env: Path):
    with db.reader(app_env) as con:
        first = pt.caseload(con)["patient_id"].iloc[0]
    at = open_page(patient=first)
    assert at.title[0].value == f"Patient {first}"
    assert len(at.get("plotly_chart")) >= 1
    assert len(at.tabs) >= 1
