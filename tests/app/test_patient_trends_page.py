"""The Patient trends page driven with AppTest: caseload, choosing a patient, the URL, the patient view.

Most tests use the hand-made cohort of tests/test_patient.py (known flags) with the page's "today" fixed;
one runs on the shared synthetic sample database.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import kapui.patient as ui
from kapdata import db, ingest, settings
from kapdata import patient as pt

from ..test_patient import TODAY, build_cohort, build_safety_cohort
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
    # Only the open tab is drawn. GAD-7: the trend (no items)
    assert len(at.get("plotly_chart")) == 1
    assert at.get("download_button")[0].label == "Progress report (HTML)"
    # PCL-5: the trend and the clusters; the item heatmap once its switch is on
    at.session_state[ui.scale_tab_key("D1")] = "PCL-5"
    at.run()
    assert len(at.get("plotly_chart")) == 1
    switch = at.toggle(key=ui.ITEMS_KEY)
    assert switch.label == "PCL-5 item answers over time" and not switch.value
    clusters = at.dataframe[0].value
    assert clusters["dsm5_met"].tolist() == [True, False]
    switch.set_value(True).run()
    assert len(at.get("plotly_chart")) == 2
    heat = json.loads(at.get("plotly_chart")[1].proto.spec)
    assert heat["data"][0]["type"] == "heatmap"
    # The switch stays on for another patient and after the caseload (a page without it).
    at.button[0].click().run()  # ← Caseload
    at.query_params[ui.PARAM] = "D1"
    at.session_state[ui.scale_tab_key("D1")] = "PCL-5"
    at.run()
    assert at.toggle(key=ui.ITEMS_KEY).value
    assert len(at.get("plotly_chart")) == 2


def test_unknown_patient_in_the_url_warns_and_shows_the_caseload(cohort_env):
    at = open_page(patient="NOPE")
    assert any("No patient with this ID" in w.value for w in at.warning)
    assert at.code[0].value == "NOPE"  # the typed ID is shown as text, never as markdown
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


def test_tiles_follow_the_phase_filter(cohort_env):
    at = open_page()
    at.button_group[0].set_value(["dosing"]).run()  # S1 (safety) and N1 (no baseline)
    counts = {m.label.split(": ")[-1]: m.value for m in at.metric}
    assert counts == {
        "Patients": "2",
        "Safety": "1",
        "Deterioration": "0",
        "Overdue": "0",
        "No baseline": "1",
    }


@pytest.fixture()
def safety_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = build_safety_cohort(tmp_path)  # writable: the page records acknowledgements and discharges
    monkeypatch.setenv("KAP_DB", str(path))
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(ui, "today", lambda: TODAY)
    return path


def test_badges_say_not_defined_for_a_baseline_below_the_clinical_range(safety_env):
    at = open_page(patient="G1")  # GAD-7 0 → 4: reliable deterioration, no remission
    badges = [m.value for m in at.markdown if "-badge[" in m.value]
    assert badges == [
        ":red-badge[:material/check: Reliable deterioration]",
        ":gray-badge[:material/close: 1 not met]",  # reliable improvement
        ":gray-badge[not defined: baseline below clinical range]",
    ]


def test_assessments_show_item_9_not_answered_and_the_flag_asks_for_a_risk_assessment(safety_env):
    at = open_page(patient="A1")
    assert "Complete a risk assessment" in at.error[0].value
    assert "better off dead, or of hurting yourself" in at.error[0].value
    table = at.dataframe[-1].value
    assert table["safety_answer"].tolist() == ["item 9 not answered", "item 9 = 2"]
    assert table["prorated"].tolist() == [False, False]


def test_acknowledging_a_flag_on_the_page_keeps_it_marked_and_ranked_after(safety_env):
    at = open_page(patient="A3")
    at.text_input(key=ui.STAFF_KEY).input("AB-12")
    at.text_area(key=ui.NOTE_KEY).input("risk assessed")
    next(b for b in at.button if b.label == "Acknowledge the safety flag").click().run()
    assert not at.exception
    assert at.success[0].value == "Recorded."
    assert any(
        t.value.startswith("Acknowledged by AB-12 on ") and t.value.endswith(": risk assessed")
        for t in at.text
    )
    at.button[0].click().run()  # back to the caseload
    assert caseload_ids(at)[:3] == ["A1", "A2", "A3"]
    assert (
        at.dataframe[0]
        .value["flags"]
        .tolist()[2]
        .startswith("⚠ Safety: PHQ-9 item 9 = 2 (acknowledged by AB-12")
    )


def test_the_record_panel_opens_by_itself_only_for_an_unacknowledged_safety_flag(cohort_env):
    at = open_page(patient="D1")  # deterioration, no safety flag: the panel is closed, its fields not drawn
    assert not [b for b in at.button if b.label == "Discharge"]
    assert not at.text_area
    at.session_state[ui.record_key("D1")] = True  # opened (a click on the expander)
    at.run()
    assert "Acknowledge the reliable deterioration flag" in [b.label for b in at.button]
    assert "Discharge" in [b.label for b in at.button]
    assert at.text_area(key=ui.NOTE_KEY).label == "Note"


def test_a_bad_staff_code_records_nothing(safety_env):
    at = open_page(patient="A3")
    at.text_input(key=ui.STAFF_KEY).input("Dr Smith")
    next(b for b in at.button if b.label == "Acknowledge the safety flag").click().run()
    assert [e.value for e in at.error][1:] == ["Not recorded."]  # after the safety flag
    assert any("staff code" in t.value for t in at.text)
    with db.reader(safety_env) as con:
        assert con.execute("SELECT count(*) FROM acknowledgements").fetchone() == (0,)


def test_discharging_hides_the_patient_until_shown_and_readmitting_brings_them_back(safety_env):
    at = open_page(patient="A1")
    at.text_input(key=ui.STAFF_KEY).input("AB")
    next(b for b in at.button if b.label == "Discharge").click().run()
    assert any("Discharged on" in i.value for i in at.info)
    at.button[0].click().run()
    assert "A1" not in caseload_ids(at)
    at.toggle(key=ui.SHOW_DISCHARGED_KEY).set_value(True).run()
    assert caseload_ids(at)[-1] == "A1"
    at.selectbox(key=ui.PICK_KEY).select("A1").run()
    next(b for b in at.button if b.label == "Re-admit to the caseload").click().run()
    at.button[0].click().run()
    assert caseload_ids(at)[:2] == ["A3", "A1"]


def test_a_long_caseload_is_paged_and_a_row_on_page_two_opens_that_patient(app_env: Path, monkeypatch):
    monkeypatch.setattr(ui, "CASELOAD_PAGE_ROWS", 10)
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    first = caseload_ids(at)
    assert len(first) == 10
    total = int(at.metric[0].value.replace(",", ""))
    assert total > 20
    assert f"Patients 1–10 of {total:,}" in " ".join(c.value for c in at.caption)
    at.pagination[0].set_value(2).run()
    second = caseload_ids(at)
    assert len(second) == 10 and not set(first) & set(second)
    assert f"Patients 11–20 of {total:,}" in " ".join(c.value for c in at.caption)
    at.session_state[f"{ui.TABLE_KEY}_0"] = {"selection": {"rows": [3], "columns": [], "cells": []}}
    at.run()
    assert at.title[0].value == f"Patient {second[3]}"  # the fourth row of page two, not of page one


# --- what the browser is sent stays small (issue 14) ----------------------------------------------------


def _trend_spec(at: AppTest) -> dict:

    return json.loads(at.get("plotly_chart")[0].proto.spec)


def _labels(spec: dict) -> list[str]:
    return [a["text"] for a in spec["layout"]["annotations"]]


@pytest.fixture()
def own_cohort_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A writable copy of the hand-made cohort (these tests change its data or settings)."""
    path = build_cohort(tmp_path)
    monkeypatch.setenv("KAP_DB", str(path))
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(ui, "today", lambda: TODAY)
    return path


