"""Phases (preparation → dosing → integration → follow-up) and per-patient outcomes, on hand-computed data.

Every patient here has dosing sessions on 2025-03-01, -08, -15 and -29 unless said otherwise: scores on
or before 1 March are preparation, 2 to 29 March dosing, up to 84 days after 29 March (21 June)
integration, from 22 June follow-up.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from kapdata import db, outcomes
from tests.conftest import (
    SCORES_HEADER,
    SCORES_PHASE_HEADER,
    SESSIONS_HEADER,
    csv_lines,
    load,
    outcome,
    phase_of,
    query,
    sessions_rows,
    write_text,
)

SESSIONS = ["2025-03-01", "2025-03-08", "2025-03-15", "2025-03-29"]

CHANGE_METRICS = (
    "change",
    "pct_change",
    "response",
    "reliable_improvement",
    "reliable_deterioration",
    "recovery",
    "reliable_recovery",
)


def build(
    tmp_path: Path, scores: list[tuple[Any, ...]], sessions: dict[str, list[str]] | None = None
) -> Path:
    """A database with these scores (patient, instrument, assessed_on, total[, phase]) and sessions
    (default: the four standard sessions for every patient in ``scores``)."""
    db_file = tmp_path / "kap.duckdb"
    if sessions is None:
        sessions = {pid: SESSIONS for pid in sorted({r[0] for r in scores})}
    files = []
    rows = [r for pid, dates in sessions.items() for r in sessions_rows(pid, dates)]
    if rows:
        files.append(write_text(tmp_path / "sessions.csv", csv_lines(SESSIONS_HEADER, rows)))
    with_phase = any(len(r) == 5 for r in scores)
    header = SCORES_PHASE_HEADER if with_phase else SCORES_HEADER
    padded = [tuple(r) + (None,) * (5 - len(r)) if with_phase else r for r in scores]
    files.append(write_text(tmp_path / "scores.csv", csv_lines(header, padded)))
    load(db_file, *files)
    return db_file


def pair_id(instrument: str, baseline: int, endpoint: int) -> str:
    return f"{instrument}_{baseline}_{endpoint}"


def two_point(pairs_db: Path, instrument: str, baseline: int, endpoint: int) -> dict[str, Any]:
    """The integration outcome row of the ``pairs_db`` patient with this baseline and endpoint."""
    return outcome(pairs_db, pair_id(instrument, baseline, endpoint), instrument, "integration")


RESPONSE_CASES = [
    ("PHQ-9", 20, 10, True),  # exactly 50%
    ("PHQ-9", 20, 11, False),  # 45%
    ("PHQ-9", 15, 7, True),  # 53.3%
    ("PHQ-9", 15, 8, False),  # 46.7%
    ("GAD-7", 14, 7, True),  # exactly 50%
    ("GAD-7", 14, 8, False),
    ("PCL-5", 50, 35, True),  # exactly 30%
    ("PCL-5", 50, 36, False),  # 28%
    ("PCL-5", 40, 28, True),  # exactly 30%
    ("PCL-5", 40, 29, False),  # 27.5%
]

REMISSION_CASES = [
    ("PHQ-9", 4, True),
    ("PHQ-9", 5, False),
    ("GAD-7", 4, True),
    ("GAD-7", 5, False),
    ("PCL-5", 32, True),
    ("PCL-5", 33, False),
]

RELIABLE_CHANGE_CASES = [
    ("PHQ-9", 20, 14, True, False),  # -6
    ("PHQ-9", 20, 15, False, False),  # -5
    ("PHQ-9", 10, 16, False, True),  # +6
    ("PHQ-9", 10, 15, False, False),  # +5
    ("GAD-7", 12, 8, True, False),  # -4
    ("GAD-7", 12, 9, False, False),  # -3
    ("GAD-7", 8, 12, False, True),  # +4
    ("GAD-7", 8, 11, False, False),  # +3
    ("PCL-5", 50, 40, True, False),  # -10
    ("PCL-5", 50, 41, False, False),  # -9
    ("PCL-5", 30, 40, False, True),  # +10
    ("PCL-5", 30, 39, False, False),  # +9
]

RECOVERY_CASES = [
    ("PHQ-9", 16, 9, True, True),  # case → non-case, -7
    ("PHQ-9", 12, 9, True, False),  # case → non-case, only -3
    ("PHQ-9", 10, 4, True, True),  # caseness exactly at baseline, -6
    ("PHQ-9", 16, 10, False, False),  # still a case at 10
    ("PHQ-9", 9, 2, None, None),  # not a case at baseline: undefined
    ("GAD-7", 10, 6, True, True),  # -4
    ("GAD-7", 11, 7, True, True),  # below 8 (NHS Talking Therapies caseness) at the end, -4
    ("GAD-7", 11, 9, False, False),  # 9 is still a case at GAD-7 >= 8
    ("GAD-7", 8, 7, True, False),  # caseness 8: a case at 8 (it was not at 10)
    ("GAD-7", 7, 2, None, None),  # below 8 at baseline: undefined
    ("PCL-5", 33, 23, True, True),  # -10
    ("PCL-5", 40, 32, True, False),  # -8
    ("PCL-5", 50, 33, False, False),
]


REMISSION_BASELINE = {"PHQ-9": 20, "GAD-7": 20, "PCL-5": 60}
OTHER_PAIRS = [("PHQ-9", 0, 3), ("PHQ-9", 8, 16)]


def all_pairs() -> list[tuple[str, int, int]]:
    pairs = [(c[0], c[1], c[2]) for c in RESPONSE_CASES + RELIABLE_CHANGE_CASES + RECOVERY_CASES]
    pairs += [(c[0], REMISSION_BASELINE[c[0]], c[1]) for c in REMISSION_CASES]
    return sorted(set(pairs + OTHER_PAIRS))


@pytest.fixture(scope="module")
def pairs_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One database, one patient per (instrument, baseline, endpoint) pair used below: baseline on
    20 February (preparation), endpoint on 1 May (integration)."""
    scores = []
    for instrument, baseline, endpoint in all_pairs():
        pid = pair_id(instrument, baseline, endpoint)
        scores += [(pid, instrument, "2025-02-20", baseline), (pid, instrument, "2025-05-01", endpoint)]
    return build(tmp_path_factory.mktemp("pairs"), scores)


