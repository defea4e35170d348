"""DuckDB database: connection, schema, migrations, settings and the derived views.

Concurrency: DuckDB lets one process hold a file read-write, or several processes hold it read-only,
never both at once; inside one process it refuses a read-only and a read-write connection to one file at the
same time. So nothing here keeps a connection open for long: every operation opens a short connection
(read-only for reads). Inside the process a gate per file (:class:`_Gate`) makes a reader wait while a writer
works and a writer wait for the readers to finish (a waiting writer goes first, so a busy page cannot starve
an import); a lock held by another process is retried. Either wait is bounded by ``LOCK_WAIT_SECONDS``, then
:class:`DatabaseBusy`. That lets ``python -m kapdata load`` write while the app is running on the same file,
and an import in the app (validated outside the database, see :mod:`kapdata.ingest`) hold the file only for
its final short transaction.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from kapdata import instruments as reg
from kapdata import phases

DEFAULT_DB = Path("data") / "kap.duckdb"
SCHEMA_VERSION = 4
LOCK_WAIT_SECONDS = 15.0

PHASES = phases.PHASES
ENDPOINT_PHASES = phases.ENDPOINT_PHASES

#: Settings named by the design, with defaults. Stored in the ``settings`` table.
DEFAULT_SETTINGS: dict[str, float] = {
    "integration_window_days": 84,
    "overdue_days": 28,
    "bp_sys_threshold": 160,
    "bp_dia_threshold": 100,
    "min_cell": 11,
    "baseline_max_days": 90,
    "dosing_complete_sessions": 4,
    "k_anonymity_min": 5,
}

# Each migration takes the database from version i to i + 1. Never edit a released one: append.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)""",
        """CREATE TABLE batches (
            batch_id INTEGER PRIMARY KEY,
            file_name VARCHAR NOT NULL,
            sha256 VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            rows_read INTEGER NOT NULL,
            rows_loaded INTEGER NOT NULL,
            rows_already_present INTEGER NOT NULL,
            rows_rejected INTEGER NOT NULL,
            new_patients INTEGER NOT NULL,
            on_error VARCHAR NOT NULL,
            loaded_at TIMESTAMP NOT NULL,
            undone_at TIMESTAMP
        )""",
        """CREATE TABLE patients (
            patient_id VARCHAR NOT NULL,
            clinic VARCHAR,
            provider VARCHAR,
            age_band VARCHAR,
            sex VARCHAR,
            primary_condition VARCHAR,
            route VARCHAR,
            attributes_known BOOLEAN NOT NULL,
            batch_id INTEGER NOT NULL,
            attributes_batch_id INTEGER
        )""",
        """CREATE TABLE sessions (
            patient_id VARCHAR NOT NULL,
            session_date DATE NOT NULL,
            route VARCHAR,
            dose_mg DOUBLE,
            dose_mg_per_kg DOUBLE,
            bp_sys_pre SMALLINT,
            bp_dia_pre SMALLINT,
            bp_sys_post SMALLINT,
            bp_dia_post SMALLINT,
            dissociation SMALLINT,
            side_effects VARCHAR,
            batch_id INTEGER NOT NULL
        )""",
        """CREATE TABLE scores (
            patient_id VARCHAR NOT NULL,
            instrument VARCHAR NOT NULL,
            assessed_on DATE NOT NULL,
            assessed_at TIMESTAMP NOT NULL,
            total SMALLINT NOT NULL,
            items SMALLINT[],
            phase VARCHAR,
            batch_id INTEGER NOT NULL
        )""",
        """CREATE TABLE instruments (
            code VARCHAR PRIMARY KEY,
            n_items INTEGER NOT NULL,
            item_max INTEGER NOT NULL,
            total_max INTEGER NOT NULL,
            caseness INTEGER NOT NULL,
            response_pct INTEGER NOT NULL,
            remission_below INTEGER NOT NULL,
            reliable_change INTEGER NOT NULL,
            safety_items INTEGER[] NOT NULL
        )""",
        """CREATE TABLE settings (key VARCHAR PRIMARY KEY, value DOUBLE NOT NULL)""",
    ),
    (
        # A total prorated from the answered items (NHS Data Dictionary rule; items holds NULL for a
        # missing answer).
        "ALTER TABLE scores ADD COLUMN prorated BOOLEAN NOT NULL DEFAULT false",
        # A clinician saw a flag: it stays acknowledged until a newer score (after flag_on) raises it.
        """CREATE TABLE acknowledgements (
            patient_id VARCHAR NOT NULL,
            flag VARCHAR NOT NULL,
            flag_on DATE,
            acknowledged_by VARCHAR NOT NULL,
            acknowledged_at TIMESTAMP NOT NULL,
            note VARCHAR
        )""",
        # The bundled synthetic demo's batches are marked, so they are never mistaken for a clinic's data.
        "ALTER TABLE batches ADD COLUMN demo BOOLEAN NOT NULL DEFAULT false",
        # GAD-7 caseness follows NHS Talking Therapies (8); 10 was the earlier default, not a clinic's choice.
        "UPDATE instruments SET caseness = 8 WHERE code = 'GAD-7' AND caseness = 10",
        # Discharged patients leave the caseload (by default) and stay in every outcome.
        """CREATE TABLE discharges (
            patient_id VARCHAR PRIMARY KEY,
            discharged_by VARCHAR NOT NULL,
            discharged_at TIMESTAMP NOT NULL,
            note VARCHAR
        )""",
    ),
    (
        # Staff accounts (kapdata.accounts): the e-mail is the account identifier, never a patient's.
        """CREATE TABLE users (
            email VARCHAR PRIMARY KEY,
            role VARCHAR NOT NULL,
            clinics VARCHAR[] NOT NULL,
            calendar_dates BOOLEAN NOT NULL DEFAULT false,
            password_hash VARCHAR,
            disabled BOOLEAN NOT NULL DEFAULT false,
            failed_attempts INTEGER NOT NULL DEFAULT 0,
            locked_until TIMESTAMP,
            created_at TIMESTAMP NOT NULL,
            changed_at TIMESTAMP NOT NULL
        )""",
    ),
    (
        # Column mappings saved by name (kapdata.ingest.mapping): next month's export loads with the same one.
        """CREATE TABLE mappings (
            name VARCHAR PRIMARY KEY,
            spec VARCHAR NOT NULL,
            headers VARCHAR[] NOT NULL,
            saved_at TIMESTAMP NOT NULL
        )""",
    ),
)