def test_the_figures_are_built_once_per_data_version(own_cohort_env, monkeypatch):
    built: list[str] = []
    real = ui.charts.score_trend

    def counting(view, code, **kw):
        built.append(f"{view.patient_id} {code}")
        return real(view, code, **kw)

    monkeypatch.setattr(ui.charts, "score_trend", counting)
    at = open_page(patient="S1")
    at.run()
    at.run()
    assert built == ["S1 PHQ-9"]  # reruns (a tab, a note typed) reuse it
    assert "clinical range ≥ 10" in _labels(_trend_spec(at))


def test_a_settings_change_shows_in_the_cached_figure(own_cohort_env):
    at = open_page(patient="S1")
    assert "clinical range ≥ 10" in _labels(_trend_spec(at))
    settings.update(own_cohort_env, thresholds={"PHQ-9": {"caseness": 12}})
    at.run()
    assert "clinical range ≥ 12" in _labels(_trend_spec(at))


def test_an_import_shows_in_the_cached_figure(own_cohort_env, tmp_path):
    at = open_page(patient="S1")
    assert len(_trend_spec(at)["data"][0]["x"]) == 2
    extra = tmp_path / "more" / "scores.csv"
    extra.parent.mkdir()
    extra.write_text("patient_id,instrument,assessed_on,total\nS1,PHQ-9,2025-06-28,7\n", encoding="utf-8")
    ingest.load_files([extra], own_cohort_env)
    at.run()
    trend = _trend_spec(at)["data"][0]
    assert len(trend["x"]) == 3 and trend["x"][-1].startswith("2025-06-28")