# -------------------------------------------------------------------------------------------- phases


def test_phase_boundaries_from_the_sessions(tmp_path):
    db_file = build(
        tmp_path,
        [
            ("P1", "PHQ-9", "2025-02-20", 20),
            ("P1", "PHQ-9", "2025-03-01", 19),  # first-dose day: still preparation
            ("P1", "PHQ-9", "2025-03-02", 15),
            ("P1", "PHQ-9", "2025-03-29", 12),  # last-dose day: dosing
            ("P1", "PHQ-9", "2025-03-30", 11),
            ("P1", "PHQ-9", "2025-06-21", 8),  # day 84 after the last session: integration
            ("P1", "PHQ-9", "2025-06-22", 7),  # day 85: follow-up
        ],
    )
    rows = query(
        db_file, "SELECT CAST(assessed_on AS VARCHAR), phase FROM scores_phased ORDER BY assessed_on"
    )
    assert rows == [
        ("2025-02-20", "preparation"),
        ("2025-03-01", "preparation"),
        ("2025-03-02", "dosing"),
        ("2025-03-29", "dosing"),
        ("2025-03-30", "integration"),
        ("2025-06-21", "integration"),
        ("2025-06-22", "follow-up"),
    ]


def test_baseline_on_the_first_dose_day_counts_as_preparation(tmp_path):
    db_file = build(
        tmp_path,
        [
            ("P1", "PHQ-9", "2025-02-20", 20),
            ("P1", "PHQ-9", "2025-03-01", 16),
            ("P1", "PHQ-9", "2025-03-10", 12),
        ],
    )
    row = outcome(db_file, "P1", "PHQ-9", "dosing")
    assert (row["baseline"], row["baseline_on"], row["endpoint"], row["change"]) == (
        16,
        dt.date(2025, 3, 1),
        12,
        -4,
    )