if any(i.item_min < 0 or i.total_max > 255 for i in reg.INSTRUMENTS):  # kap_point_key's 8 bits of total
    raise RuntimeError("an instrument's totals do not fit score_points' key (0..255)")

# Derived views, re-created whenever this text changes (its hash is kept in meta).
VIEWS_SQL: tuple[str, ...] = (
    *phases.PHASE_VIEWS_SQL,
    # A score as one sortable BIGINT (the newest is the largest): its time in microseconds, then its total
    # and prorated flag in the low 9 bits. The last score of a phase is then a plain max() of this key, one
    # aggregate per phase instead of a max_by per column (the outcomes refresh 0.27 -> 0.20 s at 50,000
    # patients); time is unique per patient and instrument, so the key picks exactly the row that
    # max_by(..., assessed_at) would. Fits for any import: dates are 1900..today (1400..2540 would fit)
    # and totals 0..255 (checked below against the registry).
    """CREATE OR REPLACE MACRO kap_point_key(ts, total, prorated) AS
    epoch_us(ts) * 512 + CAST(total AS INTEGER) * 2 + CAST(prorated AS INTEGER)""",
    """CREATE OR REPLACE MACRO kap_point_total(k) AS CAST((k & 511) >> 1 AS SMALLINT)""",
    """CREATE OR REPLACE MACRO kap_point_prorated(k) AS (k & 1) = 1""",
    # assessed_on is the date of assessed_at (both set from one parsed value at import).
    """CREATE OR REPLACE MACRO kap_point_on(k) AS CAST(make_timestamp(k >> 9) AS DATE)""",
    # Baseline: the last score of a scale in preparation, at most baseline_max_days before the first dose.
    # Latest: the last score after baseline (the last score outside preparation). Phase endpoints: the last
    # score in each phase. ``*_prorated``: that score's total was prorated from answered items.
    """CREATE OR REPLACE VIEW score_points AS
    WITH b AS (SELECT CAST(value AS INTEGER) AS days FROM settings WHERE key = 'baseline_max_days'),
    s AS (
        SELECT s.patient_id, s.instrument, s.phase,
               s.phase = 'preparation' AND (s.day IS NULL OR s.day >= -(SELECT days FROM b))
                   AS baseline_eligible,
               kap_point_key(s.assessed_at, s.total, s.prorated) AS k
        FROM scores_phased s
    ),
    k AS (
        SELECT patient_id, instrument,
               max(k) FILTER (WHERE baseline_eligible) AS kb,
               max(k) FILTER (WHERE phase = 'dosing') AS kd,
               max(k) FILTER (WHERE phase = 'integration') AS ki,
               max(k) FILTER (WHERE phase = 'follow-up') AS kf,
               max(k) FILTER (WHERE phase <> 'preparation') AS kl,
               count(*) AS n_scores
        FROM s GROUP BY patient_id, instrument
    )
    SELECT patient_id, instrument,
           kap_point_total(kb) AS baseline, kap_point_on(kb) AS baseline_on,
           kap_point_prorated(kb) AS baseline_prorated,
           kap_point_total(kd) AS dosing, kap_point_on(kd) AS dosing_on,
           kap_point_prorated(kd) AS dosing_prorated,
           kap_point_total(ki) AS integration, kap_point_on(ki) AS integration_on,
           kap_point_prorated(ki) AS integration_prorated,
           kap_point_total(kf) AS follow_up, kap_point_on(kf) AS follow_up_on,
           kap_point_prorated(kf) AS follow_up_prorated,
           kap_point_total(kl) AS latest, kap_point_on(kl) AS latest_on,
           kap_point_prorated(kl) AS latest_prorated,
           n_scores
    FROM k""",
    # The outcome rules of DESIGN §5, written once: baseline b, endpoint e, and the instrument's
    # thresholds. Used for completers (the phase endpoint) and for intention-to-treat (LOCF endpoint).
    # NULL (undefined) where an end is missing; response needs a baseline above 0; remission, recovery and
    # reliable recovery need a baseline in the clinical range (b >= caseness), else they are undefined.
    """CREATE OR REPLACE MACRO kap_outcome_flags(b, e, caseness, response_pct, remission_below, rc) AS
    struct_pack(
        response := CASE WHEN b > 0 AND e IS NOT NULL THEN (b - e) * 100 >= response_pct * b END,
        remission := CASE WHEN b >= caseness AND e IS NOT NULL THEN e < remission_below END,
        reliable_improvement := e - b <= -rc,
        reliable_deterioration := e - b >= rc,
        recovery := CASE WHEN b >= caseness AND e IS NOT NULL THEN e < caseness END,
        reliable_recovery := CASE WHEN b >= caseness AND e IS NOT NULL THEN e < caseness AND e - b <= -rc END
    )""",
    # Is a patient due for an endpoint on the data's last day (as_of)? Dosing and latest: dosing has begun.
    # Integration: no session in the last DOSING_ACTIVE_DAYS (dosing is over as far as the data shows).
    # Follow-up: the integration window after the last session has passed.
    f"""CREATE OR REPLACE MACRO kap_due(phase, first_session, last_session, as_of, window_days) AS
    CASE WHEN first_session IS NULL THEN false
         WHEN phase = 'integration' THEN as_of - last_session > {phases.DOSING_ACTIVE_DAYS}
         WHEN phase = 'follow-up' THEN as_of - last_session > window_days
         ELSE true END""",
    # One row per patient x instrument x endpoint phase, with every per-patient outcome (DESIGN §5).
    # locf_endpoint carries the last observation forward (baseline included) for intention-to-treat;
    # itt_due: the patient counts in intention-to-treat at that phase (a baseline, dosed, and due).
    # Pages read the table ``outcomes``, this view's rows stored by ``refresh_derived`` whenever data or
    # settings change (see ``bump_data_version``).
    """CREATE OR REPLACE VIEW outcomes_live AS
    WITH cfg AS (
        SELECT CAST(max(value) FILTER (WHERE key = 'integration_window_days') AS INTEGER) AS window_days,
               greatest((SELECT max(assessed_on) FROM scores), (SELECT max(session_date) FROM sessions))
                   AS as_of
        FROM settings
    ),
    grid AS (
        SELECT p.patient_id, p.instrument, p.baseline, p.baseline_on, p.baseline_prorated, ph.phase, ph.ord,
               CASE ph.phase WHEN 'dosing' THEN p.dosing WHEN 'integration' THEN p.integration
                    WHEN 'follow-up' THEN p.follow_up ELSE p.latest END AS endpoint,
               CASE ph.phase WHEN 'dosing' THEN p.dosing_on WHEN 'integration' THEN p.integration_on
                    WHEN 'follow-up' THEN p.follow_up_on ELSE p.latest_on END AS endpoint_on,
               CASE ph.phase WHEN 'dosing' THEN p.dosing_prorated
                    WHEN 'integration' THEN p.integration_prorated WHEN 'follow-up' THEN p.follow_up_prorated
                    ELSE p.latest_prorated END AS endpoint_prorated,
               CASE ph.phase
                    WHEN 'dosing' THEN coalesce(p.dosing, p.baseline)
                    WHEN 'integration' THEN coalesce(p.integration, p.dosing, p.baseline)
                    WHEN 'follow-up' THEN coalesce(p.follow_up, p.integration, p.dosing, p.baseline)
                    ELSE coalesce(p.latest, p.baseline) END AS locf_endpoint,
               -- A patient who dosed and has a score in the phase has reached it, so is due for it (every
               -- completer is in ITT), even while a recent session keeps the rule above from saying so.
               p.baseline IS NOT NULL AND d.first_session IS NOT NULL
                   AND (kap_due(ph.phase, d.first_session, d.last_session, cfg.as_of, cfg.window_days)
                        OR CASE ph.phase WHEN 'dosing' THEN p.dosing WHEN 'integration' THEN p.integration
                                WHEN 'follow-up' THEN p.follow_up ELSE p.latest END IS NOT NULL)
                   AS itt_due
        FROM score_points p
        LEFT JOIN patient_dosing d USING (patient_id)
        CROSS JOIN cfg
        CROSS JOIN (VALUES ('dosing', 1), ('integration', 2), ('follow-up', 3), ('latest', 4))
             AS ph(phase, ord)
    ),
    flagged AS (
        SELECT g.*, i.caseness,
               kap_outcome_flags(g.baseline, g.endpoint, i.caseness, i.response_pct, i.remission_below,
                                 i.reliable_change) AS f,
               kap_outcome_flags(g.baseline, g.locf_endpoint, i.caseness, i.response_pct, i.remission_below,
                                 i.reliable_change) AS itt
        FROM grid g JOIN instruments i ON i.code = g.instrument
    )
    SELECT patient_id, instrument, phase, ord AS phase_order, baseline, baseline_on, baseline_prorated,
           endpoint, endpoint_on, endpoint_prorated, locf_endpoint,
           endpoint - baseline AS change,
           CASE WHEN baseline > 0 THEN 100.0 * (endpoint - baseline) / baseline END AS pct_change,
           f.response, f.remission, f.reliable_improvement, f.reliable_deterioration, f.recovery,
           f.reliable_recovery,
           baseline >= caseness AS baseline_clinical,
           locf_endpoint - baseline AS itt_change,
           itt AS itt_flags,
           itt_due
    FROM flagged""",
)


