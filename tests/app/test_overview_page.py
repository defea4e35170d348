from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from kapdata import cohort, db
from kapdata import instruments as reg

from .conftest import ROOT, counts


def run_app() -> AppTest:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
    return at.run()


def test_overview_shows_database_counts(app_env: Path) -> None:
    at = run_app()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    expected = counts(app_env)
    assert metrics["Patients"] == f"{expected['patients']:,}"
    assert metrics["Questionnaires"] == f"{expected['scores']:,}"
    assert metrics["Dosing sessions"] == f"{expected['sessions']:,}"
    # The local administrator (no accounts) is told which database file the app reads; a director is not.
    assert any(f"Database: `{app_env}`" in c.value for c in at.caption)


def test_overview_headline_matches_summary(app_env: Path) -> None:
    at = run_app()
    with db.reader(app_env) as con:
        latest = [r for r in cohort.summary(con) if r["phase"] == "latest"]
    latest.sort(key=lambda r: list(reg.BY_CODE).index(r["instrument"]))
    responses = [m.value for m in at.metric if m.label == "Response"]
    assert len(responses) == len(latest) > 0
    for shown, row in zip(responses, latest, strict=True):
        rate = row["rates"]["completers"]["response"]["rate"]
        assert shown == f"{100 * rate:.0f}%"


def test_overview_on_empty_database_says_so(tmp_path: Path, monkeypatch) -> None:
    empty = tmp_path / "empty.duckdb"
    with db.session(empty):
        pass
    monkeypatch.setenv("KAP_DB", str(empty))
    # No sample folder: the app must still open, with zero counts and a hint.
    monkeypatch.setattr("kapdata.bootstrap.SAMPLE_DIR", tmp_path / "nothing-here")
    at = run_app()
    assert not at.exception, at.exception
    assert {m.label: m.value for m in at.metric}["Patients"] == "0"
    assert any("No outcomes yet" in i.value for i in at.info)


def test_overview_tiles_say_which_patients_each_rate_is_on(app_env: Path) -> None:
    at = run_app()
    with db.reader(app_env) as con:
        n_remission, n_response, completers = con.execute(
            """SELECT count(*) FILTER (WHERE o.baseline >= i.caseness),
                      count(*) FILTER (WHERE o.baseline > 0), count(*)
               FROM outcomes o JOIN instruments i ON i.code = o.instrument
               WHERE o.instrument = 'PHQ-9' AND o.phase = 'latest' AND o.endpoint IS NOT NULL"""
        ).fetchone()
    captions = [c.value for c in at.caption]
    remission = next(c for c in captions if c.endswith("n: completers with a baseline ≥ 10"))
    assert f"/{n_remission} ·" in remission
    response = next(c for c in captions if c.endswith("n: completers with a baseline above 0"))
    assert f"/{n_response} ·" in response
    assert n_remission < completers  # the mismatch the caption explains
    assert any(
        c.startswith(f"{completers:,} completers of ") and "n is the completers the rate is defined for" in c
        for c in captions
    )