def test_explicit_phase_overrides_derivation(tmp_path):
    db_file = build(
        tmp_path,
        [
            ("P1", "PHQ-9", "2025-02-20", 20),
            ("P1", "PHQ-9", "2025-03-05", 18, "preparation"),  # a dosing date, declared preparation
            ("P1", "PHQ-9", "2025-04-10", 9, "follow-up"),  # an integration date, declared follow-up
            ("P1", "PHQ-9", "2025-04-12", 10, "Follow Up"),
        ],
    )
    assert phase_of(db_file, "P1", "PHQ-9", "2025-03-05") == "preparation"
    assert phase_of(db_file, "P1", "PHQ-9", "2025-04-10") == "follow-up"
    assert query(db_file, "SELECT count(*) FROM scores_phased WHERE phase_explicit") == [(3,)]
    follow = outcome(db_file, "P1", "PHQ-9", "follow-up")
    assert (follow["baseline"], follow["endpoint"], follow["change"]) == (18, 10, -8)
    assert outcome(db_file, "P1", "PHQ-9", "integration")["endpoint"] is None


def test_no_sessions_means_preparation(tmp_path):
    db_file = build(
        tmp_path, [("P1", "PHQ-9", "2025-02-20", 20), ("P1", "PHQ-9", "2025-09-01", 5)], sessions={}
    )
    assert phase_of(db_file, "P1", "PHQ-9", "2025-09-01") == "preparation"
    latest = outcome(db_file, "P1", "PHQ-9", "latest")
    assert (latest["baseline"], latest["endpoint"], latest["change"]) == (5, None, None)


def test_integration_window_setting_moves_a_score_to_follow_up(tmp_path):
    db_file = build(tmp_path, [("P1", "PHQ-9", "2025-02-20", 20), ("P1", "PHQ-9", "2025-05-01", 9)])
    assert phase_of(db_file, "P1", "PHQ-9", "2025-05-01") == "integration"  # 33 days after the last session
    with db.session(db_file) as con:
        assert db.get_settings(con)["integration_window_days"] == 84
        con.execute("UPDATE settings SET value = 33 WHERE key = 'integration_window_days'")
        db.bump_data_version(con)  # what every writer does: stored outcomes follow
    assert phase_of(db_file, "P1", "PHQ-9", "2025-05-01") == "integration"
    with db.session(db_file) as con:
        con.execute("UPDATE settings SET value = 32 WHERE key = 'integration_window_days'")
        db.bump_data_version(con)
    assert phase_of(db_file, "P1", "PHQ-9", "2025-05-01") == "follow-up"
    row = outcome(db_file, "P1", "PHQ-9", "follow-up")
    assert (row["endpoint"], row["change"]) == (9, -11)
    assert outcome(db_file, "P1", "PHQ-9", "integration")["endpoint"] is None


def test_two_scores_on_one_day_are_ordered_by_time_not_file_order(tmp_path):
    db_file = build(
        tmp_path,
        [
            ("P1", "PHQ-9", "2025-02-20T17:00", 14),
            ("P1", "PHQ-9", "2025-02-20T09:00", 20),
            ("P1", "PHQ-9", "2025-04-10T18:45:00", 7),
            ("P1", "PHQ-9", "2025-04-10T08:15:00", 12),
        ],
    )
    row = outcome(db_file, "P1", "PHQ-9", "integration")
    assert (row["baseline"], row["endpoint"], row["endpoint_on"], row["change"]) == (
        14,
        7,
        dt.date(2025, 4, 10),
        -7,
    )


