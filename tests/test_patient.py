"""Caseload ranking, current phase, flags and the patient view on a small hand-made cohort.

Fixture (today = 2025-06-30; integration window 84 days, overdue after 28 days, dosing "under way" 14 days):

- S1 safety: sessions 05-01, 05-15, 06-20 (dosing, day 60); PHQ-9 16 (prep, item 9 = 0) → 9 (item 9 = 1).
- D1 deterioration: sessions 03-01, 03-10 (follow-up since 06-02: day 28); GAD-7 8 → 13 (+5 ≥ RC 4);
  PCL-5 15 (DSM-5 rule met) → 11 (not met: one D item endorsed).
- O1 overdue: sessions 04-01, 04-20 (integration, day 71); PHQ-9 14 → 12, last on 04-15 (76 days ago).
- N1 no baseline: sessions 06-01, 06-25 (dosing); PHQ-9 11 in dosing only.
- R2 rest: sessions 01-10, 01-20 (follow-up, day 77); PHQ-9 20 (item 9 = 2) → 4 (item 9 = 0) on 06-20.
- R1 rest: no sessions (preparation since 06-01: day 29); PHQ-9 6 on 06-01.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pandas as pd
import pytest

from kapdata import caseload as records
from kapdata import cohort, db, ingest
from kapdata import patient as pt
from kapdata.charts import patient as charts

TODAY = dt.date(2025, 6, 30)
NOW = dt.datetime(2025, 6, 30, 10, 0)
ITEMS = [f"item_{n}" for n in range(1, 21)]

PATIENTS = [
    ("S1", "North", "PR1", "IV"),
    ("D1", "North", "PR1", "IM"),
    ("O1", "South", "PR2", "SL"),
    ("N1", "South", "PR2", "IV"),
    ("R2", "North", "PR3", "IV"),
    ("R1", "North", "PR1", "SL"),
]
# patient, date, dose_mg, bp_sys_pre, bp_dia_pre, bp_sys_post, bp_dia_post, dissociation, side_effects
SESSIONS = [
    ("S1", "2025-05-01", 35, 150, 95, 165, 98, 12, "nausea;headache"),
    ("S1", "2025-05-15", 40, 130, 85, 140, 101, 8, ""),
    ("S1", "2025-06-20", 40, 160, 100, 160, 100, 5, ""),
    ("D1", "2025-03-01", 50, 120, 80, 125, 82, "", ""),
    ("D1", "2025-03-10", 50, 120, 80, 125, 82, "", ""),
    ("O1", "2025-04-01", 200, "", "", "", "", "", ""),
    ("O1", "2025-04-20", 200, "", "", "", "", "", ""),
    ("N1", "2025-06-01", 35, "", "", "", "", "", ""),
    ("N1", "2025-06-25", 35, "", "", "", "", "", ""),
    ("R2", "2025-01-10", 35, "", "", "", "", "", ""),
    ("R2", "2025-01-20", 35, "", "", "", "", "", ""),
]
PCL5_MET = [2, 0, 0, 0, 0, 2, 1, 2, 2, 0, 0, 0, 0, 0, 2, 2, 1, 1, 0, 0]  # B 2/1, C 3/1, D 4/2, E 6/2: 15
PCL5_NOT_MET = [2, 0, 0, 0, 0, 2, 0, 2, 1, 0, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0]  # B 2/1, C 2/1, D 3/1, E 4/2: 11
# patient, instrument, date, total, items
SCORES = [
    ("S1", "PHQ-9", "2025-04-25", 16, [2, 2, 2, 2, 2, 2, 2, 2, 0]),
    ("S1", "PHQ-9", "2025-06-25", 9, [1, 1, 1, 1, 1, 1, 1, 1, 1]),
    ("D1", "GAD-7", "2025-02-25", 8, None),
    ("D1", "GAD-7", "2025-06-10", 13, None),
    ("D1", "PCL-5", "2025-02-25", 15, PCL5_MET),
    ("D1", "PCL-5", "2025-06-10", 11, PCL5_NOT_MET),
    ("O1", "PHQ-9", "2025-03-28", 14, None),
    ("O1", "PHQ-9", "2025-04-15", 12, None),
    ("N1", "PHQ-9", "2025-06-10", 11, None),
    ("R2", "PHQ-9", "2025-01-05", 20, [3, 3, 3, 3, 2, 2, 1, 1, 2]),
    ("R2", "PHQ-9", "2025-06-20", 4, [1, 1, 1, 1, 0, 0, 0, 0, 0]),
    ("R1", "PHQ-9", "2025-06-01", 6, [1, 1, 1, 1, 1, 1, 0, 0, 0]),
]


def _csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    lines = [",".join(header)] + [",".join("" if v is None else str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def build_cohort(folder: Path) -> Path:
    patients = _csv(
        folder / "patients.csv",
        ["patient_id", "clinic", "provider", "route"],
        [list(p) for p in PATIENTS],
    )
    sessions = _csv(
        folder / "sessions.csv",
        [
            "patient_id",
            "session_date",
            "dose_mg",
            "bp_sys_pre",
            "bp_dia_pre",
            "bp_sys_post",
            "bp_dia_post",
            "dissociation",
            "side_effects",
        ],
        [list(s) for s in SESSIONS],
    )
    scores = _csv(
        folder / "scores.csv",
        ["patient_id", "instrument", "assessed_on", "total", *ITEMS],
        [[p, i, d, t, *((items or []) + [None] * (20 - len(items or [])))] for p, i, d, t, items in SCORES],
    )
    path = folder / "kap.duckdb"
    ingest.load_files([patients, sessions, scores], path, today=TODAY)
    return path


@pytest.fixture(scope="module")
def cohort_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cohort(tmp_path_factory.mktemp("patient"))


def caseload(path: Path, filt: cohort.CohortFilter | None = None, today: dt.date = TODAY) -> pd.DataFrame:
    with db.reader(path) as con:
        return pt.caseload(con, filt, today)


def view(path: Path, patient_id: str, today: dt.date = TODAY) -> pt.PatientView:
    with db.reader(path) as con:
        v = pt.patient_view(con, patient_id, today)
    assert v is not None
    return v


def query_one(path: Path, sql: str) -> object:
    with db.reader(path) as con:
        result = con.execute(sql).fetchone()
    assert result is not None
    return result[0]


def row(frame: pd.DataFrame, patient_id: str) -> dict[str, object]:
    return frame[frame["patient_id"] == patient_id].iloc[0].to_dict()


# --- caseload -----------------------------------------------------------------------------------------


def test_caseload_ranks_safety_first_then_deterioration_overdue_no_baseline_then_most_recent(cohort_db):
    frame = caseload(cohort_db)
    assert frame["patient_id"].tolist() == ["S1", "D1", "O1", "N1", "R2", "R1"]
    assert frame["priority"].tolist() == [1, 2, 3, 4, 5, 5]


def test_caseload_flags_each_fixture_patient_exactly(cohort_db):
    frame = caseload(cohort_db).set_index("patient_id")
    flags = frame[list(pt.FLAGS)].astype(bool)
    assert flags.loc["S1"].tolist() == [True, False, False, False]
    assert flags.loc["D1"].tolist() == [False, True, False, False]
    assert flags.loc["O1"].tolist() == [False, False, True, False]
    assert flags.loc["N1"].tolist() == [False, False, False, True]
    assert not flags.loc["R1"].any() and not flags.loc["R2"].any()
    assert frame.loc["S1", "flags"] == "⚠ Safety: PHQ-9 item 9 = 1"
    assert frame.loc["D1", "flags"] == "▲ Reliable deterioration: GAD-7"
    assert frame.loc["O1", "flags"] == "Overdue: 76 days since last score"
    assert frame.loc["N1", "flags"] == "No baseline"


def test_safety_flag_uses_only_the_latest_phq9(cohort_db):
    # R2 answered item 9 = 2 at baseline but 0 at the latest PHQ-9: not flagged.
    assert not row(caseload(cohort_db), "R2")["flag_safety"]


def test_caseload_current_phase_days_in_phase_and_sessions(cohort_db):
    frame = caseload(cohort_db).set_index("patient_id")
    got = {pid: (r["phase"], r["days_in_phase"], r["n_sessions"]) for pid, r in frame.iterrows()}
    assert got == {
        "S1": ("dosing", 60, 3),  # last session 10 days ago; first on 05-01
        "D1": ("follow-up", 28, 2),  # 112 days after the last session: 28 days past the 84-day window
        "O1": ("integration", 71, 2),  # 71 days after the last session
        "N1": ("dosing", 29, 2),
        "R2": ("follow-up", 77, 2),
        "R1": ("preparation", 29, 0),  # since the first questionnaire
    }


def test_caseload_latest_scores_and_change_from_baseline(cohort_db):
    frame = caseload(cohort_db).set_index("patient_id")
    assert (frame.loc["S1", "phq9"], frame.loc["S1", "phq9_change"]) == (9, -7)
    assert (frame.loc["D1", "gad7"], frame.loc["D1", "gad7_change"]) == (13, 5)
    assert (frame.loc["D1", "pcl5"], frame.loc["D1", "pcl5_change"]) == (11, -4)
    assert frame.loc["N1", "phq9"] == 11 and pd.isna(frame.loc["N1", "phq9_change"])
    assert frame.loc["R1", "phq9"] == 6 and pd.isna(frame.loc["R1", "phq9_change"])  # baseline only
    assert pd.isna(frame.loc["S1", "gad7"])
    assert frame.loc["O1", "days_since_score"] == 76


def test_caseload_filters_by_provider_and_by_clinic(cohort_db):
    by_provider = caseload(cohort_db, cohort.CohortFilter(providers=("PR1",)))
    assert by_provider["patient_id"].tolist() == ["S1", "D1", "R1"]
    by_clinic = caseload(cohort_db, cohort.CohortFilter(clinics=("South",)))
    assert by_clinic["patient_id"].tolist() == ["O1", "N1"]


def test_patient_ids_of_a_filter_are_sorted(cohort_db):
    with db.reader(cohort_db) as con:
        assert pt.patient_ids(con) == ["D1", "N1", "O1", "R1", "R2", "S1"]
        assert pt.patient_ids(con, cohort.CohortFilter(clinics=("South",))) == ["N1", "O1"]


@pytest.mark.parametrize(
    ("today", "phase", "days"),
    [
        (dt.date(2025, 7, 4), "dosing", 64),  # last session 14 days ago: dosing still under way
        (dt.date(2025, 7, 5), "integration", 15),  # 15 days after the last session
        (dt.date(2025, 9, 12), "integration", 84),  # the last day of the 84-day window
        (dt.date(2025, 9, 13), "follow-up", 1),
    ],
)
def test_current_phase_follows_the_last_session_and_the_integration_window(cohort_db, today, phase, days):
    r = row(caseload(cohort_db, today=today), "S1")
    assert (r["phase"], r["days_in_phase"]) == (phase, days)


def test_overdue_and_blood_pressure_thresholds_come_from_settings(tmp_path):
    path = build_cohort(tmp_path)
    with db.session(path) as con:
        con.execute("UPDATE settings SET value = 80 WHERE key = 'overdue_days'")
        con.execute("UPDATE settings SET value = 170 WHERE key = 'bp_sys_threshold'")
    assert not row(caseload(path), "O1")["flag_overdue"]  # 76 days ≤ 80
    assert view(path, "S1").sessions["bp_high_post"].tolist() == [False, True, False]  # only 140/101 now


def test_response_threshold_from_the_instruments_table_changes_the_definitions(tmp_path):
    path = build_cohort(tmp_path)
    with db.session(path) as con:
        con.execute("UPDATE instruments SET response_pct = 40 WHERE code = 'PHQ-9'")
        db.bump_data_version(con)  # what every writer does: stored outcomes follow
    v = view(path, "S1")
    assert v.latest_outcome("PHQ-9")["response"] is True  # 43.75% ≥ 40%
    assert v.threshold("PHQ-9", "response_pct") == 40
    assert "PHQ-9 ≥ 40% reduction from baseline" in pt.help_texts(v.settings)["response"]


# --- patient view -------------------------------------------------------------------------------------


def test_unknown_patient_has_no_view(cohort_db):
    with db.reader(cohort_db) as con:
        assert pt.patient_view(con, "NOPE", TODAY) is None


def test_patient_view_summary_numbers_and_badges(cohort_db):
    v = view(cohort_db, "S1")
    assert v.status["phase"] == "dosing" and v.status["n_sessions"] == 3
    summary = pt.scale_summary(v).iloc[0].to_dict()
    assert summary["instrument"] == "PHQ-9"
    assert (summary["baseline"], summary["latest"], summary["change"]) == (16, 9, -7)
    assert summary["pct_change"] == pytest.approx(-43.75)
    assert summary["band"] == "mild"
    assert (summary["baseline_on"], summary["latest_on"]) == (dt.date(2025, 4, 25), dt.date(2025, 6, 25))
    flags = [summary[k] for k in ("response", "remission", "reliable_improvement", "reliable_deterioration")]
    assert flags == [False, False, True, False]
    assert (summary["recovery"], summary["reliable_recovery"]) == (True, True)


def test_patient_view_without_baseline_has_no_change(cohort_db):
    summary = pt.scale_summary(view(cohort_db, "N1")).iloc[0].to_dict()
    assert summary["latest"] == 11 and summary["baseline"] is None
    assert summary["change"] is None and summary["response"] is None


def test_assessment_table_shows_phase_band_and_safety_answer_newest_first(cohort_db):
    table = pt.assessment_table(view(cohort_db, "S1"))
    assert table["assessed_on"].tolist() == [dt.date(2025, 6, 25), dt.date(2025, 4, 25)]
    # 06-25 is after the last session so far (06-20): an integration score by DESIGN §4, although the
    # patient is still "dosing" today (last session within 14 days).
    assert table["phase"].tolist() == ["integration", "preparation"]
    assert table["band"].tolist() == ["mild", "moderately severe"]
    assert table["safety_answer"].tolist() == ["item 9 = 1", "item 9 = 0"]
    assert table["safety"].tolist() == [True, False]


def test_pcl5_without_bands_reports_the_probable_ptsd_threshold(cohort_db):
    table = pt.assessment_table(view(cohort_db, "D1"))
    pcl5 = table[table["instrument"] == "PCL-5"]
    assert pcl5["band"].tolist() == ["below threshold", "below threshold"]  # 11 and 15 < 33
    assert pcl5["safety_answer"].isna().all()


def test_session_log_highlights_blood_pressure_over_160_100(cohort_db):
    log = pt.session_log(view(cohort_db, "S1"))
    assert log["bp_pre"].tolist() == ["150/95", "130/85", "160/100"]
    assert log["bp_post"].tolist() == ["165/98", "140/101", "160/100"]
    assert log["bp_high_pre"].tolist() == [False, False, False]  # 160/100 is not over 160/100
    assert log["bp_high_post"].tolist() == [True, True, False]
    assert log["dose"].tolist() == ["35 mg", "40 mg", "40 mg"]
    assert log["route"].tolist() == ["IV", "IV", "IV"]  # the patient's route when a session has none
    assert log["side_effects"].tolist() == ["nausea, headache", "", ""]
    assert log["session_no"].tolist() == [1, 2, 3]


def test_pcl5_clusters_and_the_provisional_dsm5_rule(cohort_db):
    clusters = view(cohort_db, "D1").pcl5()
    got = clusters[[f"cluster_{c}" for c in "BCDE"] + [f"endorsed_{c}" for c in "BCDE"]].astype(int)
    assert got.values.tolist() == [[2, 3, 4, 6, 1, 1, 2, 2], [2, 2, 3, 4, 1, 1, 1, 2]]
    assert clusters["dsm5_met"].tolist() == [True, False]
    assert clusters["total"].tolist() == [15, 11]


def test_item_matrix_has_one_row_per_item_and_one_column_per_questionnaire(cohort_db):
    matrix = pt.item_matrix(view(cohort_db, "S1"), "PHQ-9")
    assert matrix.shape == (9, 2)
    assert matrix.loc[9].tolist() == [0, 1]
    assert pt.item_matrix(view(cohort_db, "O1"), "PHQ-9").empty  # totals only


def test_phase_spans_follow_the_sessions_and_the_window(cohort_db):
    spans = view(cohort_db, "D1").phase_spans(dt.date(2025, 7, 1))
    assert spans == [
        ("preparation", dt.date(2025, 2, 25), dt.date(2025, 3, 1)),
        ("dosing", dt.date(2025, 3, 1), dt.date(2025, 3, 10)),
        ("integration", dt.date(2025, 3, 10), dt.date(2025, 6, 2)),
        ("follow-up", dt.date(2025, 6, 2), dt.date(2025, 7, 1)),
    ]
    assert view(cohort_db, "R1").phase_spans(TODAY) == [("preparation", dt.date(2025, 6, 1), TODAY)]


def test_every_help_text_states_the_rule_in_force(cohort_db):
    texts = pt.help_texts(view(cohort_db, "S1").settings)
    assert "PHQ-9 6 points, GAD-7 4 points, PCL-5 10 points" in texts["reliable_improvement"]
    assert "Jacobson" in texts["reliable_improvement"]  # the source
    assert "item 9" in texts["safety"] and "Kroenke 2001" in texts["safety"]
    assert "more than 28 days" in texts["overdue"]
    assert "160" in texts["bp"] and "100" in texts["bp"]
    assert "84 days" in texts["phase"] and "14 days" in texts["phase"]
    assert "NHS Talking Therapies" in texts["recovery"]
    assert all(text.strip() for text in texts.values())


# --- charts -------------------------------------------------------------------------------------------


def test_trend_chart_draws_targets_relative_to_this_baseline(cohort_db):
    fig = charts.score_trend(view(cohort_db, "S1"), "PHQ-9")
    lines = {round(s.y0, 2) for s in fig.layout.shapes if s.type == "line"}
    assert {10, 5, 8} <= lines  # caseness 10, remission below 5, response at 16 × 50% = 8
    names = [t.name for t in fig.data]
    assert names == ["PHQ-9", "item 9 > 0 (safety)", "baseline", "dosing session"]
    sessions = fig.data[3]
    assert len(sessions.x) == 3 and "35 mg" in str(sessions.customdata[0])
    assert list(fig.data[1].y) == [9]  # the safety answer is ringed at the latest score
    assert list(fig.data[2].y) == [16]


def test_trend_chart_shades_every_phase(cohort_db):
    fig = charts.score_trend(view(cohort_db, "D1"), "GAD-7")
    labels = {a.text for a in fig.layout.annotations}
    assert {"integration", "follow-up", "minimal", "mild", "moderate", "severe"} <= labels
    rects = [s for s in fig.layout.shapes if s.type == "rect" and s.xref == "x"]
    assert len(rects) >= 4


def test_item_heatmap_sets_the_safety_item_apart(cohort_db):
    fig = charts.item_heatmap(view(cohort_db, "S1"), "PHQ-9")
    assert fig is not None and len(fig.data) == 2
    main, safety = fig.data
    assert pd.isna(main.z[8]).all() and list(safety.z[8]) == [0, 1]
    assert charts.item_heatmap(view(cohort_db, "O1"), "PHQ-9") is None


# --- safety, acknowledgements, discharges, undefined outcomes, integer targets -----------------------------
#
# A second hand-made cohort (today = 2025-06-30). PHQ-9 items are 9 answers; item 9 is the safety item.
# - A1: item 9 = 2 on 05-01 (total 12), then a total only (10) on 06-01: item 9 unknown, the flag stands.
# - A2: item 9 = 1 on 06-10 (total 19).
# - A3: item 9 = 2 on 06-15 (total 14).
# - A4: item 9 = 3 on 04-01, 0 on 05-01, then 8 items answered and item 9 left empty on 06-20 (total 9,
#   prorated): the 0 cleared the flag and the unanswered item does not raise it again.
# - G1: sessions 03-01, 03-10; GAD-7 0 (02-25) → 4 (06-10): reliable deterioration (+4 ≥ RC 4) from a
#   baseline of 0, below the GAD-7 clinical range (8): remission, recovery and response are undefined.
# - G2: session 03-01; GAD-7 5 (02-20) → 10 (05-01): reliable deterioration (+5).

SAFETY_PATIENTS = [(p, "East", "PR9", "IV") for p in ("A1", "A2", "A3", "A4", "G1", "G2")]
SAFETY_SESSIONS = [("G1", "2025-03-01"), ("G1", "2025-03-10"), ("G2", "2025-03-01")]
SAFETY_SCORES = [
    ("A1", "PHQ-9", "2025-05-01", 12, [2, 2, 1, 1, 1, 1, 1, 1, 2]),
    ("A1", "PHQ-9", "2025-06-01", 10, None),
    ("A2", "PHQ-9", "2025-06-10", 19, [3, 3, 3, 3, 2, 2, 1, 1, 1]),
    ("A3", "PHQ-9", "2025-06-15", 14, [2, 2, 2, 2, 2, 1, 1, 0, 2]),
    ("A4", "PHQ-9", "2025-04-01", 20, [3, 3, 3, 2, 2, 2, 1, 1, 3]),
    ("A4", "PHQ-9", "2025-05-01", 8, [1, 1, 1, 1, 1, 1, 1, 1, 0]),
    ("A4", "PHQ-9", "2025-06-20", 8, [1, 1, 1, 1, 1, 1, 1, 1, 0]),  # made prorated below
    ("G1", "GAD-7", "2025-02-25", 0, None),
    ("G1", "GAD-7", "2025-06-10", 4, None),
    ("G2", "GAD-7", "2025-02-20", 5, None),
    ("G2", "GAD-7", "2025-05-01", 10, None),
]


def build_safety_cohort(folder: Path) -> Path:
    patients = _csv(folder / "patients.csv", ["patient_id", "clinic", "provider", "route"], SAFETY_PATIENTS)
    sessions = _csv(
        folder / "sessions.csv",
        ["patient_id", "session_date", "dose_mg"],
        [[p, d, 35] for p, d in SAFETY_SESSIONS],
    )
    scores = _csv(
        folder / "scores.csv",
        ["patient_id", "instrument", "assessed_on", "total", *ITEMS[:9]],
        [[p, i, d, t, *(items or [None] * 9)] for p, i, d, t, items in SAFETY_SCORES],
    )
    path = folder / "kap.duckdb"
    ingest.load_files([patients, sessions, scores], path, today=TODAY)
    with db.session(path) as con:  # A4 on 06-20: item 9 left empty, the total prorated from 8 answers
        con.execute(
            "UPDATE scores SET items = [1, 1, 1, 1, 1, 1, 1, 1, NULL]::SMALLINT[], total = 9, "
            "prorated = true WHERE patient_id = 'A4' AND assessed_on = DATE '2025-06-20'"
        )
        db.bump_data_version(con)
    return path


@pytest.fixture(scope="module")
def safety_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_safety_cohort(tmp_path_factory.mktemp("safety"))


def _copy(src: Path, folder: Path) -> Path:
    out = folder / "copy.duckdb"
    shutil.copyfile(src, out)
    return out


def _load_scores(path: Path, folder: Path, rows: list[tuple[str, str, str, int, list[int] | None]]) -> None:
    scores = _csv(
        folder / f"more_{len(list(folder.iterdir()))}.csv",
        ["patient_id", "instrument", "assessed_on", "total", *ITEMS[:9]],
        [[p, i, d, t, *(items or [None] * 9)] for p, i, d, t, items in rows],
    )
    ingest.load_files([scores], path, today=TODAY)


def test_safety_flag_is_not_cleared_by_a_phq9_without_item_9(safety_db):
    frame = caseload(safety_db).set_index("patient_id")
    # A1: item 9 = 2 on 05-01, then a total only on 06-01 (unknown): still flagged, from the 05-01 answer.
    assert bool(frame.loc["A1", "flag_safety"]) is True
    assert (frame.loc["A1", "safety_item9"], frame.loc["A1", "safety_on"]) == (2, pd.Timestamp("2025-05-01"))
    assert frame.loc["A1", "flags"] == "⚠ Safety: PHQ-9 item 9 = 2"
    # A4: 3, then 0 (clears), then item 9 left empty (unknown: does not raise it again).
    assert bool(frame.loc["A4", "flag_safety"]) is False and pd.isna(frame.loc["A4", "safety_item9"])


def test_safety_group_ranks_by_item9_answer_then_most_recent(safety_db):
    frame = caseload(safety_db)
    # A3 (2, 06-15) and A1 (2, 05-01) before A2 (1, 06-10, assessed more recently than A1).
    assert frame["patient_id"].tolist() == ["A3", "A1", "A2", "G1", "G2", "A4"]
    assert frame["priority"].tolist() == [1, 1, 1, 2, 2, 5]


def test_assessments_show_an_unanswered_item_9_as_unknown_and_prorated_totals(safety_db):
    table = pt.assessment_table(view(safety_db, "A4"))
    assert table["total"].tolist() == [9, 8, 20]
    assert table["prorated"].tolist() == [True, False, False]
    assert table["safety_answer"].tolist() == ["item 9 not answered", "item 9 = 0", "item 9 = 3"]
    assert table["safety"].tolist() == [None, False, True]  # unknown, not false
    a1 = pt.assessment_table(view(safety_db, "A1"))
    assert a1["safety_answer"].tolist() == ["item 9 not answered", "item 9 = 2"]
    assert a1["safety"].tolist() == [None, True]
    summary = pt.scale_summary(view(safety_db, "A4")).iloc[0]
    assert (summary["latest"], bool(summary["latest_prorated"])) == (9, True)


def test_outcomes_below_the_clinical_range_or_without_baseline_are_not_defined(safety_db, cohort_db):
    # G1 GAD-7 0 → 4: reliable deterioration; the baseline 0 is below the clinical range (8).
    states = pt.outcome_states(view(safety_db, "G1").latest_outcome("GAD-7"))
    assert states == {
        "response": pt.BELOW_RANGE,
        "remission": pt.BELOW_RANGE,  # 4 < 5 would have been a "remission" beside the deterioration
        "reliable_improvement": pt.NOT_MET,
        "reliable_deterioration": pt.MET,
        "recovery": pt.BELOW_RANGE,
        "reliable_recovery": pt.BELOW_RANGE,
    }
    assert set(pt.outcome_states(view(cohort_db, "N1").latest_outcome("PHQ-9")).values()) == {pt.NO_BASELINE}
    assert set(pt.outcome_states(view(cohort_db, "R1").latest_outcome("PHQ-9")).values()) == {
        pt.NO_LATER_SCORE
    }


@pytest.mark.parametrize(
    ("baseline", "pct", "target"),
    [(19, 50, 9), (16, 50, 8), (37, 30, 25), (33, 30, 23), (1, 50, 0), (0, 50, None), (None, 50, None)],
)
def test_response_target_is_the_highest_integer_score_that_is_a_response(baseline, pct, target):
    # (b - e) * 100 >= pct * b: 19 → 9 ((19 - 9) * 100 = 1000 >= 950; 10 would give 900); 37 → 25 at 30%.
    assert pt.response_target(baseline, pct) == target


def test_trend_chart_labels_the_integer_response_target(safety_db):
    fig = charts.score_trend(view(safety_db, "A2"), "PHQ-9")  # baseline 19
    labels = [a.text for a in fig.layout.annotations if str(a.text).startswith("response")]
    assert labels == ["response ≤ 9 (−50% of baseline 19)"]
    assert 9 in {s.y0 for s in fig.layout.shapes if s.type == "line"}


def test_acknowledged_safety_flag_ranks_after_unacknowledged_and_returns_with_a_newer_answer(
    safety_db, tmp_path
):
    path = _copy(safety_db, tmp_path)
    ack = records.acknowledge(path, "A3", "safety", "AB-12", "risk assessed", today=TODAY, now=NOW)
    assert (ack.flag_on, ack.acknowledged_by, ack.note) == (dt.date(2025, 6, 15), "AB-12", "risk assessed")
    frame = caseload(path)
    assert frame["patient_id"].tolist()[:3] == ["A1", "A2", "A3"]  # still flagged, after the unacknowledged
    a3 = row(frame, "A3")
    assert a3["flag_safety"] and a3["acknowledged"] and a3["acknowledged_by"] == "AB-12"
    assert a3["flags"] == "⚠ Safety: PHQ-9 item 9 = 2 (acknowledged by AB-12 2025-06-30)"
    # A later total without item answers changes nothing.
    _load_scores(path, tmp_path, [("A3", "PHQ-9", "2025-06-25", 13, None)])
    assert caseload(path)["patient_id"].tolist()[:3] == ["A1", "A2", "A3"]
    # A later item 9 = 1 raises the flag again: no longer acknowledged, ranked by its answer and date.
    _load_scores(path, tmp_path, [("A3", "PHQ-9", "2025-06-28", 12, [2, 2, 2, 1, 1, 1, 1, 1, 1])])
    frame = caseload(path)
    assert frame["patient_id"].tolist()[:3] == ["A1", "A3", "A2"]
    assert not row(frame, "A3")["acknowledged"] and row(frame, "A3")["safety_item9"] == 1


def test_acknowledged_deterioration_ranks_after_the_other_deteriorations(safety_db, tmp_path):
    path = _copy(safety_db, tmp_path)
    records.acknowledge(path, "G1", "deterioration", "cd", today=TODAY, now=NOW)
    frame = caseload(path)
    assert frame["patient_id"].tolist() == ["A3", "A1", "A2", "G2", "G1", "A4"]
    assert row(frame, "G1")["flags"] == "▲ Reliable deterioration: GAD-7 (acknowledged by cd 2025-06-30)"


def test_acknowledging_needs_a_standing_flag_and_a_staff_code(safety_db, tmp_path):
    path = _copy(safety_db, tmp_path)
    with pytest.raises(records.CaseloadError, match="no safety flag"):
        records.acknowledge(path, "A4", "safety", "AB", today=TODAY)
    with pytest.raises(records.CaseloadError, match="staff code"):
        records.acknowledge(path, "A1", "safety", "Dr Jane Smith", today=TODAY)
    with pytest.raises(records.CaseloadError, match="no patient"):
        records.acknowledge(path, "ZZ", "safety", "AB", today=TODAY)
    assert query_one(path, "SELECT count(*) FROM acknowledgements") == 0


def test_a_discharged_patient_leaves_the_caseload_stays_in_outcomes_and_can_be_readmitted(
    safety_db, tmp_path
):
    path = _copy(safety_db, tmp_path)
    outcomes_before = query_one(path, "SELECT count(*) FROM outcomes WHERE patient_id = 'A3'")
    records.discharge(path, "A3", "AB", "moved away", now=NOW)
    frame = caseload(path)
    assert frame["patient_id"].tolist() == ["A1", "A2", "G1", "G2", "A4", "A3"]  # discharged last
    a3 = row(frame, "A3")
    assert a3["discharged"] and a3["discharged_by"] == "AB" and a3["discharge_note"] == "moved away"
    assert a3["flags"] == "⚠ Safety: PHQ-9 item 9 = 2 · Discharged 2025-06-30"
    assert query_one(path, "SELECT count(*) FROM outcomes WHERE patient_id = 'A3'") == outcomes_before > 0
    assert records.readmit(path, "A3") is True
    assert caseload(path)["patient_id"].tolist() == ["A3", "A1", "A2", "G1", "G2", "A4"]
    assert records.readmit(path, "A3") is False
