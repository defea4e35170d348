"""The settings page (AppTest): values in force, validation, save, reset; a change shows on every page.

Writing tests use their own database (a 60-patient synthetic cohort) in tmp_path.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from kapdata import cohort, db, ingest, sample
from kapdata import settings as ks

from .conftest import ROOT


@pytest.fixture()
def own_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    files = sample.write_sample(60, tmp_path / "csv", seed=4)
    path = tmp_path / "kap.duckdb"
    ingest.load_files(files, path)
    monkeypatch.setenv("KAP_DB", str(path))
    monkeypatch.chdir(ROOT)
    return path


def settings_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/settings.py").run()
    assert not at.exception, at.exception
    return at


def field(at: AppTest, name: str):
    """The number input for ``integration_window_days`` or ``PHQ-9_response_pct``."""
    return next(n for n in at.number_input if n.key.endswith("_" + name))


def save(at: AppTest) -> AppTest:
    next(b for b in at.button if b.label == "Save settings").click().run()
    assert not at.exception, at.exception
    return at


def phq9_latest_response(path: Path) -> float:
    with db.reader(path) as con:
        row = next(r for r in cohort.summary(con) if r["instrument"] == "PHQ-9" and r["phase"] == "latest")
    return row["rates"]["completers"]["response"]["rate"]


def test_settings_page_shows_the_values_in_force(app_env: Path) -> None:
    at = settings_page()
    assert field(at, "integration_window_days").value == 84
    assert field(at, "min_cell").value == 11
    assert field(at, "PHQ-9_response_pct").value == 50
    assert field(at, "PCL-5_caseness").value == 33
    assert field(at, "GAD-7_reliable_change").value == 4
    assert len(at.number_input) == len(ks.GENERAL) + 3 * len(ks.THRESHOLDS)
    assert any(c.value == "Every setting is at its default." for c in at.caption)


def test_changing_response_rule_changes_the_overview_number(own_db: Path) -> None:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60).run()
    shown_before = next(m.value for m in at.metric if m.label == "Response")
    assert shown_before == f"{100 * phq9_latest_response(own_db):.0f}%"

    at.switch_page("pages/settings.py").run()
    field(at, "PHQ-9_response_pct").set_value(20)
    save(at)
    assert at.success[0].value == "Saved: PHQ-9 response threshold: 50 → 20."
    assert ks.load(own_db).thresholds["PHQ-9"]["response_pct"] == 20

    at.switch_page("pages/overview.py").run()
    shown_after = next(m.value for m in at.metric if m.label == "Response")
    assert shown_after == f"{100 * phq9_latest_response(own_db):.0f}%"
    assert shown_after != shown_before


def test_changing_the_integration_window_is_saved_and_listed_as_a_difference(own_db: Path) -> None:
    at = settings_page()
    field(at, "integration_window_days").set_value(30)
    save(at)
    assert ks.load(own_db).general["integration_window_days"] == 30
    assert field(at, "integration_window_days").value == 30
    diffs = at.dataframe[0].value
    assert diffs.values.tolist() == [["Integration window", 30, 84]]


def test_invalid_values_are_refused_with_messages_and_nothing_saved(own_db: Path) -> None:
    at = settings_page()
    field(at, "integration_window_days").set_value(0)
    field(at, "PHQ-9_remission_below").set_value(12)
    field(at, "overdue_days").set_value(21)
    save(at)
    assert at.error[0].value == (
        "Nothing was saved:\n\n"
        "- Integration window must be a whole number from 1 to 365 days (got 0).\n"
        "- PHQ-9 remission (endpoint below 12) must not reach into the clinical range (from 10): a patient "
        "in remission would still be a case."
    )
    assert ks.load(own_db).general == ks.defaults().general
    assert ks.load(own_db).thresholds == ks.defaults().thresholds


def test_reset_needs_confirmation_and_restores_the_defaults(own_db: Path) -> None:
    ks.update(own_db, general={"min_cell": 5}, thresholds={"GAD-7": {"response_pct": 40}})
    at = settings_page()
    assert field(at, "min_cell").value == 5
    reset = at.button(key="settings_reset")
    assert reset.disabled
    next(c for c in at.checkbox if c.label.startswith("Yes, put every setting")).check().run()
    at.button(key="settings_reset").click().run()
    assert not at.exception, at.exception
    assert at.success[0].value == (
        "Reset to defaults: Smallest reportable group: 5 → 11; GAD-7 response threshold: 40 → 50."
    )
    current = ks.load(own_db)
    assert (current.general, current.thresholds) == (ks.defaults().general, ks.defaults().thresholds)
    assert field(at, "min_cell").value == 11
    assert field(at, "GAD-7_response_pct").value == 50