def test_date_time_with_offset_counts_on_its_local_date(tmp_path):
    """23:30 at UTC-5 on 29 March is 04:30 UTC on 30 March: it still counts on 29 March (dosing)."""
    db_file = build(
        tmp_path,
        [
            ("P1", "PHQ-9", "2025-03-01T23:30:00-05:00", 20),
            ("P1", "PHQ-9", "2025-03-29T23:30:00-05:00", 10),
            ("P1", "PHQ-9", "2025-03-30T00:30:00+02:00", 9),
        ],
    )
    assert query(
        db_file,
        "SELECT CAST(assessed_on AS VARCHAR), CAST(assessed_at AS VARCHAR), phase FROM scores_phased "
        "ORDER BY assessed_at",
    ) == [
        ("2025-03-01", "2025-03-01 23:30:00", "preparation"),
        ("2025-03-29", "2025-03-29 23:30:00", "dosing"),
        ("2025-03-30", "2025-03-30 00:30:00", "integration"),
    ]
    row = outcome(db_file, "P1", "PHQ-9", "dosing")
    assert (row["baseline"], row["endpoint"], row["endpoint_on"]) == (20, 10, dt.date(2025, 3, 29))


# ----------------------------------------------------------------------------------------- outcomes


def test_every_patient_and_instrument_with_scores_gets_four_rows(tmp_path):
    db_file = build(
        tmp_path,
        [
            ("P1", "PHQ-9", "2025-02-20", 20),
            ("P1", "GAD-7", "2025-05-01", 8),
            ("P2", "PCL-5", "2025-07-01", 40),
        ],
    )
    rows = query(
        db_file,
        "SELECT patient_id, instrument, phase FROM outcomes ORDER BY patient_id, instrument, phase_order",
    )
    phases = ["dosing", "integration", "follow-up", "latest"]
    assert rows == (
        [("P1", "GAD-7", p) for p in phases]
        + [("P1", "PHQ-9", p) for p in phases]
        + [("P2", "PCL-5", p) for p in phases]
    )


def test_phase_endpoint_is_the_last_score_in_that_phase_and_latest_the_last_after_baseline(tmp_path):
    db_file = build(
        tmp_path,
        [
            ("P1", "PHQ-9", "2025-02-01", 22),
            ("P1", "PHQ-9", "2025-02-20", 20),  # baseline: the last preparation score
            ("P1", "PHQ-9", "2025-03-05", 17),
            ("P1", "PHQ-9", "2025-03-20", 15),  # dosing endpoint
            ("P1", "PHQ-9", "2025-04-10", 11),
            ("P1", "PHQ-9", "2025-06-01", 9),  # integration endpoint
            ("P1", "PHQ-9", "2025-08-01", 6),
            ("P1", "PHQ-9", "2025-09-01", 8),  # follow-up endpoint and latest
        ],
    )
    got = {p: outcome(db_file, "P1", "PHQ-9", p) for p in ("dosing", "integration", "follow-up", "latest")}
    assert {p: (r["baseline"], r["endpoint"], r["endpoint_on"], r["change"]) for p, r in got.items()} == {
        "dosing": (20, 15, dt.date(2025, 3, 20), -5),
        "integration": (20, 9, dt.date(2025, 6, 1), -11),
        "follow-up": (20, 8, dt.date(2025, 9, 1), -12),
        "latest": (20, 8, dt.date(2025, 9, 1), -12),
    }
    assert got["latest"]["pct_change"] == pytest.approx(-60.0)


def test_latest_is_the_last_score_outside_preparation_when_a_phase_is_missing(tmp_path):
    db_file = build(
        tmp_path,
        [
            ("P1", "GAD-7", "2025-02-20", 15),
            ("P1", "GAD-7", "2025-03-10", 9),
            ("P1", "GAD-7", "2025-04-01", 6),
        ],
    )
    latest = outcome(db_file, "P1", "GAD-7", "latest")
    assert (latest["endpoint"], latest["endpoint_on"], latest["change"]) == (6, dt.date(2025, 4, 1), -9)
    follow = outcome(db_file, "P1", "GAD-7", "follow-up")
    assert follow["endpoint"] is None and all(follow[m] is None for m in CHANGE_METRICS + ("remission",))


def test_baseline_zero_leaves_pct_change_and_response_empty(pairs_db):
    row = two_point(pairs_db, "PHQ-9", 0, 3)
    assert (row["change"], row["pct_change"], row["response"]) == (3, None, None)
    # Baseline 0 is below the clinical range: remission and recovery are undefined (they "remitted" before).
    assert (row["remission"], row["reliable_improvement"], row["reliable_deterioration"]) == (
        None,
        False,
        False,
    )
    assert (row["recovery"], row["reliable_recovery"]) == (None, None)


