"""First run: the bundled demo is loaded with its dates moved so that it ends today, and looks alive."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from kapdata import bootstrap, db, ingest, patient, sample

from .conftest import run_cli

TODAY = dt.date(2027, 3, 15)  # well after the committed sample's last day (sample.AS_OF_DEFAULT)


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("demo") / "kap.duckdb"
    return path, bootstrap.ensure_database(path, today=TODAY)


def test_committed_sample_is_the_seed_0_cohort(tmp_path: Path) -> None:
    written = sample.write_sample(300, tmp_path, seed=0)
    for path in written:
        assert path.read_bytes() == (bootstrap.SAMPLE_DIR / path.name).read_bytes(), path.name


def test_bundled_demo_ends_today_with_every_date_moved_by_the_same_days(demo: tuple[Path, str]) -> None:
    path, message = demo
    days = (TODAY - sample.AS_OF_DEFAULT).days  # the committed sample ends on its default day
    assert message == (
        f"{path}: created and loaded 6968 sample rows from {bootstrap.SAMPLE_DIR} "
        f"(dates moved by +{days} days to end on 2027-03-15)"
    )
    sessions = pd.read_csv(bootstrap.SAMPLE_DIR / "sessions.csv", dtype={"patient_id": str})
    scores = pd.read_csv(bootstrap.SAMPLE_DIR / "scores.csv", dtype={"patient_id": str})
    with db.reader(path) as con:
        got_sessions = con.execute("SELECT patient_id, session_date FROM sessions ORDER BY ALL").df()
        got_scores = con.execute("SELECT patient_id, instrument, assessed_on FROM scores ORDER BY ALL").df()
        last = con.execute(
            "SELECT greatest((SELECT max(session_date) FROM sessions), (SELECT max(assessed_on) FROM scores))"
        ).fetchone()
    assert last == (TODAY,)
    shift = pd.Timedelta(days=days)
    want = sessions.assign(session_date=pd.to_datetime(sessions.session_date) + shift)
    want = want[["patient_id", "session_date"]].sort_values(["patient_id", "session_date"], ignore_index=True)
    pd.testing.assert_frame_equal(got_sessions.astype(want.dtypes.to_dict()), want)
    want = scores.assign(assessed_on=pd.to_datetime(scores.assessed_on) + shift)
    want = want[["patient_id", "instrument", "assessed_on"]].sort_values(
        ["patient_id", "instrument", "assessed_on"], ignore_index=True
    )
    pd.testing.assert_frame_equal(got_scores.astype(want.dtypes.to_dict()), want)


def test_bundled_demo_opened_today_has_patients_in_every_current_phase(demo: tuple[Path, str]) -> None:
    path, _ = demo
    with db.reader(path) as con:
        caseload = patient.caseload(con, today=TODAY)
        row = con.execute(
            """SELECT avg(CAST(response AS INTEGER)), avg(CAST(remission AS INTEGER)) FROM outcomes
               WHERE phase = 'latest' AND instrument = 'PHQ-9'
                 AND baseline IS NOT NULL AND endpoint IS NOT NULL"""
        ).fetchone()
    counts = caseload.phase.value_counts()
    assert set(counts.index) == {"preparation", "dosing", "integration", "follow-up"}
    assert counts.min() >= 10
    in_integration = caseload[caseload.phase == "integration"]
    assert in_integration.flag_overdue.mean() < 0.2  # not everyone overdue
    assert row is not None
    assert abs(100 * row[0] - 53.6) <= 6 and abs(100 * row[1] - 28.9) <= 6


def test_demo_loaded_on_a_day_before_the_sample_ended_moves_back(tmp_path: Path) -> None:
    path = tmp_path / "kap.duckdb"
    early = dt.date(2026, 6, 1)
    message = bootstrap.ensure_database(path, today=early)
    assert message.endswith(
        f"(dates moved by {(early - sample.AS_OF_DEFAULT).days:+d} days to end on 2026-06-01)"
    )
    with db.reader(path) as con:
        row = con.execute(
            "SELECT (SELECT max(session_date) FROM sessions), (SELECT max(assessed_on) FROM scores)"
        ).fetchone()
    assert row == (early, early)


def test_shift_files_moves_only_the_date_and_keeps_times_and_other_columns(tmp_path: Path) -> None:
    src = _write(
        tmp_path / "in",
        "scores.csv",
        "patient_id,instrument,Assessed On,total,phase\n"
        "K1,PHQ-9,2026-01-31T09:30:00+01:00,12,\n"
        "K1,PHQ-9,2026-02-28,10,dosing\n"
        'K2,"GAD-7",2024-02-28 23:59,"7",\n',
    )
    other = _write(tmp_path / "in", "patients.csv", "patient_id,clinic\nK1,Northside\n")
    out = bootstrap.shift_files([src, other], 1, tmp_path / "out")
    assert [p.name for p in out] == ["scores.csv", "patients.csv"]
    shifted = pd.read_csv(out[0], dtype=str, keep_default_na=False)
    assert shifted.columns.tolist() == ["patient_id", "instrument", "Assessed On", "total", "phase"]
    assert shifted["Assessed On"].tolist() == ["2026-02-01T09:30:00+01:00", "2026-03-01", "2024-02-29 23:59"]
    assert shifted.total.tolist() == ["12", "10", "7"]
    assert shifted.phase.tolist() == ["", "dosing", ""]
    assert pd.read_csv(out[1], dtype=str).to_dict("list") == {"patient_id": ["K1"], "clinic": ["Northside"]}
    back = bootstrap.shift_files([src], -31, tmp_path / "back")
    assert pd.read_csv(back[0], dtype=str)["Assessed On"].tolist() == [
        "2025-12-31T09:30:00+01:00",
        "2026-01-28",
        "2024-01-28 23:59",
    ]


def test_last_date_is_the_latest_session_or_score_date(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    files = [
        _write(folder, "patients.csv", "patient_id\nK1\n"),
        _write(folder, "sessions.csv", "patient_id,session_date\nK1,2026-03-02\nK1,2026-03-09\n"),
        _write(
            folder, "scores.csv", "patient_id,instrument,assessed_on,total\nK1,PHQ-9,2026-03-10T08:00,9\n"
        ),
    ]
    assert bootstrap.last_date(files) == dt.date(2026, 3, 10)
    assert bootstrap.last_date(files[:2]) == dt.date(2026, 3, 9)
    assert bootstrap.last_date(files[:1]) is None


def _small_sample(folder: Path) -> None:
    _write(folder, "patients.csv", "patient_id,clinic\nK1,Northside\n")
    _write(folder, "sessions.csv", "patient_id,session_date\nK1,2026-03-02\n")
    _write(folder, "scores.csv", "patient_id,instrument,assessed_on,total\nK1,PHQ-9,2026-03-01T08:15,15\n")


def test_an_explicit_sample_folder_is_loaded_as_it_is_unless_asked(tmp_path: Path) -> None:
    _small_sample(tmp_path / "s")
    path = tmp_path / "a.duckdb"
    message = bootstrap.ensure_database(path, tmp_path / "s", today=TODAY)
    assert message == f"{path}: created and loaded 3 sample rows from {tmp_path / 's'}"
    with db.reader(path) as con:
        assert con.execute("SELECT session_date FROM sessions").fetchall() == [(dt.date(2026, 3, 2),)]
    path = tmp_path / "b.duckdb"
    message = bootstrap.ensure_database(path, tmp_path / "s", today=dt.date(2026, 3, 12), shift_dates=True)
    assert message.endswith("(dates moved by +10 days to end on 2026-03-12)")
    with db.reader(path) as con:
        assert con.execute("SELECT session_date FROM sessions").fetchall() == [(dt.date(2026, 3, 12),)]
        assert con.execute("SELECT assessed_at FROM scores").fetchall() == [
            (dt.datetime(2026, 3, 11, 8, 15),)
        ]


def test_the_temporary_folder_is_removed_after_loading_and_after_a_rejection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    monkeypatch.setattr(bootstrap.tempfile, "mkdtemp", lambda **_: str(work.mkdir() or work))
    _small_sample(tmp_path / "good")
    bootstrap.ensure_database(tmp_path / "a.duckdb", tmp_path / "good", today=TODAY, shift_dates=True)
    assert not work.exists()
    bad = tmp_path / "bad"
    _small_sample(bad)
    _write(bad, "scores.csv", "patient_id,instrument,assessed_on,total\nK1,PHQ-9,2026-03-01,99\n")
    with pytest.raises(ingest.ImportRejected):
        bootstrap.ensure_database(tmp_path / "b.duckdb", bad, today=TODAY, shift_dates=True)
    assert not work.exists()
    assert not (tmp_path / "b.duckdb").exists()  # the half-made demo database is removed


def test_a_database_with_data_is_left_alone(demo: tuple[Path, str]) -> None:
    path, _ = demo
    assert bootstrap.ensure_database(path, today=TODAY + dt.timedelta(days=30)) == f"{path}: ready"
    with db.reader(path) as con:
        assert con.execute("SELECT max(session_date) FROM sessions").fetchone() == (TODAY,)


def test_the_demo_is_never_loaded_into_an_existing_database_even_an_empty_one(tmp_path: Path) -> None:
    # Undo every batch of the demo, then start again: before, the 300 synthetic patients came back.
    path = tmp_path / "kap.duckdb"
    bootstrap.ensure_database(path, today=TODAY)
    with db.reader(path) as con:
        batches = [r[0] for r in con.execute("SELECT batch_id FROM batches WHERE demo").fetchall()]
        assert len(batches) == 3 and con.execute(
            "SELECT count(*) FROM batches WHERE NOT demo"
        ).fetchone() == (0,)
    for batch in batches:
        ingest.undo_batch(batch, path)
    message = bootstrap.ensure_database(path, today=TODAY)
    assert "the demo cohort is loaded only into a new database" in message
    with db.reader(path) as con:
        assert db.is_empty(con)
    real = tmp_path / "real.duckdb"
    with db.session(real):
        pass  # a database made by `load` or by hand, still empty
    bootstrap.ensure_database(real, today=TODAY)
    with db.reader(real) as con:
        assert db.is_empty(con)


def test_the_batch_history_marks_the_demo_batches(demo: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = demo
    listing = run_cli("batches", "--db", str(path), cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()[1:]
    assert len(lines) == 3 and all(line.endswith("(synthetic demo data)") for line in lines)
    clinic = tmp_path / "clinic.duckdb"
    with db.session(clinic):
        pass
    files = sample.write_sample(5, tmp_path / "csv", seed=2)
    assert run_cli("load", *map(str, files), "--db", str(clinic), cwd=tmp_path).returncode == 0
    listing = run_cli("batches", "--db", str(clinic), cwd=tmp_path)
    assert "demo" not in listing.stdout
