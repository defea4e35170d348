"""Cohort summary: completers and intention-to-treat (LOCF) with Wilson and t intervals, hand-computed.

PHQ-9, sessions 2025-03-01 … 2025-03-29 for A, B, C and E:

    patient  baseline  dosing  integration   notes
    A        20        14      6
    B        18        4       10
    C        12        10      -             drops out after dosing (LOCF carries 10 forward)
    D        15        -       -             never dosed: not in ITT
    E        -         12      -             no baseline: in no group
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pytest

from kapdata import cohort, db
from tests.conftest import (
    PATIENTS_HEADER,
    SCORES_HEADER,
    SESSIONS_HEADER,
    csv_lines,
    load,
    sessions_rows,
    write_text,
)

T975_DF1 = 12.706204736174698
T975_DF2 = 4.302652729749464

PATIENTS = [
    ("A", "North", "Dr A", "25-34", "female", "MDD", "IV"),
    ("B", "North", "Dr B", "35-44", "male", "MDD", "IM"),
    ("C", "South", "Dr A", "45-54", "female", "PTSD", "IV"),
    ("D", "North", "Dr B", "25-34", "male", "MDD", "IV"),
    ("E", "North", "Dr A", "25-34", "other", "GAD", "IV"),
]
SCORES = [
    ("A", "PHQ-9", "2025-02-20", 20),
    ("A", "PHQ-9", "2025-03-15", 14),
    ("A", "PHQ-9", "2025-05-01", 6),
    ("B", "PHQ-9", "2025-02-20", 18),
    ("B", "PHQ-9", "2025-03-15", 4),
    ("B", "PHQ-9", "2025-05-01", 10),
    ("C", "PHQ-9", "2025-02-20", 12),
    ("C", "PHQ-9", "2025-03-15", 10),
    ("D", "PHQ-9", "2025-02-20", 15),
    ("E", "PHQ-9", "2025-03-15", 12),
]


def write_cohort(folder: Path) -> list[Path]:
    sessions = [r for pid in "ABCE" for r in sessions_rows(pid, ["2025-03-01", "2025-03-08", "2025-03-29"])]
    return [
        write_text(folder / "patients.csv", csv_lines(PATIENTS_HEADER, PATIENTS)),
        write_text(folder / "sessions.csv", csv_lines(SESSIONS_HEADER, sessions)),
        write_text(folder / "scores.csv", csv_lines(SCORES_HEADER, SCORES)),
    ]


def load_rows(folder: Path, patients: list, sessions: list, scores: list) -> Path:
    """A new database in ``folder`` from the three files made of these rows."""
    db_file = folder / "kap.duckdb"
    load(
        db_file,
        write_text(folder / "patients.csv", csv_lines(PATIENTS_HEADER, patients)),
        write_text(folder / "sessions.csv", csv_lines(SESSIONS_HEADER, sessions)),
        write_text(folder / "scores.csv", csv_lines(SCORES_HEADER, scores)),
    )
    return db_file


@pytest.fixture(scope="module")
def cohort_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cohort")
    db_file = folder / "kap.duckdb"
    load(db_file, *write_cohort(folder))
    return db_file


def results(db_file: Path, flt: cohort.CohortFilter | None = None) -> dict[tuple[str, str], dict]:
    with db.reader(db_file) as con:
        return {(r["instrument"], r["phase"]): r for r in cohort.summary(con, flt)}


def t_bounds(mean: float, sd: float, n: int, t: float) -> tuple[float, float]:
    half = t * sd / math.sqrt(n)
    return mean - half, mean + half


def test_summary_has_one_row_per_instrument_and_phase(cohort_db):
    assert list(results(cohort_db)) == [
        ("PHQ-9", p) for p in ("dosing", "integration", "follow-up", "latest")
    ]


def test_dosing_completers_counts_means_and_t_interval(cohort_db):
    r = results(cohort_db)[("PHQ-9", "dosing")]
    assert (r["patients_with_baseline"], r["completers"], r["itt"]) == (4, 3, 3)
    assert r["mean_baseline"] == pytest.approx(50 / 3)
    assert r["mean_endpoint"] == pytest.approx(28 / 3)
    # changes -6, -14, -2: mean -7.3333, sd 6.1101, t(0.975, 2) = 4.3027
    m = r["mean_change"]
    assert m["n"] == 3
    assert m["mean"] == pytest.approx(-22 / 3)
    assert m["sd"] == pytest.approx(math.sqrt(112 / 3))
    assert (m["ci_low"], m["ci_high"]) == pytest.approx((-22.5116, 7.8450), abs=1e-4)
    assert (m["ci_low"], m["ci_high"]) == pytest.approx(t_bounds(-22 / 3, math.sqrt(112 / 3), 3, T975_DF2))
    rates = r["rates"]["completers"]
    assert {k: (v["k"], v["n"]) for k, v in rates.items()} == {
        "response": (1, 3),  # B: 18 → 4
        "remission": (1, 3),  # B: 4 < 5
        "reliable_improvement": (2, 3),  # A -6, B -14
        "reliable_deterioration": (0, 3),
        "recovery": (1, 3),  # B: 18 → 4; A ends at 14, C at 10
        "reliable_recovery": (1, 3),
    }
    # Wilson 1 of 3: 0.0615 to 0.7923
    assert (rates["response"]["ci_low"], rates["response"]["ci_high"]) == pytest.approx(
        (0.0615, 0.7923), abs=1e-4
    )
    assert rates["response"]["rate"] == pytest.approx(1 / 3)


def test_integration_completers_wilson_for_one_of_two_and_t_interval_df1(cohort_db):
    r = results(cohort_db)[("PHQ-9", "integration")]
    assert (r["patients_with_baseline"], r["completers"]) == (4, 2)
    # changes -14, -8: mean -11, sd 4.2426, t(0.975, 1) = 12.7062
    m = r["mean_change"]
    assert (m["n"], m["mean"]) == (2, pytest.approx(-11.0))
    assert (m["ci_low"], m["ci_high"]) == pytest.approx((-49.1186, 27.1186), abs=1e-4)
    rates = r["rates"]["completers"]
    response = rates["response"]  # A 70% reduction, B 44%
    assert (response["k"], response["n"], response["rate"]) == (1, 2, 0.5)
    assert (response["ci_low"], response["ci_high"]) == pytest.approx((0.094531, 0.905469), abs=1e-6)
    remission = rates["remission"]  # 0 of 2: 0 to 0.6576
    assert (remission["k"], remission["n"], remission["ci_low"]) == (0, 2, 0.0)
    assert remission["ci_high"] == pytest.approx(0.6576, abs=1e-4)


def test_itt_carries_the_dropout_forward_and_excludes_the_never_dosed(cohort_db):
    r = results(cohort_db)[("PHQ-9", "integration")]
    assert r["itt"] == 3  # A, B and C (LOCF 10); not D (no session), not E (no baseline)
    itt = r["itt_means"]
    assert itt["mean_baseline"] == pytest.approx(50 / 3)
    assert itt["mean_endpoint"] == pytest.approx(26 / 3)  # 6, 10, 10
    # changes -14, -8, -2: mean -8, sd 6
    assert (itt["mean_change"]["mean"], itt["mean_change"]["sd"]) == (pytest.approx(-8.0), pytest.approx(6.0))
    assert (itt["mean_change"]["ci_low"], itt["mean_change"]["ci_high"]) == pytest.approx(
        t_bounds(-8, 6, 3, T975_DF2)
    )
    assert (itt["mean_change"]["ci_low"], itt["mean_change"]["ci_high"]) == pytest.approx(
        (-22.9048, 6.9048), abs=1e-4
    )
    rates = r["rates"]["itt"]
    assert {k: (v["k"], v["n"]) for k, v in rates.items()} == {
        "response": (1, 3),
        "remission": (0, 3),
        "reliable_improvement": (2, 3),
        "reliable_deterioration": (0, 3),
        "recovery": (1, 3),  # A: 20 → 6
        "reliable_recovery": (1, 3),
    }
    assert (rates["response"]["ci_low"], rates["response"]["ci_high"]) == pytest.approx(
        (0.0615, 0.7923), abs=1e-4
    )


def test_follow_up_counts_nobody_still_inside_the_integration_window(cohort_db):
    # The data's last day is 2025-05-01, 33 days after the last session (2025-03-29): A, B and C are still in
    # integration (84 days), so nobody is due for a follow-up endpoint. Before, ITT counted all three.
    r = results(cohort_db)[("PHQ-9", "follow-up")]
    assert (r["completers"], r["itt"], r["itt_not_yet_due"]) == (0, 0, 3)
    assert r["rates"]["itt"]["response"]["n"] == 0


def test_itt_follow_up_carries_the_last_observation_for_patients_past_the_window(tmp_path: Path) -> None:
    # H: sessions 2024-11-01 and 2024-11-10, baseline 20, dosing 8; the data's last day 2025-05-01 (J) is 172
    # days after H's last session: due for follow-up, LOCF endpoint 8 (response, 60% down). J's last session
    # 2025-04-20 is 11 days before: by the 14-day rule J is still dosing, due for neither integration nor
    # follow-up; but J's score of 2025-05-01 (after the last session) is in integration, so J has reached
    # integration and is due for it (a completer there). Due for end of dosing and latest too.
    patients = [
        ("H", "North", "Dr A", "25-34", "female", "MDD", "IV"),
        ("J", "North", "Dr A", "25-34", "female", "MDD", "IV"),
    ]
    scores = [
        ("H", "PHQ-9", "2024-10-20", 20),
        ("H", "PHQ-9", "2024-11-05", 8),
        ("J", "PHQ-9", "2025-04-01", 15),
        ("J", "PHQ-9", "2025-05-01", 9),
    ]
    sessions = sessions_rows("H", ["2024-11-01", "2024-11-10"]) + sessions_rows(
        "J", ["2025-04-10", "2025-04-20"]
    )
    db_file = load_rows(tmp_path, patients, sessions, scores)
    r = results(db_file)
    assert (r[("PHQ-9", "follow-up")]["itt"], r[("PHQ-9", "follow-up")]["itt_not_yet_due"]) == (1, 1)
    assert r[("PHQ-9", "follow-up")]["itt_means"]["mean_endpoint"] == pytest.approx(8.0)
    assert r[("PHQ-9", "follow-up")]["rates"]["itt"]["response"] == pytest.approx(
        {"k": 1, "n": 1, "rate": 1.0, "ci_low": 0.2065, "ci_high": 1.0}, abs=1e-4
    )
    assert (r[("PHQ-9", "integration")]["itt"], r[("PHQ-9", "integration")]["itt_not_yet_due"]) == (2, 0)
    assert r[("PHQ-9", "integration")]["completers"] == 1  # J
    assert (r[("PHQ-9", "dosing")]["itt"], r[("PHQ-9", "latest")]["itt"]) == (2, 2)


def test_follow_up_has_no_completers_but_itt_uses_the_last_observation(tmp_path: Path) -> None:
    # The module's cohort, with the data running on to 2025-09-01 (D answers again): A, B and C are past
    # the integration window (last session 2025-03-29 + 84 days), so all three are due for follow-up.
    folder = tmp_path
    files = write_cohort(folder)
    later = write_text(folder / "later.csv", csv_lines(SCORES_HEADER, [("D", "PHQ-9", "2025-09-01", 15)]))
    db_file = folder / "kap.duckdb"
    load(db_file, *files, later)
    r = results(db_file)[("PHQ-9", "follow-up")]
    assert (r["completers"], r["itt"], r["itt_not_yet_due"]) == (0, 3, 0)
    assert r["mean_change"] == {"n": 0, "mean": None, "sd": None, "ci_low": None, "ci_high": None}
    assert r["rates"]["completers"]["response"] == {
        "k": 0,
        "n": 0,
        "rate": None,
        "ci_low": None,
        "ci_high": None,
    }
    assert r["itt_means"]["mean_endpoint"] == pytest.approx(26 / 3)
    assert (r["rates"]["itt"]["response"]["k"], r["rates"]["itt"]["response"]["n"]) == (1, 3)


def test_latest_completers_include_the_dropout(cohort_db):
    r = results(cohort_db)[("PHQ-9", "latest")]
    assert (r["completers"], r["itt"]) == (3, 3)
    assert r["mean_change"]["mean"] == pytest.approx(-8.0)


def test_cohort_filter_restricts_patients(cohort_db):
    south = results(cohort_db, cohort.CohortFilter(clinics=["South"]))[("PHQ-9", "dosing")]
    assert (south["patients_with_baseline"], south["completers"], south["itt"]) == (1, 1, 1)
    assert south["mean_change"]["mean"] == pytest.approx(-2.0) and south["mean_change"]["ci_low"] is None
    im = results(cohort_db, cohort.CohortFilter(routes=["IM"], providers=["Dr B"]))[("PHQ-9", "dosing")]
    assert im["patients_with_baseline"] == 1 and im["mean_baseline"] == pytest.approx(18.0)
    later = results(cohort_db, cohort.CohortFilter(start_from=dt.date(2025, 3, 2)))
    assert later == {}
    started = results(cohort_db, cohort.CohortFilter(start_to=dt.date(2025, 3, 1), conditions=["MDD"]))
    assert started[("PHQ-9", "dosing")]["patients_with_baseline"] == 2  # A, B (D has no first session)


def test_cohort_sql_is_parameterised(cohort_db):
    with db.reader(cohort_db) as con:
        ids = con.execute(
            cohort.COHORT_SQL, cohort.CohortFilter(clinics=["North'; DROP TABLE scores; --"]).params()
        )
        assert ids.fetchall() == []
        assert con.execute("SELECT count(*) FROM scores").fetchone() == (10,)


def test_summary_document_is_json_with_definitions(cohort_db):
    with db.reader(cohort_db) as con:
        doc = cohort.summary_document(con)
    text = json.dumps(doc)  # serialisable without help
    back = json.loads(text)
    assert set(back) == {"generated_at", "phases", "definitions", "results", "joint_recovery"}
    assert back["phases"] == ["dosing", "integration", "follow-up", "latest"]
    assert back["definitions"]["settings"]["integration_window_days"] == 84
    assert back["definitions"]["settings"]["baseline_max_days"] == 90
    assert back["definitions"]["settings"]["dosing_complete_sessions"] == 4
    phq = [i for i in back["definitions"]["instruments"] if i["code"] == "PHQ-9"][0]
    assert phq == {
        "code": "PHQ-9",
        "n_items": 9,
        "item_max": 3,
        "total_max": 27,
        "caseness": 10,
        "response_pct": 50,
        "remission_below": 5,
        "reliable_change": 6,
        "safety_items": [9],
    }
    assert len(back["results"]) == 4


def test_recovery_rates_count_only_patients_who_started_in_the_clinical_range(tmp_path: Path) -> None:
    # F starts below caseness (8 -> 3): recovery and remission are undefined for F (NHS Talking Therapies
    # counts only patients who started in the clinical range; before, F "remitted"); G starts in range
    # (16 -> 4), remits and recovers reliably.
    patients = [
        ("F", "North", "Dr A", "25-34", "female", "MDD", "IV"),
        ("G", "North", "Dr A", "25-34", "female", "MDD", "IV"),
    ]
    scores = [
        ("F", "PHQ-9", "2025-02-20", 8),
        ("F", "PHQ-9", "2025-03-15", 3),
        ("G", "PHQ-9", "2025-02-20", 16),
        ("G", "PHQ-9", "2025-03-15", 4),
    ]
    sessions = [r for pid in "FG" for r in sessions_rows(pid, ["2025-03-01", "2025-03-29"])]
    db_file = load_rows(tmp_path, patients, sessions, scores)
    row = results(db_file)[("PHQ-9", "dosing")]
    for group in ("completers", "itt"):
        rates = row["rates"][group]
        assert (rates["recovery"]["k"], rates["recovery"]["n"]) == (1, 1)
        assert (rates["reliable_recovery"]["k"], rates["reliable_recovery"]["n"]) == (1, 1)
        assert (rates["remission"]["k"], rates["remission"]["n"]) == (1, 1)
        assert (rates["response"]["k"], rates["response"]["n"]) == (2, 2)  # response does not need caseness
    assert row["baseline_below_caseness"] == 1
    with db.reader(db_file) as con:
        flags = con.execute(
            "SELECT patient_id, remission, recovery, reliable_recovery FROM outcomes WHERE phase = 'dosing' "
            "ORDER BY patient_id"
        ).fetchall()
    assert flags == [("F", None, None, None), ("G", True, True, True)]


def test_joint_recovery_needs_a_case_on_either_scale_at_baseline_and_neither_at_the_endpoint(
    tmp_path: Path,
) -> None:
    # PHQ-9 caseness 10, GAD-7 caseness 8 (NHS Talking Therapies). At the end of dosing:
    #   K: PHQ 12 -> 6, GAD 9 -> 5: a case at baseline on both, neither at the end: recovered.
    #   L: PHQ 8 -> 4, GAD 10 -> 8: a case on GAD-7 only; GAD-7 8 is still a case: not recovered.
    #   M: PHQ 6 -> 3, GAD 5 -> 2: no case at baseline: left out.
    #   N: PHQ 15 -> 4, no GAD-7: needs both scales: left out.
    # Completers 1/2. Per scale GAD-7 recovery: K yes, L no (caseness 8; it used to be 10, leaving L out).
    ids = "KLMN"
    patients = [(p, "North", "Dr A", "25-34", "female", "MDD", "IV") for p in ids]
    scores = []
    for pid, phq, gad in (
        ("K", (12, 6), (9, 5)),
        ("L", (8, 4), (10, 8)),
        ("M", (6, 3), (5, 2)),
        ("N", (15, 4), None),
    ):
        scores += [(pid, "PHQ-9", "2025-02-20", phq[0]), (pid, "PHQ-9", "2025-03-15", phq[1])]
        if gad:
            scores += [(pid, "GAD-7", "2025-02-20", gad[0]), (pid, "GAD-7", "2025-03-15", gad[1])]
    sessions = [r for pid in ids for r in sessions_rows(pid, ["2025-03-01", "2025-03-29"])]
    db_file = load_rows(tmp_path, patients, sessions, scores)
    with db.reader(db_file) as con:
        joint = {j["phase"]: j for j in cohort.joint_recovery(con)}
        rep = cohort.report(con)
    assert (joint["dosing"]["completers"]["k"], joint["dosing"]["completers"]["n"]) == (1, 2)
    assert (joint["dosing"]["itt"]["k"], joint["dosing"]["itt"]["n"]) == (1, 2)
    gad = results(db_file)[("GAD-7", "dosing")]["rates"]["completers"]["recovery"]
    assert (gad["k"], gad["n"]) == (1, 2)
    rate = cohort.joint_rate(rep, "completers", "dosing")
    assert rate is not None and (rate.k, rate.n) == (1, 2)


def test_a_completer_is_in_itt_even_while_the_rule_says_not_yet_due(tmp_path: Path) -> None:
    """Sessions 2025-06-01 and 06-12; the data's last day 06-22 is 10 days after the last session, so by the
    14-day rule nobody is due for end of integration yet. P has integration scores (8 on 06-20, 9 on 06-22):
    P reached the phase, so P is in ITT there with the completers; R (baseline only) is not yet due.
    PHQ-9 20 → 9: a 55% reduction, a response; 9 is not below 5, no remission."""
    patients = [(p, "North", "Dr A", "25-34", "female", "MDD", "IV") for p in ("P", "R")]
    sessions = [r for p in ("P", "R") for r in sessions_rows(p, ["2025-06-01", "2025-06-12"])]
    scores = [
        ("P", "PHQ-9", "2025-05-30", 20),
        ("P", "PHQ-9", "2025-06-20", 8),
        ("P", "PHQ-9", "2025-06-22", 9),
        ("R", "PHQ-9", "2025-05-30", 18),
    ]
    db_file = load_rows(tmp_path, patients, sessions, scores)
    r = results(db_file)[("PHQ-9", "integration")]
    assert (r["completers"], r["itt"], r["itt_not_yet_due"]) == (1, 1, 1)
    for population in ("completers", "itt"):
        rates = r["rates"][population]
        assert (rates["response"]["k"], rates["response"]["n"]) == (1, 1)
        assert (rates["remission"]["k"], rates["remission"]["n"]) == (0, 1)