def test_no_baseline_leaves_every_change_metric_empty(tmp_path):
    db_file = build(tmp_path, [("P1", "PHQ-9", "2025-03-10", 20), ("P1", "PHQ-9", "2025-05-01", 8)])
    for phase in ("dosing", "integration", "latest"):
        row = outcome(db_file, "P1", "PHQ-9", phase)
        assert row["baseline"] is None and row["endpoint"] is not None
        assert {m: row[m] for m in CHANGE_METRICS} == dict.fromkeys(CHANGE_METRICS)


def test_missing_endpoint_leaves_every_outcome_empty(tmp_path):
    """Baseline below caseness and no follow-up score: recovery is undefined, not false."""
    db_file = build(tmp_path, [("P1", "PHQ-9", "2025-02-20", 8), ("P1", "PHQ-9", "2025-03-10", 4)])
    row = outcome(db_file, "P1", "PHQ-9", "follow-up")
    assert row["endpoint"] is None
    assert {m: row[m] for m in CHANGE_METRICS + ("remission",)} == dict.fromkeys(
        CHANGE_METRICS + ("remission",)
    )


@pytest.mark.parametrize(
    ("instrument", "baseline", "endpoint", "response"),
    RESPONSE_CASES,
)
def test_response_boundary(pairs_db, instrument, baseline, endpoint, response):
    row = two_point(pairs_db, instrument, baseline, endpoint)
    assert row["response"] is response
    assert row["pct_change"] == pytest.approx(100 * (endpoint - baseline) / baseline)


@pytest.mark.parametrize(
    ("instrument", "endpoint", "remission"),
    REMISSION_CASES,
)
def test_remission_boundary(pairs_db, instrument, endpoint, remission):
    baseline = REMISSION_BASELINE[instrument]
    assert two_point(pairs_db, instrument, baseline, endpoint)["remission"] is remission


@pytest.mark.parametrize(
    ("instrument", "baseline", "endpoint", "improvement", "deterioration"),
    RELIABLE_CHANGE_CASES,
)
def test_reliable_change_boundary(pairs_db, instrument, baseline, endpoint, improvement, deterioration):
    row = two_point(pairs_db, instrument, baseline, endpoint)
    assert row["change"] == endpoint - baseline
    assert (row["reliable_improvement"], row["reliable_deterioration"]) == (improvement, deterioration)


def test_deterioration_outcome_row(pairs_db):
    row = two_point(pairs_db, "PHQ-9", 8, 16)
    assert {
        k: row[k]
        for k in (
            "change",
            "response",
            "remission",
            "reliable_improvement",
            "reliable_deterioration",
            "recovery",
            "reliable_recovery",
        )
    } == {
        "change": 8,
        "response": False,
        "remission": None,  # baseline 8 is below the clinical range (10)
        "reliable_improvement": False,
        "reliable_deterioration": True,
        "recovery": None,
        "reliable_recovery": None,
    }
    assert row["pct_change"] == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("instrument", "baseline", "endpoint", "recovery", "reliable_recovery"),
    RECOVERY_CASES,
)
def test_recovery_and_reliable_recovery(
    pairs_db, instrument, baseline, endpoint, recovery, reliable_recovery
):
    row = two_point(pairs_db, instrument, baseline, endpoint)
    assert (row["recovery"], row["reliable_recovery"]) == (recovery, reliable_recovery)


def test_phq9_item_9_above_zero_is_the_safety_flag(tmp_path):
    db_file = tmp_path / "kap.duckdb"
    header = SCORES_HEADER + "," + ",".join(f"item_{n}" for n in range(1, 10))
    rows = [
        ("P1", "PHQ-9", "2025-02-20", None, 1, 1, 1, 1, 1, 1, 1, 1, 0),
        ("P1", "PHQ-9", "2025-03-10", None, 1, 1, 1, 1, 1, 1, 1, 1, 1),
        ("P1", "PHQ-9", "2025-04-10", 12, None, None, None, None, None, None, None, None, None),
        ("P1", "GAD-7", "2025-02-20", None, 3, 3, 3, 3, 3, 3, 3, None, None),
    ]
    load(db_file, write_text(tmp_path / "scores.csv", csv_lines(header, rows)))
    got = query(
        db_file,
        "SELECT instrument, CAST(assessed_on AS VARCHAR), safety_flag FROM scores_phased ORDER BY 1, 2",
    )
    assert got == [
        ("GAD-7", "2025-02-20", False),
        ("PHQ-9", "2025-02-20", False),
        ("PHQ-9", "2025-03-10", True),
        ("PHQ-9", "2025-04-10", None),  # a total alone: item 9 unknown
    ]


