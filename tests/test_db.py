"""The database: schema and migrations, settings, views, paths, locking between processes."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from kapdata import db, ingest
from kapdata import instruments as reg
from tests.conftest import SCORES_HEADER, csv_lines, hold, load, snapshot, write_text


def test_session_creates_the_schema_seeds_registry_and_settings(db_file):
    with db.session(db_file) as con:
        assert db.schema_version(con) == db.SCHEMA_VERSION == 4
        assert db.schema_current(con)
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert {"meta", "batches", "patients", "sessions", "scores", "instruments", "settings"} <= tables
        assert {"patient_dosing", "scores_phased", "score_points", "outcomes"} <= tables
        assert db.get_settings(con) == {
            "integration_window_days": 84,
            "overdue_days": 28,
            "bp_sys_threshold": 160,
            "bp_dia_threshold": 100,
            "min_cell": 11,
            "baseline_max_days": 90,
            "dosing_complete_sessions": 4,
            "k_anonymity_min": 5,
        }
        rows = con.execute(
            "SELECT code, n_items, item_max, total_max, caseness, response_pct, remission_below, "
            "reliable_change, safety_items FROM instruments ORDER BY code"
        ).fetchall()
        assert rows == [
            ("GAD-7", 7, 3, 21, 8, 50, 5, 4, []),
            ("PCL-5", 20, 4, 80, 33, 30, 33, 10, []),
            ("PHQ-9", 9, 3, 27, 10, 50, 5, 6, [9]),
        ]
        assert db.is_empty(con)


def test_ensure_schema_is_idempotent_and_keeps_data_and_settings(base_db):
    with db.session(base_db) as con:
        con.execute("UPDATE settings SET value = 60 WHERE key = 'integration_window_days'")
    before = snapshot(base_db)
    with db.session(base_db) as con:
        db.ensure_schema(con)
        db.ensure_schema(con)
        assert db.get_settings(con)["integration_window_days"] == 60
        assert not db.is_empty(con)
    assert snapshot(base_db) == before


def test_views_are_recreated_when_their_text_changes(base_db):
    with db.session(base_db) as con:
        con.execute("UPDATE meta SET value = 'stale' WHERE key = 'views_hash'")
        con.execute("DROP VIEW outcomes_live")
        con.execute("DROP TABLE outcomes")
    with db.reader(base_db) as con:
        assert con.execute("SELECT count(*) FROM outcomes").fetchone() == (4,)
        assert db.schema_current(con)


def test_score_point_key_orders_by_time_and_gives_back_total_flag_and_day(db_file):
    # score_points takes the newest score of a phase as max() of one packed key: the key must sort by time
    # alone and decode to that score's own total, prorated flag and date, before 1970 and at the extremes
    # (the earliest date an import accepts, the largest total it could hold, a microsecond apart).
    rows = [
        ("1969-12-31 23:59:59.999999", 255, True),
        ("1969-12-31 23:59:59.999998", 0, False),
        ("1900-01-01 00:00:00", 0, True),
        ("1900-01-01 00:00:00.000001", 255, True),
        ("2025-03-01 08:30:00.000001", 27, False),
        ("2025-03-01 08:30:00", 80, True),
        ("2539-12-31 23:59:59.999999", 255, False),
    ]
    with db.session(db_file) as con:
        decoded = con.execute(
            """SELECT ts, kap_point_total(k), kap_point_prorated(k), kap_point_on(k) = CAST(ts AS DATE),
                      rank() OVER (ORDER BY k) = rank() OVER (ORDER BY ts)
               FROM (SELECT CAST(ts AS TIMESTAMP) AS ts, kap_point_key(CAST(ts AS TIMESTAMP), t, p) AS k
                     FROM (SELECT unnest(?, recursive := true))) ORDER BY ts""",
            [[{"ts": ts, "t": t, "p": p} for ts, t, p in rows]],
        ).fetchall()
    assert [(r[0], r[1], r[2]) for r in decoded] == sorted(
        (datetime.fromisoformat(ts), t, p) for ts, t, p in rows
    )
    assert all(r[3] and r[4] for r in decoded)


def test_a_database_whose_outcomes_were_a_view_gets_the_stored_table(base_db):
    with db.session(base_db) as con:
        con.execute("UPDATE meta SET value = 'stale' WHERE key = 'views_hash'")
        con.execute("DROP TABLE outcomes")
        con.execute("CREATE VIEW outcomes AS SELECT * FROM outcomes_live")
    with db.reader(base_db) as con:
        kind = con.execute(
            "SELECT table_type FROM information_schema.tables WHERE table_name = 'outcomes'"
        ).fetchone()
        assert kind == ("BASE TABLE",)
        assert con.execute("SELECT count(*) FROM outcomes").fetchone() == (4,)


def test_stored_outcomes_follow_a_settings_change(base_db):
    from kapdata import settings

    with db.reader(base_db) as con:
        before = con.execute("SELECT count_if(response) FROM outcomes").fetchone()
    settings.update(base_db, thresholds={"PHQ-9": {"response_pct": 100}, "GAD-7": {"response_pct": 100}})
    with db.reader(base_db) as con:
        after = con.execute("SELECT count_if(response) FROM outcomes").fetchone()
        live = con.execute("SELECT count_if(response) FROM outcomes_live").fetchone()
    assert after == live
    assert before != after


def test_a_newer_schema_is_refused(db_file):
    with db.session(db_file) as con:
        con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con = db.connect(db_file)
    try:
        with pytest.raises(RuntimeError, match="newer than this software"):
            db.ensure_schema(con)
    finally:
        con.close()


def test_reader_needs_an_existing_database_and_does_not_create_one(tmp_path):
    target = tmp_path / "none" / "kap.duckdb"
    with pytest.raises(db.NoDatabase, match="no database at"), db.reader(target):
        pass
    assert not target.exists() and not target.parent.exists()


def test_reader_is_read_only(base_db):
    with db.reader(base_db) as con, pytest.raises(duckdb.Error):
        con.execute("DELETE FROM scores")
    assert len(snapshot(base_db)["scores"]) == 2


def test_db_path_prefers_argument_then_environment_then_default(monkeypatch, tmp_path):
    monkeypatch.delenv("KAP_DB", raising=False)
    assert db.db_path() == Path("data") / "kap.duckdb"
    monkeypatch.setenv("KAP_DB", str(tmp_path / "env.duckdb"))
    assert db.db_path() == tmp_path / "env.duckdb"
    assert db.db_path(tmp_path / "arg.duckdb") == tmp_path / "arg.duckdb"


def test_file_version_changes_when_data_is_loaded(tmp_path, base_db):
    assert db.file_version(tmp_path / "missing.duckdb") == (0, 0)
    v1 = db.file_version(base_db)
    assert v1[0] > 0 and v1[1] > 0
    time.sleep(0.01)
    ingest.undo_batch(3, base_db)
    assert db.file_version(base_db) != v1


def test_connect_waits_for_another_process_writing(base_db):
    writer = hold(base_db, "rw", 1.0)
    start = time.monotonic()
    try:
        with db.reader(base_db) as con:
            assert con.execute("SELECT count(*) FROM scores").fetchone() == (2,)
        assert time.monotonic() - start > 0.3
    finally:
        writer.wait(timeout=30)


def test_busy_database_gives_up_with_a_clear_error(base_db, monkeypatch):
    monkeypatch.setattr(db, "LOCK_WAIT_SECONDS", 0.3)
    writer = hold(base_db, "rw", 5)
    try:
        start = time.monotonic()
        with pytest.raises(db.DatabaseBusy, match="in use by another process that is writing"):
            db.connect(base_db, read_only=True)
        assert time.monotonic() - start < 3
    finally:
        writer.kill()
        writer.wait()


def test_load_into_a_folder_that_does_not_exist_yet(tmp_path):
    f = write_text(tmp_path / "s.csv", csv_lines(SCORES_HEADER, [("P1", "PHQ-9", "2025-01-05", 3)]))
    target = tmp_path / "a" / "b" / "kap.duckdb"
    load(target, f)
    assert target.exists()
    assert reg.get("phq9").code == "PHQ-9"


def test_lock_wait_is_fifteen_seconds():
    assert db.LOCK_WAIT_SECONDS == 15


def test_a_version_1_database_is_migrated_keeping_its_data(base_db):
    # Make base_db look as schema 1 left it: no prorated column, no acknowledgement tables, GAD-7 caseness 10.
    con = duckdb.connect(str(base_db))
    before = con.execute("SELECT count(*) FROM scores").fetchone()
    con.execute("DROP TABLE acknowledgements")
    con.execute("DROP TABLE discharges")
    con.execute("DROP TABLE users")
    con.execute("DROP TABLE mappings")
    for view in ("outcomes_live", "score_points", "scores_phased"):
        con.execute(f"DROP VIEW IF EXISTS {view}")
    con.execute("ALTER TABLE scores DROP COLUMN prorated")
    con.execute("ALTER TABLE batches DROP COLUMN demo")
    con.execute("UPDATE instruments SET caseness = 10 WHERE code = 'GAD-7'")
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.close()
    with db.session(base_db) as con:
        assert db.schema_version(con) == 4
        assert con.execute("SELECT count(*) FROM mappings").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM users").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM scores").fetchone() == before
        assert con.execute("SELECT count(*) FROM scores WHERE prorated").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM acknowledgements").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM batches WHERE demo").fetchone() == (0,)
        assert con.execute("SELECT caseness FROM instruments WHERE code = 'GAD-7'").fetchone() == (8,)
        assert con.execute("SELECT count(*) FROM users").fetchone() == (0,)
