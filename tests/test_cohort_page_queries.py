"""The clinic outcomes page's numbers (``cohort.report`` and its display frames), checked by hand.

Seven patients; sessions start 2025-03-01 for everyone who doses (day 0; week w = days 7w-6 … 7w).
PHQ-9 totals (item 9 in brackets where the questionnaire has item answers):

    patient clinic prov route sessions  baseline     dosing        integration   follow-up
    A       North  PR1  IV    4         20 [1]       14 [0] d14    6 [0] d61
    B       North  PR2  IM    3         18 [0]       4 [0]  d14    10 [1] d61
    C       South  PR1  IV    3         12 [0]       10 [0] d14    -             drops out after dosing
    D       North  PR2  IV    0         15 [2]       -             -             never dosed: not in ITT
    E       North  PR1  IV    3         -            12 d14        -             no baseline: in no outcome
    F       South  PR3  SL    4         16 (total)   12 d9         9 d50         5 d122 (totals only)
    G       South  PR3  IV    1         22 [3]       -             -             dosed once, then nothing

C also has PCL-5 50 at baseline and 30 at dosing. The last date in the data is 2025-07-01 (day 122).
PHQ-9 thresholds: response ≥ 50% reduction, remission < 5, reliable change 6, clinical range ≥ 10.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pandas as pd
import pytest

from kapdata import benchmarks, cohort, db
from tests.conftest import PATIENTS_HEADER, csv_lines, load, write_text

T975_DF3 = 3.182446305284263
T975_DF4 = 2.7764451051977987
T975_DF5 = 2.5705818356363146

PATIENTS = [
    ("A", "North", "PR1", "25-34", "female", "MDD", "IV"),
    ("B", "North", "PR2", "35-44", "male", "MDD", "IM"),
    ("C", "South", "PR1", "45-54", "female", "PTSD", "IV"),
    ("D", "North", "PR2", "25-34", "male", "MDD", "IV"),
    ("E", "North", "PR1", "25-34", "other", "GAD", "IV"),
    ("F", "South", "PR3", "55-64", "female", "MDD", "SL"),
    ("G", "South", "PR3", "18-24", "male", "MDD", "IV"),
]
SESSIONS_HEADER = (
    "patient_id,session_date,route,dose_mg,bp_sys_pre,bp_dia_pre,bp_sys_post,bp_dia_post,side_effects"
)
NORMAL = (120, 80, 125, 82)
SESSIONS = [
    ("A", "2025-03-01", *NORMAL, "nausea;headache"),
    ("A", "2025-03-08", 120, 80, 170, 90, "nausea"),  # systolic above 160 after the dose
    ("A", "2025-03-15", *NORMAL, ""),
    ("A", "2025-03-29", *NORMAL, ""),
    ("B", "2025-03-01", 130, 105, 128, 90, "dizziness"),  # diastolic above 100 before the dose
    ("B", "2025-03-08", *NORMAL, ""),
    ("B", "2025-03-29", *NORMAL, ""),
    ("C", "2025-03-01", *NORMAL, ""),
    ("C", "2025-03-08", *NORMAL, ""),
    ("C", "2025-03-29", *NORMAL, ""),
    ("E", "2025-03-01", None, None, None, None, ""),  # no blood pressure recorded
    ("E", "2025-03-08", *NORMAL, ""),
    ("E", "2025-03-29", *NORMAL, ""),
    ("F", "2025-03-01", *NORMAL, ""),
    ("F", "2025-03-05", 160, 100, 150, 95, "nausea"),  # exactly at the threshold: not above it
    ("F", "2025-03-12", *NORMAL, ""),
    ("F", "2025-03-19", *NORMAL, ""),
    ("G", "2025-03-01", *NORMAL, ""),
]
SCORES_HEADER = "patient_id,instrument,assessed_on,total," + ",".join(f"item_{i}" for i in range(1, 21))


def phq(patient: str, day: str, total: int, item9: int | None) -> tuple[object, ...]:
    """A PHQ-9 row; with ``item9`` the nine items (items 1-8 filled with 3s up to the total)."""
    if item9 is None:
        return (patient, "PHQ-9", day, total, *[None] * 20)
    rest = total - item9
    items = [min(3, max(0, rest - 3 * i)) for i in range(8)] + [item9]
    assert sum(items) == total
    return (patient, "PHQ-9", day, total, *items, *[None] * 11)


SCORES = [
    phq("A", "2025-02-20", 20, 1),
    phq("A", "2025-03-15", 14, 0),
    phq("A", "2025-05-01", 6, 0),
    phq("B", "2025-02-20", 18, 0),
    phq("B", "2025-03-15", 4, 0),
    phq("B", "2025-05-01", 10, 1),
    phq("C", "2025-02-20", 12, 0),
    phq("C", "2025-03-15", 10, 0),
    ("C", "PCL-5", "2025-02-20", 50, *[None] * 20),
    ("C", "PCL-5", "2025-03-15", 30, *[None] * 20),
    phq("D", "2025-02-20", 15, 2),
    phq("E", "2025-03-15", 12, None),
    phq("F", "2025-02-25", 16, None),
    phq("F", "2025-03-10", 12, None),
    phq("F", "2025-04-20", 9, None),
    phq("F", "2025-07-01", 5, None),
    phq("G", "2025-02-25", 22, 3),
]


@pytest.fixture(scope="module")
def clinic_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clinic")
    path = folder / "kap.duckdb"
    load(
        path,
        write_text(folder / "patients.csv", csv_lines(PATIENTS_HEADER, PATIENTS)),
        write_text(
            folder / "sessions.csv",
            csv_lines(SESSIONS_HEADER, [(p, d, "IV", 35, *r) for p, d, *r in SESSIONS]),
        ),
        write_text(folder / "scores.csv", csv_lines(SCORES_HEADER, SCORES)),
    )
    return path


def report(path: Path, flt: cohort.CohortFilter | None = None, **kw: object) -> cohort.CohortReport:
    with db.reader(path) as con:
        return cohort.report(con, flt, **kw)


@pytest.fixture(scope="module")
def rep(clinic_db: Path) -> cohort.CohortReport:
    return report(clinic_db, breakdown="clinic", weekly=True)


def row(frame, **where):
    part = frame
    for key, value in where.items():
        part = part[part[key] == value]
    assert len(part) == 1, f"expected one row for {where}, got {len(part)}"
    return part.iloc[0]


def kn(r, name: str) -> tuple[int, int]:
    return int(r[f"{name}_k"]), int(r[f"{name}_n"])


def t_bounds(values: list[float], t: float) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean - t * sd / math.sqrt(n), mean + t * sd / math.sqrt(n)


# --- headline counts and retention ----------------------------------------------------------------------


def test_tiles_count_patients_who_reached_each_stage(rep):
    # dosed: A B C E F G; four or more sessions: A F; integration scores: A B F; follow-up: F
    assert rep.tiles() == {
        "enrolled": 7,
        "first_dose": 6,
        "dosing_complete": 2,
        "integration": 3,
        "follow_up": 1,
    }


def test_funnel_keeps_only_patients_who_reached_every_earlier_stage(rep):
    f = rep.funnel.set_index("stage")
    assert list(f.index) == [
        "enrolled",
        "baseline",
        "first_dose",
        "dosing_complete",
        "integration",
        "follow_up",
    ]
    # E (no baseline) leaves at baseline, D (never dosed) at first dose, B C G (< 4 sessions) at dosing
    assert list(f["retained"]) == [7, 6, 5, 2, 2, 1]
    assert list(f["lost"]) == [0, 1, 1, 3, 0, 1]
    assert list(f["reached"]) == [7, 6, 6, 2, 3, 1]
    assert f.loc["first_dose", "pct_enrolled"] == pytest.approx(500 / 7)


def test_funnel_counts_as_lost_only_patients_due_for_the_stage(tmp_path: Path) -> None:
    # The data's last day is 2025-03-20 (P's questionnaire).
    #   P: 2 sessions, the last 12 days before: dosing under way, not yet due for "dosing complete".
    #   Q: 4 sessions, the last 47 days before, an integration score: not yet due for follow-up (84 days).
    #   R: baseline 5 days before, no dose yet: not yet due for a first dose (baseline window 90 days).
    #   S: baseline 170 days before, never dosed: lost at first dose.
    #   T: 2 sessions, the last 67 days before: lost at "dosing complete".
    # Before, every patient who had not reached a stage was "lost": [0, 0, 2, 2, 0, 1].
    from tests.conftest import SCORES_HEADER, sessions_rows
    from tests.conftest import SESSIONS_HEADER as HEADER

    ids = "PQRST"
    patients = [(p, "North", "PR1", "25-34", "female", "MDD", "IV") for p in ids]
    scores = [
        ("P", "PHQ-9", "2025-02-20", 20),
        ("P", "PHQ-9", "2025-03-20", 12),
        ("Q", "PHQ-9", "2025-01-10", 18),
        ("Q", "PHQ-9", "2025-02-20", 9),
        ("R", "PHQ-9", "2025-03-15", 15),
        ("S", "PHQ-9", "2024-10-01", 15),
        ("T", "PHQ-9", "2025-01-01", 16),
    ]
    sessions = (
        sessions_rows("P", ["2025-03-01", "2025-03-08"])
        + sessions_rows("Q", ["2025-01-15", "2025-01-20", "2025-01-25", "2025-02-01"])
        + sessions_rows("T", ["2025-01-05", "2025-01-12"])
    )
    path = tmp_path / "kap.duckdb"
    load(
        path,
        write_text(tmp_path / "patients.csv", csv_lines(PATIENTS_HEADER, patients)),
        write_text(tmp_path / "sessions.csv", csv_lines(HEADER, sessions)),
        write_text(tmp_path / "scores.csv", csv_lines(SCORES_HEADER, scores)),
    )
    f = report(path).funnel
    assert list(f["retained"]) == [5, 5, 3, 1, 1, 0]
    assert list(f["not_yet_due"]) == [0, 0, 1, 1, 0, 1]
    assert list(f["lost"]) == [0, 0, 1, 1, 0, 0]
    assert f["label"].iloc[3] == "Dosing complete (≥ 4 sessions)"


def test_dosing_complete_follows_its_setting(clinic_db, tmp_path: Path) -> None:
    import shutil

    from kapdata import settings as ks

    copy = tmp_path / "kap.duckdb"
    shutil.copy(clinic_db, copy)
    ks.update(copy, general={"dosing_complete_sessions": 3})
    f = report(copy).funnel.set_index("stage")
    # A and F have 4 sessions; B, C and E have 3 (E has no baseline); G has 1.
    assert f.loc["dosing_complete", "reached"] == 5
    assert f.loc["dosing_complete", "label"] == "Dosing complete (≥ 3 sessions)"


def test_funnel_questionnaire_stages_follow_the_chosen_scales(clinic_db):
    pcl = report(clinic_db, scales=["PCL-5"]).funnel.set_index("stage")
    # only C has PCL-5 scores: a baseline, no integration
    assert list(pcl["reached"]) == [7, 1, 6, 2, 0, 0]
    assert list(pcl["retained"]) == [7, 1, 1, 0, 0, 0]


# --- the phase table ---------------------------------------------------------------------------------------


def test_completers_baseline_row_has_every_patient_with_a_baseline_and_a_t_interval(rep):
    table = cohort.phase_table(rep, "completers")
    base = row(table, instrument="PHQ-9", phase="baseline")
    values = [20, 18, 12, 15, 16, 22]  # A B C D F G
    assert base["n"] == 6 and base["phase_label"] == "Baseline"
    assert base["mean"] == pytest.approx(103 / 6)
    assert (base["mean_low"], base["mean_high"]) == pytest.approx(t_bounds(values, T975_DF5))
    assert (base["mean_low"], base["mean_high"]) == pytest.approx((13.3878, 20.9456), abs=1e-4)
    assert math.isnan(base["mean_change"]) and int(base["response_n"]) == 0


def test_completers_at_end_of_dosing(rep):
    r = row(cohort.phase_table(rep, "completers"), instrument="PHQ-9", phase="dosing")
    # A 20→14, B 18→4, C 12→10, F 16→12
    assert (r["n"], r["mean"], r["mean_change"]) == (4, pytest.approx(10.0), pytest.approx(-6.5))
    assert (r["mean_change_low"], r["mean_change_high"]) == pytest.approx(
        t_bounds([-6, -14, -2, -4], T975_DF3)
    )
    assert {name: kn(r, name) for name in cohort.RATE_NAMES} == {
        "response": (1, 4),  # B
        "remission": (1, 4),  # B: 4 < 5
        "reliable_improvement": (2, 4),  # A -6, B -14
        "reliable_deterioration": (0, 4),
        "recovery": (1, 4),  # B; A ends at 14, C at 10 (not below 10), F at 12
        "reliable_recovery": (1, 4),
    }
    # Wilson 1 of 4: 0.0456 to 0.6994
    assert (r["response"], r["response_low"], r["response_high"]) == pytest.approx(
        (0.25, 0.0456, 0.6994), abs=1e-4
    )


def test_completers_at_end_of_integration_and_follow_up(rep):
    table = cohort.phase_table(rep, "completers")
    integ = row(table, instrument="PHQ-9", phase="integration")  # A 6, B 10, F 9
    assert (integ["n"], integ["mean"]) == (3, pytest.approx(25 / 3))
    assert kn(integ, "response") == (1, 3)  # A 70%; B 44%, F 44%
    assert kn(integ, "reliable_improvement") == (3, 3)
    assert kn(integ, "recovery") == (2, 3)  # A and F end below 10
    follow = row(table, instrument="PHQ-9", phase="follow-up")  # F only: 16 → 5
    assert (follow["n"], kn(follow, "response"), kn(follow, "remission")) == (1, (1, 1), (0, 1))
    assert math.isnan(follow["mean_low"])  # no interval from one value


def test_itt_carries_last_observations_forward_for_every_dosed_patient_with_a_baseline(rep):
    table = cohort.phase_table(rep, "itt")
    base = row(table, instrument="PHQ-9", phase="baseline")
    assert (base["n"], base["mean"]) == (5, pytest.approx(17.6))  # A B C F G; not D (never dosed)
    integ = row(table, instrument="PHQ-9", phase="integration")
    # A 6, B 10, C 10 (from dosing), F 9, G 22 (baseline carried): changes -14 -8 -2 -7 0
    assert (integ["n"], integ["mean"], integ["mean_change"]) == (5, pytest.approx(11.4), pytest.approx(-6.2))
    assert (integ["mean_change_low"], integ["mean_change_high"]) == pytest.approx(
        t_bounds([-14, -8, -2, -7, 0], T975_DF4)
    )
    assert {name: kn(integ, name) for name in cohort.RATE_NAMES} == {
        "response": (1, 5),
        "remission": (0, 5),
        "reliable_improvement": (3, 5),
        "reliable_deterioration": (0, 5),
        "recovery": (2, 5),
        "reliable_recovery": (2, 5),
    }
    latest = row(table, instrument="PHQ-9", phase="latest")  # A 6, B 10, C 10, F 5, G 22
    assert kn(latest, "response") == (2, 5)
    # Wilson 2 of 5: 0.1176 to 0.7693
    assert (latest["response_low"], latest["response_high"]) == pytest.approx((0.1176, 0.7693), abs=1e-4)


def test_phase_table_agrees_with_the_summary_for_every_endpoint(clinic_db, rep):
    with db.reader(clinic_db) as con:
        summary = {(r["instrument"], r["phase"]): r for r in cohort.summary(con)}
    for population in cohort.POPULATIONS:
        table = cohort.phase_table(rep, population)
        for (instrument, phase), s in summary.items():
            r = row(table, instrument=instrument, phase=phase)
            assert int(r["n"]) == (s["completers"] if population == "completers" else s["itt"])
            for name in cohort.RATE_NAMES:
                expected = s["rates"][population][name]
                assert kn(r, name) == (expected["k"], expected["n"]), (population, instrument, phase, name)


def test_cells_under_min_cell_are_marked_not_hidden(clinic_db, rep):
    table = cohort.phase_table(rep, "completers")
    assert rep.min_cell == 11 and table["small"].all() and table["response_small"].all()
    with db.session(clinic_db) as con:
        con.execute("UPDATE settings SET value = 4 WHERE key = 'min_cell'")
    try:
        small = cohort.phase_table(report(clinic_db), "completers").set_index(["instrument", "phase"])
    finally:
        with db.session(clinic_db) as con:
            con.execute("UPDATE settings SET value = 11 WHERE key = 'min_cell'")
    assert not small.loc[("PHQ-9", "dosing"), "small"]  # n = 4
    assert small.loc[("PHQ-9", "integration"), "small"]  # n = 3
    assert small.loc[("PHQ-9", "integration"), "response"] == pytest.approx(1 / 3)  # still shown


def test_headline_gives_response_and_remission_at_the_chosen_endpoint(clinic_db):
    dosing = report(clinic_db, endpoint="dosing")
    head = cohort.headline(dosing, "itt").set_index("instrument")
    assert (head.loc["PHQ-9", "n"], kn(head.loc["PHQ-9"], "response")) == (5, (1, 5))
    assert kn(head.loc["PCL-5"], "remission") == (1, 1)  # C: 30 < 33
    with pytest.raises(ValueError):
        report(clinic_db, endpoint="week 3")


# --- trajectory ------------------------------------------------------------------------------------------


def test_trajectory_by_phase_is_the_phase_table_without_latest(rep):
    traj = cohort.trajectory(rep, "completers", "phase")
    phq9 = traj[(traj["instrument"] == "PHQ-9") & (traj["dimension"] == "all")]
    assert list(phq9["x"]) == ["Baseline", "End of dosing", "End of integration", "Follow-up"]
    assert list(phq9["n"]) == [6, 4, 3, 1]
    assert list(phq9["mean"]) == pytest.approx([103 / 6, 10.0, 25 / 3, 5.0])


def test_weekly_trajectory_of_completers_uses_the_scores_seen_each_week(rep):
    weeks = cohort.trajectory(rep, "completers", "week")
    phq9 = weeks[(weeks["instrument"] == "PHQ-9") & (weeks["dimension"] == "all")]
    # week 0 baselines (A B C D F G); week 2: A 14, B 4, C 10, F 12 (day 9); week 8: F 9 (day 50);
    # week 9: A 6, B 10 (day 61); week 18: F 5 (day 122)
    assert list(zip(phq9["week"], phq9["n"], strict=True)) == [(0, 6), (2, 4), (8, 1), (9, 2), (18, 1)]
    assert list(phq9["mean"]) == pytest.approx([103 / 6, 10.0, 9.0, 8.0, 5.0])


def test_weekly_trajectory_itt_carries_scores_forward_to_the_last_week_the_data_covers(rep):
    weeks = cohort.trajectory(rep, "itt", "week")
    phq9 = weeks[(weeks["instrument"] == "PHQ-9") & (weeks["dimension"] == "all")].set_index("week")
    # A B C F G from week 0 to week 18 (2025-07-01 is day 122, in week 18); never beyond
    assert list(phq9.index) == list(range(19))
    assert set(phq9["n"]) == {5}
    expected = {0: 17.6, 1: 17.6, 2: 12.4, 7: 12.4, 8: 11.8, 9: 11.4, 17: 11.4, 18: 10.6}
    assert {w: phq9.loc[w, "mean"] for w in expected} == pytest.approx(expected)
    assert (phq9.loc[2, "mean_low"], phq9.loc[2, "mean_high"]) == pytest.approx(
        t_bounds([14, 4, 10, 12, 22], T975_DF4)
    )


def test_weekly_trajectory_is_only_computed_when_asked(clinic_db):
    assert report(clinic_db).weekly.empty


# --- severity shift and waterfall --------------------------------------------------------------------------


def test_severity_shift_moves_patients_between_registry_bands(rep):
    shift = cohort.shift_table(rep, "completers")
    phq9 = shift[shift["instrument"] == "PHQ-9"]
    # A severe → mild, B moderately severe → moderate, C moderate → moderate, F moderately severe → mild
    assert sorted(zip(phq9["from_band"], phq9["to_band"], phq9["patients"], phq9["share"], strict=True)) == [
        ("moderate", "moderate", 1, 1.0),
        ("moderately severe", "mild", 1, 0.5),
        ("moderately severe", "moderate", 1, 0.5),
        ("severe", "mild", 1, 1.0),
    ]
    pcl = shift[shift["instrument"] == "PCL-5"]  # no validated bands: split at caseness 33
    assert list(zip(pcl["from_band"], pcl["to_band"], strict=True)) == [("≥ 33 probable PTSD", "< 33")]
    itt = cohort.shift_table(rep, "itt")
    severe = itt[(itt["instrument"] == "PHQ-9") & (itt["from_band"] == "severe")]
    assert sorted(zip(severe["to_band"], severe["share"], strict=True)) == [
        ("mild", 0.5),
        ("severe", 0.5),
    ]  # G


def test_waterfall_sorts_patients_from_most_worsened_and_colours_by_outcome(rep):
    fall = rep.waterfall[
        (rep.waterfall["population"] == "completers") & (rep.waterfall["instrument"] == "PHQ-9")
    ]
    # C -16.7%, B -44.4%, F -68.75% (response; 5 is not remission), A -70%
    assert list(fall["pct_change"]) == pytest.approx([-100 / 6, -400 / 9, -68.75, -70.0])
    assert list(fall["category"]) == ["no response", "no response", "response", "response"]
    assert set(fall["patients"]) == {1}
    itt = rep.waterfall[(rep.waterfall["population"] == "itt") & (rep.waterfall["instrument"] == "PHQ-9")]
    assert list(itt["pct_change"])[0] == 0.0 and len(itt) == 5  # G's baseline carried forward


def test_waterfall_bins_patients_into_equal_bars_above_the_bar_limit(clinic_db, monkeypatch):
    monkeypatch.setattr(cohort, "WATERFALL_MAX_BARS", 2)
    fall = report(clinic_db).waterfall
    fall = fall[(fall["population"] == "completers") & (fall["instrument"] == "PHQ-9")]
    assert list(fall["patients"]) == [2, 2]
    assert list(fall["pct_change"]) == pytest.approx([(-100 / 6 - 400 / 9) / 2, -69.375])
    assert list(fall["category"]) == ["no response", "response"]
    assert (list(fall["no_response"]), list(fall["response"])) == ([2, 0], [0, 2])


# --- breakdown -------------------------------------------------------------------------------------------


def test_breakdown_by_clinic_gives_each_group_its_rates(rep):
    groups = cohort.breakdown_table(rep, "completers").set_index(["instrument", "group"])
    # latest: North A 6, B 10 (D has no later score); South C 10, F 5 (G none)
    assert kn(groups.loc[("PHQ-9", "North")], "response") == (1, 2)
    assert kn(groups.loc[("PHQ-9", "South")], "response") == (1, 2)
    itt = cohort.breakdown_table(rep, "itt").set_index(["instrument", "group"])
    assert kn(itt.loc[("PHQ-9", "South")], "response") == (1, 3)  # C, F, G
    assert itt.loc[("PHQ-9", "South"), "small"]


def test_breakdown_leaves_the_overall_rows_alone_and_refuses_other_columns(clinic_db, rep):
    overall = cohort.phase_table(rep, "completers")
    plain = cohort.phase_table(report(clinic_db), "completers")
    pd.testing.assert_frame_equal(overall, plain)
    with pytest.raises(ValueError):
        report(clinic_db, breakdown="patient_id; DROP TABLE scores")
    by_route = cohort.breakdown_table(report(clinic_db, breakdown="route"), "completers")
    assert set(by_route["group"]) == {"IV", "IM", "SL"}


def test_breakdown_names_a_group_for_patients_with_unknown_attributes(tmp_path):
    # P2 appears only in the sessions and scores files: created with unknown clinic, provider, route
    patients = csv_lines(PATIENTS_HEADER, [("P1", "North", "PR1", "25-34", "female", "MDD", "IV")])
    sessions = csv_lines("patient_id,session_date", [("P1", "2025-03-01"), ("P2", "2025-03-01")])
    scores = csv_lines(
        "patient_id,instrument,assessed_on,total",
        [("P1", "PHQ-9", "2025-02-20", 20), ("P1", "PHQ-9", "2025-03-20", 4)]
        + [("P2", "PHQ-9", "2025-02-20", 18), ("P2", "PHQ-9", "2025-03-20", 17)],
    )
    path = tmp_path / "kap.duckdb"
    load(
        path,
        write_text(tmp_path / "patients.csv", patients),
        write_text(tmp_path / "sessions.csv", sessions),
        write_text(tmp_path / "scores.csv", scores),
    )
    groups = cohort.breakdown_table(report(path, breakdown="clinic"), "completers").set_index("group")
    assert list(groups.index) == [cohort.UNKNOWN, "North"]
    assert kn(groups.loc[cohort.UNKNOWN], "response") == (0, 1)
    assert kn(groups.loc["North"], "remission") == (1, 1)


# --- safety ----------------------------------------------------------------------------------------------


def test_safety_item_endorsement_at_baseline_and_latest(rep):
    comp = cohort.safety_tables(rep, "completers")["items"].set_index("timepoint")
    # baseline with items: A 1, B 0, C 0, D 2, G 3 (F totals only); latest after baseline: A 0, B 1, C 0
    assert kn(comp.loc["baseline"], "rate") == (3, 5)
    assert kn(comp.loc["latest"], "rate") == (1, 3)
    itt = cohort.safety_tables(rep, "itt")["items"].set_index("timepoint")
    # dosed: A B C G with items; G's baseline answer is carried forward
    assert kn(itt.loc["baseline"], "rate") == (2, 4)
    assert kn(itt.loc["latest"], "rate") == (2, 4)


def test_an_unanswered_safety_item_never_hides_an_earlier_answer(tmp_path: Path) -> None:
    """DESIGN §5: item 9 unanswered is unknown and never clears a flag. Only questionnaires that answer it
    count; a later one with item 9 blank (its total prorated) is passed over.

        P: baseline item 9 = 1; dosing questionnaire with item 9 blank
        Q: baseline item 9 = 2; dosing item 9 = 0; integration questionnaire with item 9 blank
    """

    def blank9(patient: str, day: str) -> tuple[object, ...]:
        return (patient, "PHQ-9", day, None, *[2] * 8, None, *[None] * 11)  # 16 of 8 answers: prorated 18

    path = tmp_path / "kap.duckdb"
    load(
        path,
        write_text(
            tmp_path / "patients.csv",
            csv_lines(PATIENTS_HEADER, [(p, "North", "PR1", "25-34", "female", "MDD", "IV") for p in "PQ"]),
        ),
        write_text(
            tmp_path / "sessions.csv",
            csv_lines(
                SESSIONS_HEADER,
                [(p, d, "IV", 35, *NORMAL, "") for p in ("P", "Q") for d in ("2025-03-01", "2025-03-29")],
            ),
        ),
        write_text(
            tmp_path / "scores.csv",
            csv_lines(
                SCORES_HEADER,
                [
                    phq("P", "2025-02-20", 20, 1),
                    blank9("P", "2025-03-15"),
                    phq("Q", "2025-02-20", 18, 2),
                    phq("Q", "2025-03-15", 10, 0),
                    blank9("Q", "2025-05-01"),
                ],
            ),
        ),
    )
    rep = report(path)
    comp = cohort.safety_tables(rep, "completers")["items"].set_index("timepoint")
    assert kn(comp.loc["baseline"], "rate") == (2, 2)
    assert kn(comp.loc["latest"], "rate") == (0, 1)  # Q's dosing answer 0; P answered it at no later time
    itt = cohort.safety_tables(rep, "itt")["items"].set_index("timepoint")
    assert kn(itt.loc["latest"], "rate") == (1, 2)  # P's baseline answer 1 carried forward, Q's 0


def test_blood_pressure_above_threshold_counts_sessions_and_patients(rep):
    assert rep.sessions == {
        "sessions": 18,
        "bp_recorded": 17,  # E's first session has no reading
        "bp_high": 2,  # A post 170, B pre 105; F's 160/100 is at the threshold, not above
        "patients": 6,
        "bp_high_patients": 2,
        "bp_sys_threshold": 160.0,
        "bp_dia_threshold": 100.0,
        "dissociation_recorded": 0,  # no CADSS-6 scores in this cohort
        "dissociation_mean": None,
        "dissociation_sd": None,
    }
    bp = cohort.safety_tables(rep, "completers")["blood_pressure"]
    assert [kn(r, "rate") for _, r in bp.iterrows()] == [(2, 17), (2, 6)]


def test_side_effects_are_counted_per_session_and_per_patient(rep):
    fx = cohort.safety_tables(rep, "completers")["side_effects"]
    assert list(zip(fx["side_effect"], fx["sessions"], fx["patients"], strict=True)) == [
        ("nausea", 3, 2),
        ("dizziness", 1, 1),
        ("headache", 1, 1),
    ]
    assert fx["session_rate"].iloc[0] == pytest.approx(3 / 18)
    assert fx["patient_rate"].iloc[0] == pytest.approx(2 / 6)


def test_reliable_deterioration_in_the_safety_panel_is_the_endpoint_rate(rep):
    det = cohort.safety_tables(rep, "itt")["deterioration"].set_index("instrument")
    assert kn(det.loc["PHQ-9"], "reliable_deterioration") == (0, 5)


# --- filters ---------------------------------------------------------------------------------------------


def test_cohort_filter_restricts_every_panel(clinic_db):
    south = report(clinic_db, cohort.CohortFilter(clinics=["South"]))
    assert south.tiles() == {
        "enrolled": 3,
        "first_dose": 3,
        "dosing_complete": 1,
        "integration": 1,
        "follow_up": 1,
    }
    assert row(cohort.phase_table(south, "itt"), instrument="PHQ-9", phase="baseline")["n"] == 3
    assert south.sessions["sessions"] == 8 and south.sessions["bp_high"] == 0
    assert list(south.side_effects["side_effect"]) == ["nausea"]


def test_an_empty_cohort_gives_zeros_not_errors(clinic_db):
    empty = report(
        clinic_db, cohort.CohortFilter(start_from=dt.date(2025, 3, 2)), breakdown="provider", weekly=True
    )
    assert empty.tiles() == {
        "enrolled": 0,
        "first_dose": 0,
        "dosing_complete": 0,
        "integration": 0,
        "follow_up": 0,
    }
    assert cohort.phase_table(empty, "completers").empty
    assert empty.shift.empty and empty.waterfall.empty and empty.weekly.empty
    assert empty.sessions["sessions"] == 0


def test_filter_values_are_parameters_not_sql(clinic_db):
    evil = cohort.CohortFilter(clinics=["North'; DROP TABLE scores; --"])
    assert report(clinic_db, evil).tiles()["enrolled"] == 0
    with db.reader(clinic_db) as con:
        assert con.execute("SELECT count(*) FROM scores").fetchone() == (len(SCORES),)


def test_cohort_filter_is_hashable_and_equal_for_lists_and_tuples():
    a = cohort.CohortFilter(clinics=["North"], routes=("IV",))
    b = cohort.CohortFilter(clinics=("North",), routes=["IV"])
    assert a == b and hash(a) == hash(b)
    assert a.params()["clinics"] == ["North"]


# --- published results -----------------------------------------------------------------------------------


def test_published_results_carry_their_citations_and_stay_apart():
    table = benchmarks.published()
    assert set(table["study"]) == {"McInnes et al. 2022", "Hull et al. 2022"}
    mcinnes = row(table, study="McInnes et al. 2022", instrument="PHQ-9")
    assert (mcinnes["response"], mcinnes["remission"]) == (0.536, 0.289)
    hull = table[table["study"] == "Hull et al. 2022"].set_index("instrument")
    assert (hull.loc["PHQ-9", "response"], hull.loc["PHQ-9", "remission"]) == (0.628, 0.326)
    assert (hull.loc["GAD-7", "response"], hull.loc["GAD-7", "remission"]) == (0.629, 0.313)
    assert all("J Affect Disord 2022" in c and "doi:10.1016/" in c for c in table["citation"])
    assert benchmarks.published(["PCL-5"]).empty
    assert list(benchmarks.published(["GAD-7"])["study"]) == ["Hull et al. 2022"]


def test_report_on_an_empty_database_has_no_rows_and_no_errors(tmp_path):
    path = tmp_path / "empty.duckdb"
    with db.session(path):
        pass
    empty = report(path, breakdown="clinic", weekly=True)
    assert empty.as_of is None and empty.tiles()["enrolled"] == 0
    assert cohort.phase_table(empty, "itt").empty and cohort.headline(empty, "itt").empty
    assert empty.weekly.empty and empty.side_effects.empty


def test_a_clinic_name_with_markup_is_shown_as_text_in_the_charts() -> None:
    from kapdata.charts import cohort as figs

    name = '<a href="https://evil.example">North</a>'
    groups = pd.DataFrame(
        {
            "instrument": ["PHQ-9"],
            "group": [name],
            "n": [12],
            "small": [False],
            **{f"{r}{s}": [0.5 if s == "" else 6] for r in ("response", "remission") for s in ("", "_k")},
            **{f"{r}_n": [12] for r in ("response", "remission")},
            **{
                f"{r}_{b}": [0.3 if b == "low" else 0.7]
                for r in ("response", "remission")
                for b in ("low", "high")
            },
            **{f"{r}_small": [False] for r in ("response", "remission")},
        }
    )
    fig = figs.breakdown(groups, scales=["PHQ-9"], group_label="Clinic", endpoint_label="Latest")
    shown = [y for trace in fig.data for y in (trace.y or [])]
    assert shown and all(y == '&lt;a href="https://evil.example"&gt;North&lt;/a&gt;' for y in shown)