# ------------------------------------------------------------------------------------ outcomes frame


def test_outcomes_frame_filters_and_write_csv(tmp_path):
    db_file = build(
        tmp_path,
        [
            ("P1", "PHQ-9", "2025-02-20", 20),
            ("P1", "GAD-7", "2025-02-20", 0),
            ("P2", "PHQ-9", "2025-05-01", 9),
        ],
    )
    with db.reader(db_file) as con:
        assert list(outcomes.outcomes_frame(con).columns) == list(outcomes.OUTCOME_COLUMNS)
        assert len(outcomes.outcomes_frame(con)) == 12
        frame = outcomes.outcomes_frame(con, instrument="phq9")
        assert sorted(set(frame["instrument"])) == ["PHQ-9"] and len(frame) == 8
        assert len(outcomes.outcomes_frame(con, patient_id="P2")) == 4
        n = outcomes.write_outcomes_csv(con, tmp_path / "out" / "o.csv", "GAD-7")
    assert n == 4
    lines = (tmp_path / "out" / "o.csv").read_text().splitlines()
    assert lines[0] == ",".join(outcomes.OUTCOME_COLUMNS)
    assert lines[1:] == [
        f"P1,GAD-7,{p},0,,,,,,,,,," for p in ("dosing", "integration", "follow-up", "latest")
    ]


def test_empty_database_gives_an_outcomes_file_with_just_the_header(tmp_path):
    db_file = tmp_path / "kap.duckdb"
    with db.session(db_file):
        pass
    with db.reader(db_file) as con:
        assert outcomes.write_outcomes_csv(con, tmp_path / "o.csv") == 0
    assert (tmp_path / "o.csv").read_text().splitlines() == [",".join(outcomes.OUTCOME_COLUMNS)]


def test_remission_is_undefined_for_a_baseline_below_the_clinical_range(pairs_db):
    # PHQ-9 9 -> 2: below caseness (10) at baseline. It used to count as a remission.
    row = two_point(pairs_db, "PHQ-9", 9, 2)
    assert (row["remission"], row["recovery"], row["response"]) == (None, None, True)


def test_baseline_is_at_most_baseline_max_days_before_the_first_dose(tmp_path):
    # P1 first dose 2025-03-01 (sessions from build()). A score 410 days before is not a baseline; with a
    # score 90 days before, that one is (default baseline_max_days 90); 91 days before is not.
    for sub in ("far", "edge", "over"):
        (tmp_path / sub).mkdir()
    far = build(tmp_path / "far", [("P1", "PHQ-9", "2024-01-16", 20), ("P1", "PHQ-9", "2025-03-10", 8)])
    row = outcome(far, "P1", "PHQ-9", "dosing")
    assert (row["baseline"], row["change"], row["response"]) == (None, None, None)
    edge = build(
        tmp_path / "edge",
        [
            ("P1", "PHQ-9", "2024-11-30", 25),  # 91 days before
            ("P1", "PHQ-9", "2024-12-01", 20),  # 90 days before
            ("P1", "PHQ-9", "2025-03-10", 8),
        ],
    )
    row = outcome(edge, "P1", "PHQ-9", "dosing")
    assert (row["baseline"], row["change"]) == (20, -12)
    just_over = build(
        tmp_path / "over", [("P1", "PHQ-9", "2024-11-30", 25), ("P1", "PHQ-9", "2025-03-10", 8)]
    )
    assert outcome(just_over, "P1", "PHQ-9", "dosing")["baseline"] is None