def test_dropping_the_cached_queries_rebuilds_the_figures(own_cohort_env, monkeypatch):
    """What an import, an undo or a settings change made on the page does (kapui.data.clear_caches), even if
    the file's fingerprint did not move."""
    from kapui import data

    built: list[str] = []
    real = ui.charts.score_trend
    monkeypatch.setattr(ui.charts, "score_trend", lambda v, c, **kw: built.append(c) or real(v, c, **kw))
    at = open_page(patient="S1")
    data.clear_caches()
    at.run()
    assert built == ["PHQ-9", "PHQ-9"]


def test_the_picker_lists_a_bounded_number_of_patients(cohort_env, monkeypatch):
    """A typed ID that is not listed opens too (the browser test types one: AppTest cannot)."""
    monkeypatch.setattr(ui, "PICKER_OPTIONS", 2)
    at = open_page()
    picker = at.selectbox(key=ui.PICK_KEY)
    assert picker.options == ["S1", "D1"]  # the first of the ranked caseload
    assert "shows 2 of 6 patients; type any patient ID" in picker.help
    picker.select("D1").run()
    assert at.title[0].value == "Patient D1"
    # On the patient view: this patient and its neighbours by ID (D1, N1, O1, R1, R2, S1)
    assert at.selectbox(key=ui.PICK_KEY).options == ["D1", "N1"]
    at.query_params[ui.PARAM] = "R1"
    at.run()
    assert at.selectbox(key=ui.PICK_KEY).options == ["O1", "R1"]


def test_an_id_that_is_no_patient_offers_the_patients_whose_id_contains_it(cohort_env):
    at = open_page(patient="1")
    assert any("No patient with this ID" in w.value for w in at.warning)
    offered = [b.label for b in at.button if b.key and b.key.startswith("suggest_")]
    assert offered == ["D1", "N1", "O1", "R1", "S1"]
    next(b for b in at.button if b.label == "O1").click().run()
    assert at.title[0].value == "Patient O1"
    at = open_page(patient="zz")
    assert not [b for b in at.button if b.key and b.key.startswith("suggest_")]


def test_picker_options_and_suggestions(monkeypatch):
    monkeypatch.setattr(ui, "PICKER_OPTIONS", 4)
    ids = [f"K{n}" for n in range(10)]
    assert ui.picker_options(ids) == ["K0", "K1", "K2", "K3"]
    assert ui.picker_options(ids, "K5") == ["K3", "K4", "K5", "K6"]
    assert ui.picker_options(ids, "K9") == ["K6", "K7", "K8", "K9"]
    assert ui.picker_options(ids, "K0") == ["K0", "K1", "K2", "K3"]
    assert ui.picker_options(ids, "other") == ["K0", "K1", "K2", "K3"]
    assert ui.picker_options(ids[:3], "K1") == ["K0", "K1", "K2"]
    assert ui.suggestions(["K10", "k1", "X1", "K100"], " k1 ") == ["k1", "K10", "K100"]
    assert ui.suggestions(ids, "") == []


def test_a_selection_state_names_its_row():
    assert ui._selected_row({"selection": {"rows": [3], "columns": []}}) == 3
    assert ui._selected_row({"selection": {"rows": []}}) is None
    assert ui._selected_row(None) is None