class DatabaseBusy(RuntimeError):
    """Another process holds the database file for writing."""


def db_path(path: str | os.PathLike[str] | None = None) -> Path:
    """``--db`` if given, else ``KAP_DB``, else ``data/kap.duckdb``."""
    if path:
        return Path(path)
    env = os.environ.get("KAP_DB")
    return Path(env) if env else DEFAULT_DB


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return (
        "lock" in text
        or "conflicting" in text
        or "being used by another process" in text
        or "different configuration" in text  # this process has the file open the other way
    )


def _busy(target: Path) -> DatabaseBusy:
    return DatabaseBusy(
        f"{target}: the database is in use by another process that is writing to it; try again in a moment"
    )


class _Gate:
    """This process's access to one database file: any number of readers, or one writer.

    A writer that is waiting goes first: new readers wait behind it. A thread that already holds the file
    passes straight through (a nested use must not wait for itself). Waits end after ``LOCK_WAIT_SECONDS``
    with :class:`DatabaseBusy`.
    """

    _gates: dict[str, _Gate] = {}
    _gates_lock = threading.Lock()
    _held = threading.local()

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.readers = 0
        self.writer = False
        self.writers_waiting = 0

    @classmethod
    def of(cls, target: Path) -> _Gate:
        key = os.path.abspath(target)
        with cls._gates_lock:
            return cls._gates.setdefault(key, cls())

    def _depth(self) -> dict[int, int]:
        depth: dict[int, int] | None = getattr(self._held, "depth", None)
        if depth is None:
            depth = self._held.depth = {}
        return depth

    def writing(self) -> bool:
        with self.cond:
            return self.writer or bool(self.writers_waiting)

    def wait_for_writers(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` seconds) until no writer holds or waits for the file; True if none."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.writer or self.writers_waiting:
                if not self.cond.wait(max(0.0, deadline - time.monotonic())):
                    return False
            return True

    @contextmanager
    def hold(self, target: Path, *, write: bool) -> Iterator[None]:
        depth = self._depth()
        if depth.get(id(self), 0):
            depth[id(self)] += 1
            try:
                yield
            finally:
                depth[id(self)] -= 1
            return
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        with self.cond:
            if write:
                self.writers_waiting += 1
                try:
                    while self.writer or self.readers:
                        if not self.cond.wait(deadline - time.monotonic()):
                            raise _busy(target)
                finally:
                    self.writers_waiting -= 1
                self.writer = True
            else:
                while self.writer or self.writers_waiting:
                    if not self.cond.wait(deadline - time.monotonic()):
                        raise _busy(target)
                self.readers += 1
        depth[id(self)] = 1
        try:
            yield
        finally:
            depth[id(self)] = 0
            with self.cond:
                if write:
                    self.writer = False
                else:
                    self.readers -= 1
                self.cond.notify_all()


def connect(
    path: str | os.PathLike[str] | None = None, *, read_only: bool = False
) -> duckdb.DuckDBPyConnection:
    """Open the database, waiting (up to ``LOCK_WAIT_SECONDS``) while another process writes to it."""
    target = db_path(path)
    if not read_only:
        target.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    delay = 0.02
    while True:
        try:
            return duckdb.connect(str(target), read_only=read_only)
        except (duckdb.IOException, duckdb.ConnectionException) as exc:
            if not _is_lock_error(exc) or time.monotonic() > deadline:
                if _is_lock_error(exc):
                    raise _busy(target) from exc
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


@contextmanager
def session(
    path: str | os.PathLike[str] | None = None, *, read_only: bool = False
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection, closed on exit. Writers get the schema made current first."""
    target = db_path(path)
    with _Gate.of(target).hold(target, write=not read_only):
        con = connect(target, read_only=read_only)
        try:
            if not read_only:
                ensure_schema(con)
            yield con
        finally:
            con.close()


def writing(path: str | os.PathLike[str] | None = None) -> bool:
    """Is a writer in this process saving to (or waiting to save to) the database right now?"""
    return _Gate.of(db_path(path)).writing()


def wait_for_writers(path: str | os.PathLike[str] | None = None, timeout: float = LOCK_WAIT_SECONDS) -> bool:
    """Wait until this process's writers to the database have finished; False if they took ``timeout``."""
    return _Gate.of(db_path(path)).wait_for_writers(timeout)


class NoDatabase(FileNotFoundError):
    """The database file does not exist yet."""


def explain(exc: BaseException, path: str | os.PathLike[str] | None = None) -> str:
    """One line for a person: what is wrong with the database and what to do. Never the engine's own text
    (it can hold file paths and internals); the full error goes to the server log instead."""
    where = f" ({db_path(path)})" if path is not None else ""
    text = str(exc).lower()
    if isinstance(exc, NoDatabase):
        return f"There is no database yet{where}: load files first (Data import, or python -m kapdata load)."
    if isinstance(exc, DatabaseBusy):
        return "The database is busy: another person or command is saving changes. Try again in a moment."
    if isinstance(exc, PermissionError) or "read-only" in text or "permission denied" in text:
        return (
            f"The database file{where} is read-only here: pages can be read, but nothing can be saved. "
            "Ask your administrator to make it writable."
        )
    if isinstance(exc, IsADirectoryError | NotADirectoryError):
        return f"The database path{where} is not a file. Check --db or KAP_DB."
    if isinstance(exc, OSError) and "no space" in text:
        return "The disk holding the database is full: nothing was saved. Free some space and try again."
    if isinstance(exc, duckdb.Error):
        return (
            f"The database file{where} could not be read: it may be damaged, truncated or not a KAP Outcomes "
            "database. Restore it from a backup, or point --db / KAP_DB at the right file."
        )
    return "Something went wrong; the details are in the server's log. Reload the page to try again."


def schema_current(con: duckdb.DuckDBPyConnection) -> bool:
    """Is the schema this software's (version and views)? One cheap query of the ``meta`` table."""
    try:
        row = con.execute(
            "SELECT max(value) FILTER (WHERE key = 'schema_version'), "
            "max(value) FILTER (WHERE key = 'views_hash') FROM meta"
        ).fetchone()
    except duckdb.CatalogException:  # no meta table: a new or foreign database
        return False
    return bool(row) and row[0] == str(SCHEMA_VERSION) and row[1] == _views_hash()


_schema_checked: dict[str, tuple[int, int]] = {}


@contextmanager
def reader(path: str | os.PathLike[str] | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived read-only connection to an existing database (migrated first if it is out of date)."""
    target = db_path(path)
    if not target.exists():
        raise NoDatabase(f"no database at {target}: load files first (python -m kapdata load ...)")
    gate = _Gate.of(target)
    # The schema check is one query of meta; skip it while the file is unchanged since it last passed.
    key = str(target.resolve())
    stamp = file_version(target)
    for attempt in range(2):
        with gate.hold(target, write=False):
            con = connect(target, read_only=True)
            try:
                if attempt or _schema_checked.get(key) == stamp or schema_current(con):
                    _schema_checked[key] = stamp
                    yield con
                    return
            finally:
                con.close()
        with session(target):  # out of date: migrate (a short write), then read
            pass
        stamp = file_version(target)


@functools.cache
def _views_hash() -> str:
    import hashlib

    return hashlib.sha256("\n".join(VIEWS_SQL).encode()).hexdigest()[:16]


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta' AND table_schema = 'main'"
    ).fetchone()
    if not exists or exists[0] == 0:
        return 0
    row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def _meta_set(con: duckdb.DuckDBPyConnection, key: str, value: str) -> None:
    con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, value])


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create or migrate the schema, seed the registry and settings, refresh the views. Idempotent."""
    if schema_current(con):
        return
    version = schema_version(con)
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"database schema version {version} is newer than this software ({SCHEMA_VERSION}); "
            "upgrade kapdata"
        )
    con.execute("BEGIN TRANSACTION")
    try:
        for step in MIGRATIONS[version:]:
            for statement in step:
                con.execute(statement)
        if version < SCHEMA_VERSION:
            _meta_set(con, "schema_version", str(SCHEMA_VERSION))
        seed_registry(con, overwrite=False)
        for key, value in DEFAULT_SETTINGS.items():
            con.execute("INSERT OR IGNORE INTO settings VALUES (?, ?)", [key, value])
        for statement in VIEWS_SQL:
            con.execute(statement)
        refresh_derived(con)  # the definitions may have changed
        _meta_set(con, "views_hash", _views_hash())
        if version == 0:
            _meta_set(con, "data_version", "0")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def seed_registry(con: duckdb.DuckDBPyConnection, *, overwrite: bool) -> None:
    """Write the instrument registry's thresholds into the ``instruments`` table."""
    verb = "INSERT OR REPLACE" if overwrite else "INSERT OR IGNORE"
    rows = [
        [
            i.code,
            i.n_items,
            i.item_max,
            i.total_max,
            i.caseness,
            i.response_pct,
            i.remission_below,
            i.reliable_change,
            list(i.safety_items),
        ]
        for i in reg.INSTRUMENTS
    ]
    con.executemany(verb + " INTO instruments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def refresh_derived(con: duckdb.DuckDBPyConnection) -> None:
    """Store the ``outcomes_live`` view's rows as the table ``outcomes`` (sorted by patient, so a
    one-patient read skips most of it). Every page reads the table: computing the outcomes once per
    change instead of once per query keeps the pages fast at tens of thousands of patients."""
    kind = con.execute(
        "SELECT table_type FROM information_schema.tables "
        "WHERE table_schema = 'main' AND table_name = 'outcomes'"
    ).fetchone()
    if kind and kind[0] == "VIEW":  # databases made before outcomes were stored
        con.execute("DROP VIEW outcomes")
    con.execute(
        "CREATE OR REPLACE TABLE outcomes AS "
        "SELECT * FROM outcomes_live ORDER BY patient_id, instrument, phase_order"
    )


def bump_data_version(con: duckdb.DuckDBPyConnection) -> None:
    """Data or settings changed (inside the writer's transaction): recompute the stored outcomes and
    move the version that caches are keyed on."""
    refresh_derived(con)
    con.execute(
        "UPDATE meta SET value = CAST(CAST(value AS BIGINT) + 1 AS VARCHAR) WHERE key = 'data_version'"
    )


def get_settings(con: duckdb.DuckDBPyConnection) -> dict[str, float]:
    rows = con.execute("SELECT key, value FROM settings").fetchall()
    out = dict(DEFAULT_SETTINGS)
    out.update({k: v for k, v in rows})
    return out


def is_empty(con: duckdb.DuckDBPyConnection) -> bool:
    row = con.execute("SELECT (SELECT count(*) FROM patients) + (SELECT count(*) FROM scores)").fetchone()
    return not row or row[0] == 0


def file_version(path: str | os.PathLike[str] | None = None) -> tuple[int, int]:
    """A cheap fingerprint of the database file (and its write-ahead log) for cache keys."""
    target = db_path(path)
    stamp = 0
    size = 0
    for p in (target, Path(str(target) + ".wal")):
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        stamp = max(stamp, st.st_mtime_ns)
        size += st.st_size
    return stamp, size
