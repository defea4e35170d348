"""Settings (kapdata.settings): validation, one-transaction updates, reset, and the numbers they change.

``base_db`` (tests/conftest.py): patient B1, dosing sessions 2025-03-01 and 2025-03-29, PHQ-9 18 on
2025-02-20 (baseline) and 9 on 2025-04-10 (12 days after the last session: integration under the default
84-day window; a 50% reduction: response under the default 50% rule).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from kapdata import db
from kapdata import settings as ks

from .conftest import REPO, outcome, phase_of, query, run_cli, snapshot


def stored(db_file: Path) -> tuple[list[tuple], list[tuple]]:
    return (
        query(db_file, "SELECT key, value FROM settings ORDER BY key"),
        query(db_file, "SELECT * FROM instruments ORDER BY code"),
    )


def test_defaults_are_design_values() -> None:
    d = ks.defaults()
    assert d.general == {
        "integration_window_days": 84,
        "overdue_days": 28,
        "bp_sys_threshold": 160,
        "bp_dia_threshold": 100,
        "min_cell": 11,
        "baseline_max_days": 90,
        "dosing_complete_sessions": 4,
        "k_anonymity_min": 5,
    }
    assert d.thresholds == {
        "PHQ-9": {"caseness": 10, "response_pct": 50, "remission_below": 5, "reliable_change": 6},
        "GAD-7": {"caseness": 8, "response_pct": 50, "remission_below": 5, "reliable_change": 4},
        "PCL-5": {"caseness": 33, "response_pct": 30, "remission_below": 33, "reliable_change": 10},
    }
    assert ks.validate(d) == []


def test_new_database_reads_the_defaults(base_db: Path) -> None:
    current = ks.load(base_db)
    assert current.general == ks.defaults().general
    assert current.thresholds == ks.defaults().thresholds
    assert current.changed_at is None


def test_shorter_integration_window_moves_a_score_to_follow_up(base_db: Path) -> None:
    assert phase_of(base_db, "B1", "PHQ-9", "2025-04-10 00:00:00") == "integration"
    changes = ks.update(base_db, general={"integration_window_days": 10})
    assert [str(c) for c in changes] == ["Integration window: 84 → 10"]
    assert phase_of(base_db, "B1", "PHQ-9", "2025-04-10 00:00:00") == "follow-up"
    assert outcome(base_db, "B1", "PHQ-9", "follow-up")["endpoint"] == 9
    assert outcome(base_db, "B1", "PHQ-9", "integration")["endpoint"] is None


def test_window_exactly_reaching_the_score_keeps_it_in_integration(base_db: Path) -> None:
    ks.update(base_db, general={"integration_window_days": 12})
    assert phase_of(base_db, "B1", "PHQ-9", "2025-04-10 00:00:00") == "integration"
    ks.update(base_db, general={"integration_window_days": 11})
    assert phase_of(base_db, "B1", "PHQ-9", "2025-04-10 00:00:00") == "follow-up"


def test_stricter_response_rule_turns_a_response_off(base_db: Path) -> None:
    assert outcome(base_db, "B1", "PHQ-9", "latest")["response"] is True
    ks.update(base_db, thresholds={"PHQ-9": {"response_pct": 51}})
    assert outcome(base_db, "B1", "PHQ-9", "latest")["response"] is False
    # Another scale's rule is untouched.
    assert ks.load(base_db).thresholds["GAD-7"]["response_pct"] == 50


def test_remission_and_reliable_change_thresholds_change_the_flags(base_db: Path) -> None:
    row = outcome(base_db, "B1", "PHQ-9", "latest")
    assert (row["remission"], row["reliable_improvement"], row["recovery"]) == (False, True, True)
    ks.update(base_db, thresholds={"phq9": {"remission_below": 10, "reliable_change": 10, "caseness": 20}})
    row = outcome(base_db, "B1", "PHQ-9", "latest")
    # The baseline is now below the clinical range (20): remission and recovery are undefined, not true/false.
    assert (row["remission"], row["reliable_improvement"], row["recovery"]) == (None, False, None)
    ks.update(base_db, thresholds={"phq9": {"caseness": 10}})
    row = outcome(base_db, "B1", "PHQ-9", "latest")
    assert (row["remission"], row["reliable_improvement"], row["recovery"]) == (True, False, True)


def test_cli_outcomes_reflect_the_settings_in_the_database(base_db: Path, tmp_path: Path) -> None:
    ks.update(base_db, thresholds={"PHQ-9": {"response_pct": 60}})
    out = tmp_path / "outcomes.csv"
    proc = run_cli("outcomes", "--db", str(base_db), "--out", str(out), cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    with out.open(newline="") as f:
        rows = {(r["instrument"], r["phase"]): r for r in csv.DictReader(f) if r["patient_id"] == "B1"}
    assert rows[("PHQ-9", "latest")]["response"] == "false"
    ks.reset(base_db)
    proc = run_cli("outcomes", "--db", str(base_db), "--out", str(out), cwd=REPO)
    with out.open(newline="") as f:
        rows = {(r["instrument"], r["phase"]): r for r in csv.DictReader(f) if r["patient_id"] == "B1"}
    assert rows[("PHQ-9", "latest")]["response"] == "true"


def test_reset_restores_every_default(base_db: Path) -> None:
    before = stored(base_db)
    ks.update(
        base_db,
        general={"integration_window_days": 30, "min_cell": 5, "overdue_days": 14},
        thresholds={"PCL-5": {"caseness": 31, "remission_below": 31}, "GAD-7": {"reliable_change": 5}},
    )
    assert stored(base_db) != before
    changes = ks.reset(base_db)
    assert {c.key for c in changes} == {
        "integration_window_days",
        "min_cell",
        "overdue_days",
        "PCL-5.caseness",
        "PCL-5.remission_below",
        "GAD-7.reliable_change",
    }
    assert stored(base_db) == before
    assert phase_of(base_db, "B1", "PHQ-9", "2025-04-10 00:00:00") == "integration"
    assert ks.reset(base_db) == []


@pytest.mark.parametrize(
    ("general", "thresholds", "message"),
    [
        (
            {"integration_window_days": 0},
            None,
            "Integration window must be a whole number from 1 to 365 days (got 0).",
        ),
        (
            {"integration_window_days": 366},
            None,
            "Integration window must be a whole number from 1 to 365 days (got 366).",
        ),
        (
            {"integration_window_days": 12.5},
            None,
            "Integration window must be a whole number from 1 to 365 days (got 12.5).",
        ),
        (
            {"overdue_days": "0"},
            None,
            "Assessment overdue after must be a whole number from 1 to 365 days (got 0).",
        ),
        (
            {"overdue_days": "soon"},
            None,
            "Assessment overdue after must be a whole number from 1 to 365 days (got 'soon').",
        ),
        (
            {"min_cell": True},
            None,
            "Smallest reportable group must be a whole number from 1 to 100 patients (got True).",
        ),
        (
            {"min_cell": 101},
            None,
            "Smallest reportable group must be a whole number from 1 to 100 patients (got 101).",
        ),
        (
            {"bp_sys_threshold": 140, "bp_dia_threshold": 140},
            None,
            "The diastolic blood-pressure threshold (140 mmHg) must be below the systolic one (140 mmHg).",
        ),
        (
            None,
            {"PHQ-9": {"response_pct": 0}},
            "PHQ-9 response threshold must be a whole number from 1% to 100% (got 0).",
        ),
        (
            None,
            {"PHQ-9": {"response_pct": 101}},
            "PHQ-9 response threshold must be a whole number from 1% to 100% (got 101).",
        ),
        (
            None,
            {"GAD-7": {"reliable_change": 22}},
            "GAD-7 reliable change index must be a whole number from 1 to 21 points (got 22).",
        ),
        (
            None,
            {"PCL-5": {"remission_below": 81}},
            "PCL-5 remission threshold must be a whole number from 1 to 80 points (got 81).",
        ),
        (
            None,
            {"PHQ-9": {"caseness": -1}},
            "PHQ-9 clinical-range cutoff must be a whole number from 1 to 27 points (got -1).",
        ),
        (
            None,
            {"PHQ-9": {"remission_below": 11}},
            "PHQ-9 remission (endpoint below 11) must not reach into the clinical range (from 10): a patient "
            "in remission would still be a case.",
        ),
        (
            {"window": 30},
            None,
            "There is no setting 'window'; the settings are integration_window_days, "
            "overdue_days, bp_sys_threshold, bp_dia_threshold, baseline_max_days, dosing_complete_sessions, "
            "min_cell, k_anonymity_min.",
        ),
        (None, {"BDI": {"caseness": 10}}, "Unknown scale 'BDI'; the scales are PHQ-9, GAD-7, PCL-5."),
        (
            None,
            {"PHQ-9": {"response": 40}},
            "A scale has no threshold 'response'; they are caseness, response_pct, remission_below, "
            "reliable_change.",
        ),
    ],
)
def test_invalid_value_is_refused_with_a_clear_message_and_nothing_saved(
    base_db: Path, general: dict | None, thresholds: dict | None, message: str
) -> None:
    before = snapshot(base_db), stored(base_db)
    with pytest.raises(ks.InvalidSettings) as info:
        ks.update(base_db, general=general, thresholds=thresholds)
    assert [str(p) for p in info.value.problems] == [message]
    assert (snapshot(base_db), stored(base_db)) == before


def test_one_bad_value_among_good_ones_saves_none_of_them(base_db: Path) -> None:
    before = stored(base_db)
    with pytest.raises(ks.InvalidSettings):
        ks.update(
            base_db,
            general={"integration_window_days": 30},
            thresholds={"PHQ-9": {"response_pct": 40}, "GAD-7": {"caseness": 0}},
        )
    assert stored(base_db) == before


def test_boundaries_and_whole_number_texts_are_accepted(base_db: Path) -> None:
    ks.update(
        base_db,
        general={"integration_window_days": 1, "overdue_days": "365", "min_cell": 100.0},
        thresholds={
            "GAD-7": {"response_pct": 100, "reliable_change": 21, "caseness": 21, "remission_below": 1}
        },
    )
    current = ks.load(base_db)
    assert (current.general["integration_window_days"], current.general["overdue_days"]) == (1, 365)
    assert current.general["min_cell"] == 100
    assert current.thresholds["GAD-7"] == {
        "caseness": 21,
        "response_pct": 100,
        "remission_below": 1,
        "reliable_change": 21,
    }


def test_a_failure_mid_write_leaves_every_setting_as_it_was(base_db: Path, monkeypatch) -> None:
    before = stored(base_db)

    def broken(con) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(db, "bump_data_version", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        ks.update(base_db, general={"integration_window_days": 30}, thresholds={"PHQ-9": {"caseness": 12}})
    assert stored(base_db) == before


def test_a_change_bumps_the_data_version_and_records_only_the_time(base_db: Path) -> None:
    version = query(base_db, "SELECT value FROM meta WHERE key = 'data_version'")[0][0]
    meta_before = {k for (k,) in query(base_db, "SELECT key FROM meta")}
    ks.update(base_db, general={"overdue_days": 21})
    assert int(query(base_db, "SELECT value FROM meta WHERE key = 'data_version'")[0][0]) == int(version) + 1
    assert {k for (k,) in query(base_db, "SELECT key FROM meta")} - meta_before == {"settings_changed_at"}
    assert ks.load(base_db).changed_at is not None


def test_saving_unchanged_values_writes_nothing(base_db: Path) -> None:
    before = snapshot(base_db)
    assert ks.update(base_db, general={"integration_window_days": 84}) == []
    assert snapshot(base_db) == before
    assert ks.load(base_db).changed_at is None


def test_as_dict_lists_every_value_for_a_manifest(base_db: Path) -> None:
    ks.update(base_db, general={"min_cell": 5})
    doc = ks.load(base_db).as_dict()
    assert doc["settings"]["min_cell"] == 5
    assert doc["instruments"]["PCL-5"]["response_pct"] == 30
    assert set(doc) == {"settings", "instruments", "changed_at"}


def test_differences_from_defaults_name_old_and_new(base_db: Path) -> None:
    ks.update(base_db, thresholds={"PCL-5": {"caseness": 31, "remission_below": 31}})
    diffs = ks.differences_from_defaults(ks.load(base_db))
    assert [str(d) for d in diffs] == [
        "PCL-5 clinical-range cutoff: 33 → 31",
        "PCL-5 remission threshold: 33 → 31",
    ]


def test_parse_assignments_splits_general_and_scale_settings() -> None:
    general, thresholds = ks.parse_assignments(
        ["integration_window_days=60", "PHQ-9.response_pct = 40", "phq9.caseness=12"]
    )
    assert general == {"integration_window_days": "60"}
    assert thresholds == {"PHQ-9": {"response_pct": "40"}, "phq9": {"caseness": "12"}}
    with pytest.raises(ks.InvalidSettings, match="expected NAME=VALUE"):
        ks.parse_assignments(["integration_window_days"])


def test_describe_marks_changed_values() -> None:
    current = ks.defaults()
    current.general["min_cell"] = 5
    lines = ks.describe(current).splitlines()
    assert "min_cell                                 5       11  patients  (changed)" in lines
    assert "PHQ-9.response_pct                      50       50  %" in lines
