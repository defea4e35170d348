"""The pipeline: stage every source, validate, commit in one transaction (checked in a private copy)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import duckdb

from kapdata import db
from kapdata.ingest import sources
from kapdata.ingest.commit import Loader, _drop_work_tables
from kapdata.ingest.contract import KIND_ORDER, OnError, SourceFile
from kapdata.ingest.readers import FileError, ScanAhead, fingerprint
from kapdata.ingest.report import FileResult, ImportRejected, LoadResult
from kapdata.ingest.staging import _Staged


def _rejects_target(rejects: Path | None, st: _Staged, n_with_rejects: int) -> Path:
    src = st.src
    if st.label is not None:  # a converted part: named after the part (one file may give several)
        name = sources.safe_name(src.name)
        if rejects is None:
            folder = src.path.parent
            return folder / f"{name}.rejects.csv"
        return (
            rejects
            if n_with_rejects <= 1
            else rejects.with_name(f"{rejects.stem}-{name}{rejects.suffix or '.csv'}")
        )
    if rejects is None:
        return src.path.with_name(src.path.stem + ".rejects.csv")
    if n_with_rejects <= 1:
        return rejects
    return rejects.with_name(f"{rejects.stem}-{Path(src.name).stem}{rejects.suffix or '.csv'}")


def load_files(
    files: Sequence[str | os.PathLike[str] | SourceFile],
    db_path: str | os.PathLike[str] | None = None,
    *,
    on_error: OnError = "reject",
    rejects: str | os.PathLike[str] | None = None,
    dry_run: bool = False,
    today: dt.date | None = None,
    new_patients: bool = False,
    fhir_ids_are_pseudonymous: bool = False,
) -> LoadResult:
    """Validate and load files in one transaction.

    ``on_error="reject"`` (default): any error rejects everything, raising :class:`ImportRejected`; the
    database is unchanged. ``"quarantine"``: good rows load, rejected rows (with reasons) go to a rejects
    CSV. File-level errors (unreadable file, missing column, identifier column) always reject.
    ``dry_run`` validates and reports without changing anything.

    ``new_patients``: a score or session may create a patient that neither the database nor a patients file
    (or FHIR Patient resources) of this load has; by default that row is an error (a mistyped ID).
    A :class:`SourceFile` with a ``mapping``, a FHIR ``.json``/``.ndjson`` file or a folder of them is
    converted first (:mod:`kapdata.ingest.sources`); FHIR patient ids and REDCap record ids are replaced by a
    keyed hash with this database's own key unless ``fhir_ids_are_pseudonymous`` (FHIR) or the mapping's
    ``ids_are_pseudonymous`` (REDCap) says they already are pseudonymous.

    The files are read and checked in a private database holding a copy of what they are checked against
    (:func:`_staging`), so checking holds no lock on the database file: other people's pages and commands
    keep working however long a large file takes. Only the rows that pass are then written, in one short
    transaction (:func:`_publish`); if the database changed meanwhile (another import, an undo, a settings
    change) the check is run again on the new state. A database that holds no data yet (the first load) is
    instead copied whole, loaded into the copy (every row written once, the outcomes computed there) and
    the copy then takes the database's place (:func:`_swap`), if the database is still as it was.
    """
    # The files are read for their fingerprints while the database is created, opened and copied.
    scans = ScanAhead(s.path for s in map(SourceFile.of, files) if not sources.is_converted(s))
    try:
        target = db.db_path(db_path)
        if not dry_run and not target.exists():
            with db.session(target):  # a first load creates the database
                pass
        return _load_staged(
            files, target, on_error, rejects, dry_run, today, new_patients, fhir_ids_are_pseudonymous, scans
        )
    finally:
        scans.close()


def _load_staged(
    files: Sequence[str | os.PathLike[str] | SourceFile],
    target: Path,
    on_error: OnError,
    rejects: str | os.PathLike[str] | None,
    dry_run: bool,
    today: dt.date | None,
    new_patients: bool,
    fhir_ids_are_pseudonymous: bool,
    scans: ScanAhead,
) -> LoadResult:
    """:func:`load_files` once the database exists: stage, check and commit, again if it changed."""
    key = _key_for(files, target, dry_run, fhir_ids_are_pseudonymous)
    limit: str | None = STAGE_MEMORY_LIMIT
    for _attempt in range(STALE_RETRIES):
        with _staging(target, whole=not dry_run, memory_limit=limit) as stage:
            publish = None if dry_run else stage.publish
            try:
                return load_with_connection(
                    stage.con,
                    files,
                    on_error=on_error,
                    rejects=rejects,
                    dry_run=dry_run,
                    today=today,
                    refresh=stage.copy is not None,
                    publish=publish,
                    private=True,
                    new_patients=new_patients,
                    fhir_ids_are_pseudonymous=fhir_ids_are_pseudonymous,
                    key=key,
                    scans=scans,
                )
            except _StaleSnapshot:
                continue
            except duckdb.OutOfMemoryException:
                if stage.copy is None or limit is None:
                    raise
                limit = None  # work that could not spill within the limit: once more, without it
    raise db.DatabaseBusy(
        f"{target}: the database kept changing while these files were checked; try again in a moment"
    )


def _key_for(
    files: Sequence[str | os.PathLike[str] | SourceFile], target: Path, dry_run: bool, fhir_pseudo: bool
) -> bytes | None:
    """The database's pseudonym key, if a source needs one (created on first use; a dry run against a
    database that has none yet uses a throwaway key: its IDs are only a preview)."""
    if not any(
        sources.is_converted(s) and sources.needs_key(s, fhir_pseudo) for s in map(SourceFile.of, files)
    ):
        return None
    if dry_run:
        if target.exists():
            with db.reader(target) as con:
                key = sources.read_key(con)
            if key is not None:
                return key
        return secrets.token_bytes(32)
    with db.session(target) as con:
        return sources.pseudonym_key(con)


#: How many times an import is checked again when the database changed while it was being checked.
STALE_RETRIES = 3
#: The tables an import is checked against; copied into the staging database.
_SNAPSHOT_TABLES = ("batches", "patients", "sessions", "scores")


class _StaleSnapshot(Exception):
    """The database changed between the staging copy and the write: check again."""


def _data_version(con: duckdb.DuckDBPyConnection) -> int:
    rows = con.execute("SELECT value FROM meta WHERE key = 'data_version'").fetchall()
    return int(rows[0][0]) if rows else 0


#: A database holding no data and at most this large is copied whole for a load (see :func:`_swap`).
WHOLE_COPY_MAX_BYTES = 64 * 1024 * 1024
#: DuckDB's memory limit while a whole copy is loaded: beyond it, work spills to a folder beside the copy
#: (a 500,000-patient first load then stays within about 2 GB).
STAGE_MEMORY_LIMIT = "1500MB"


#: DuckDB's settings for the whole copy. A parallel bulk insert leaves a part-filled row group where each
#: thread's batch ends; a checkpoint's vacuum then rewrites those row groups (decompresses, merges and
#: compresses them again): 0.15-0.3 s of a 50,000-patient load, to save one row group in eight. The copy
#: is checkpointed without it; a later checkpoint of the database may still merge them.
_COPY_CONFIG: dict[str, str | int] = {"max_vacuum_tasks": 0}


class _Stage:
    """Where a load is checked: ``con``, the data version its copy was taken at, and ``copy``: the path of a
    whole copy of the database file (the first load), or None (an in-memory copy of the checked tables)."""

    def __init__(self, target: Path, con: duckdb.DuckDBPyConnection, version: int) -> None:
        self.target = target
        self.con = con
        self.version = version
        self.copy: Path | None = None
        self.stamp: tuple[int, int, int] | None = None

    def publish(self, result: LoadResult) -> None:
        if self.copy is None:
            _publish(self.con, self.target, self.version, result)
        else:
            _swap(self)


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    """The file's identity and last change (inode, size, modification time), None if it has a write-ahead
    log (a write that is not yet in the file itself)."""
    if Path(str(path) + ".wal").exists():
        return None
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _remove_copy(path: Path) -> None:
    for leftover in (path, Path(str(path) + ".wal")):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    shutil.rmtree(Path(str(path) + ".tmp"), ignore_errors=True)  # DuckDB's spill folder, if it made one


def _whole_copy(target: Path) -> tuple[Path, tuple[int, int, int], int] | None:
    """A copy of a database that holds no data yet, beside it (same folder, so that it can take the
    database's place in one rename), taken while no one writes to it: (copy, stamp, data version). None if
    the database holds data, is large, has a write-ahead log, or the folder is not writable."""
    real = target.resolve()
    try:
        if real.stat().st_size > WHOLE_COPY_MAX_BYTES:
            return None
        with db.reader(target) as live:
            row = live.execute(
                "SELECT (SELECT count(*) FROM batches) + (SELECT count(*) FROM patients) "
                "+ (SELECT count(*) FROM sessions) + (SELECT count(*) FROM scores)"
            ).fetchone()
            if not row or row[0]:
                return None
            version = _data_version(live)
            stamp = _file_stamp(real)
            if stamp is None:
                return None
            copy = real.with_name(f".{real.name}.{secrets.token_hex(8)}.loading")
            try:
                shutil.copyfile(real, copy)
                shutil.copymode(real, copy)
            except OSError:
                _remove_copy(copy)
                return None
        return copy, stamp, version
    except (OSError, duckdb.Error):
        return None


@contextlib.contextmanager
def _staging(target: Path, *, whole: bool = False, memory_limit: str | None = None) -> Iterator[_Stage]:
    """Where an import is checked, taken in one short read of ``target``. ``whole`` (a load that will
    write) and a database with no data yet: a whole copy of the file (:func:`_whole_copy`). Otherwise a
    private in-memory database with the schema and a copy of the tables an import is checked against (none
    if ``target`` does not exist yet). ``memory_limit``: DuckDB's, for a whole copy."""
    found = _whole_copy(target) if whole and target.exists() else None
    if found is not None:
        copy, stamp, version = found
        try:
            config: dict[str, str | int] = dict(_COPY_CONFIG)
            if memory_limit:
                config["memory_limit"] = memory_limit
            stage = _Stage(target, duckdb.connect(str(copy), config=config), version)
        except BaseException:
            _remove_copy(copy)
            raise
        stage.copy, stage.stamp = copy, stamp
        try:
            yield stage
        finally:
            with contextlib.suppress(duckdb.Error):
                stage.con.close()
            _remove_copy(copy)
        return
    con = duckdb.connect()
    try:
        db.ensure_schema(con)
        version = 0
        if target.exists():
            with db.reader(target) as live:
                version = _data_version(live)
                with live.cursor() as cur:  # a fresh cursor: the reader's own checks may leave results open
                    copies = {t: cur.sql("SELECT * FROM " + t).to_arrow_table() for t in _SNAPSHOT_TABLES}
            for table, rows in copies.items():
                if rows.num_rows:
                    con.register("kap_copy", rows)
                    con.execute("INSERT INTO " + table + " BY NAME SELECT * FROM kap_copy")
                    con.unregister("kap_copy")
        yield _Stage(target, con, version)
    finally:
        con.close()


def _swap(stage: _Stage) -> None:
    """The whole copy, loaded and committed, takes the database's place, if the database is still exactly
    as it was copied (same file, not written since); else :class:`_StaleSnapshot` (checked again). Holding
    the database for writing (this process's readers wait; other processes cannot open it) while the copy
    is renamed over it: a reader opens either the old file or the new one, never a mix."""
    assert stage.copy is not None
    stage.con.execute("CHECKPOINT")  # every row in the file itself, no write-ahead log left
    real = stage.target.resolve()
    with db.session(stage.target) as live:
        if _data_version(live) != stage.version or _file_stamp(real) != stage.stamp:
            raise _StaleSnapshot
        stage.con.close()
        if Path(str(stage.copy) + ".wal").exists():
            raise RuntimeError("the loaded copy of the database was not completely written")
        os.replace(stage.copy, real)


def _publish(stage: duckdb.DuckDBPyConnection, target: Path, version: int, result: LoadResult) -> None:
    """Write what a staged load added (its batches, their rows, the patients they created or filled in)
    into ``target`` in one transaction, if ``target`` is still at the ``version`` the stage was copied at."""
    ids = [f.batch_id for f in result.files if f.batch_id is not None]
    where = {
        "batches": "list_contains($ids, batch_id)",
        "patients": "list_contains($ids, batch_id) OR list_contains($ids, attributes_batch_id)",
        "sessions": "list_contains($ids, batch_id)",
        "scores": "list_contains($ids, batch_id)",
    }
    with stage.cursor() as cur:
        delta = {
            t: cur.sql("SELECT * FROM " + t + " WHERE " + cond, params={"ids": ids}).to_arrow_table()
            for t, cond in where.items()
        }
    with db.session(target) as live:
        live.execute("BEGIN TRANSACTION")
        try:
            if _data_version(live) != version:
                raise _StaleSnapshot
            for table, rows in delta.items():
                if not rows.num_rows:
                    continue
                live.register("kap_delta", rows)
                if table == "patients":  # a filled-in patient replaces its unknown row
                    live.execute(
                        "DELETE FROM patients WHERE patient_id IN (SELECT patient_id FROM kap_delta)"
                    )
                live.execute("INSERT INTO " + table + " BY NAME SELECT * FROM kap_delta")
                live.unregister("kap_delta")
            db.bump_data_version(live)
            live.execute("COMMIT")
        except Exception:
            with contextlib.suppress(duckdb.Error):
                live.execute("ROLLBACK")
            raise


def load_with_connection(
    con: duckdb.DuckDBPyConnection,
    files: Sequence[str | os.PathLike[str] | SourceFile],
    *,
    on_error: OnError = "reject",
    rejects: str | os.PathLike[str] | None = None,
    dry_run: bool = False,
    today: dt.date | None = None,
    refresh: bool = True,
    publish: Callable[[LoadResult], None] | None = None,
    new_patients: bool = False,
    fhir_ids_are_pseudonymous: bool = False,
    key: bytes | None = None,
    private: bool = False,
    scans: ScanAhead | None = None,
) -> LoadResult:
    """Load into ``con`` itself. ``refresh=False`` skips recomputing the stored outcomes (a staging copy
    needs none); ``publish``, when given, is called with the result once ``con`` has committed and any
    rejects file is written (:func:`load_files` uses it to write a staging copy's new rows into the real
    database; if it fails, the load has failed). ``private``: ``con`` is a private copy that is thrown away
    unless the load succeeds, so no transaction is needed; each file's work tables are then dropped as soon
    as they are done with (the memory they hold is freed at once, not at the end of a transaction)."""
    if on_error not in ("reject", "quarantine"):
        raise ValueError(f"on_error must be 'reject' or 'quarantine', not {on_error!r}")
    srcs = [SourceFile.of(f) for f in files]
    loader = Loader(con, on_error=on_error, today=today, new_patients=new_patients, scans=scans)
    result = loader.result
    try:
        # Files are read into temporary tables before the transaction starts: reading touches no table of
        # the database, and a file the engine cannot read must not abort the transaction.
        con.execute(
            "CREATE OR REPLACE TEMP TABLE row_errors "
            "(file_no INTEGER, row_no BIGINT, col VARCHAR, value VARCHAR, reason VARCHAR)"
        )
        con.execute("CREATE OR REPLACE TEMP TABLE load_patients (patient_id VARCHAR)")
        staged: list[_Staged] = []
        index = 0
        for src in srcs:
            if not sources.is_converted(src):
                st = loader._stage(index, src)
                index += 1
                if st is None:
                    result.files[-1].refused = True
                else:
                    staged.append(st)
                continue
            if key is None and sources.needs_key(src, fhir_ids_are_pseudonymous):
                key = sources.pseudonym_key(con)
            try:
                converted = sources.convert(src, key=key, fhir_ids_are_pseudonymous=fhir_ids_are_pseudonymous)
            except FileError as exc:
                sha = fingerprint(src.path)[0] if src.path.is_file() else ""
                result.files.append(FileResult(src.name, None, sha, refused=True))
                loader._problem(src, str(exc), row=exc.row, column=None, value=None)
                continue
            for info in converted.infos:
                loader._problem(src, info, row=None, column=None, value=None, severity="info")
            for part in converted.parts:
                part_src = SourceFile(src.path, part.name, src.mapping)
                st = loader._stage_table(index, part_src, part.kind, part.table, part.sha256, part.label)
                index += 1
                if st is None:
                    result.files[-1].refused = True
                else:
                    staged.append(st)
        if not private:
            con.execute("BEGIN TRANSACTION")
        file_errors = any(p.severity == "error" for p in result.problems)
        # Identical re-import of a whole file is a no-op, and so is the same file given twice in one call.
        # A converted file gives a part per kind (FHIR), or per scale (wide and REDCap layouts): its identity
        # is the file's sha256 with the part's kind (and name, for a scale's part).
        first_of: dict[tuple[str, str, str], _Staged] = {}
        repeats: list[tuple[_Staged, _Staged]] = []
        for st in list(staged):
            kind = st.result.kind or ""
            name = st.src.name if st.label else ""
            row = con.execute(
                "SELECT batch_id FROM batches WHERE sha256 = ? AND kind = ? AND (? = '' OR file_name = ?) "
                "AND undone_at IS NULL ORDER BY batch_id LIMIT 1",
                [st.result.sha256, kind, name, name],
            ).fetchone()
            identity = (st.result.sha256, kind, name)
            if (row and st.result.sha256) or identity in first_of:
                loader.count_rows(st)  # not checked, so not counted yet
            if row and st.result.sha256:
                st.result.identical_to_batch = int(row[0])
                st.result.rows_already_present = st.result.rows_read
                staged.remove(st)
                if private:
                    loader._release(st, keep_raw=False)
            elif identity in first_of and st.result.sha256:
                repeats.append((st, first_of[identity]))
                staged.remove(st)
                if private:
                    loader._release(st, keep_raw=False)
            else:
                first_of[identity] = st
        staged.sort(key=lambda s: KIND_ORDER.index(s.result.kind or "scores"))
        for st in staged:
            parse = {"patients": loader._parse_patients, "sessions": loader._parse_sessions}
            parse.get(st.result.kind or "scores", loader._parse_scores)(st)
            file_errors = file_errors or loader.refused_late  # refused whole as its rows were read
            # Insert as we go so later files (scores) see this call's patients and sessions.
            if not file_errors and not (on_error == "reject" and loader.has_row_errors()):
                loader._insert(st)
            if private:  # its rows are checked (and loaded): only a rejects file still needs the raw rows
                loader._release(st, keep_raw=st.n_bad > 0)
        for repeat, first in repeats:
            repeat.result.identical_to_batch = first.result.batch_id
            repeat.result.rows_already_present = repeat.result.rows_read
        loader.collect_row_errors(staged)
        order = {src.name: i for i, src in enumerate(srcs)}
        result.problems.sort(key=lambda p: (order.get(p.file, 0), p.row or 0))
        errors = result.errors
        for refused in result.files:
            if refused.refused:  # refused as a whole: every row it has is rejected
                refused.rows_rejected = refused.rows_read
        if file_errors or (errors and on_error == "reject") or dry_run:
            if not private:
                con.execute("ROLLBACK")
            for st in staged:
                st.result.rows_rejected = st.n_bad
                st.result.batch_id = None  # rolled back: no batch was recorded
            if (file_errors or (errors and on_error == "reject")) and not dry_run:
                raise ImportRejected(result)
            return result
        loaded = any(st.result.batch_id is not None for st in staged)
        if loaded and refresh:
            db.bump_data_version(con)
        if not private:
            con.execute("COMMIT")
        with_rejects = [st for st in staged if st.n_bad]
        target_base = Path(rejects) if rejects else None
        try:
            for st in with_rejects:
                loader._write_rejects(st, _rejects_target(target_base, st, len(with_rejects)))
            # Last: publishing may hand ``con`` over (a whole copy takes the database's place).
            if loaded and publish is not None:
                publish(result)
        except BaseException:
            for st in with_rejects:  # nothing was loaded: no rejects file either
                if st.result.rejects_path is not None:
                    with contextlib.suppress(OSError):
                        st.result.rejects_path.unlink()
                    st.result.rejects_path = None
            raise
        result.committed = True
        return result
    except ImportRejected:
        raise
    except Exception:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise
    finally:
        # A committed load leaves its work tables behind; drop them so the connection can load again.
        _drop_work_tables(con)
