"""The pipeline: stage every source, validate, commit in one transaction (checked in a private copy)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import duckdb

from kapdata import db
from kapdata.ingest import sources
from kapdata.ingest.commit import Loader, _drop_work_tables
from kapdata.ingest.contract import KIND_ORDER, OnError, SourceFile
from kapdata.ingest.readers import FileError, fingerprint
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

    The files are read and checked in a private in-memory database holding a copy of what they are checked
    against (:func:`_staging`), so checking holds no lock on the database file: other people's pages and
    commands keep working however long a large file takes. Only the rows that pass are then written, in one
    short transaction (:func:`_publish`); if the database changed meanwhile (another import, an undo, a
    settings change) the check is run again on the new state.
    """
    target = db.db_path(db_path)
    if not dry_run and not target.exists():
        with db.session(target):  # a first load creates the database
            pass
    key = _key_for(files, target, dry_run, fhir_ids_are_pseudonymous)
    for _attempt in range(STALE_RETRIES):
        with _staging(target) as (stage, version):
            publish = None if dry_run else (lambda result: _publish(stage, target, version, result))
            try:
                return load_with_connection(
                    stage,
                    files,
                    on_error=on_error,
                    rejects=rejects,
                    dry_run=dry_run,
                    today=today,
                    refresh=False,
                    publish=publish,
                    new_patients=new_patients,
                    fhir_ids_are_pseudonymous=fhir_ids_are_pseudonymous,
                    key=key,
                )
            except _StaleSnapshot:
                continue
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


@contextlib.contextmanager
def _staging(target: Path) -> Iterator[tuple[duckdb.DuckDBPyConnection, int]]:
    """A private in-memory database with the schema and a copy of the tables an import is checked against,
    taken in one short read of ``target`` (none if it does not exist yet); yields it and the data version
    the copy was taken at."""
    stage = duckdb.connect()
    try:
        db.ensure_schema(stage)
        version = 0
        if target.exists():
            with db.reader(target) as live:
                version = _data_version(live)
                with live.cursor() as cur:  # a fresh cursor: the reader's own checks may leave results open
                    copies = {t: cur.sql("SELECT * FROM " + t).to_arrow_table() for t in _SNAPSHOT_TABLES}
            for table, rows in copies.items():
                if rows.num_rows:
                    stage.register("kap_copy", rows)
                    stage.execute("INSERT INTO " + table + " BY NAME SELECT * FROM kap_copy")
                    stage.unregister("kap_copy")
        yield stage, version
    finally:
        stage.close()


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
) -> LoadResult:
    """Load into ``con`` itself. ``refresh=False`` skips recomputing the stored outcomes (a staging copy
    needs none); ``publish``, when given, is called with the result once ``con`` has committed and before
    any rejects file is written (:func:`load_files` uses it to write a staging copy's new rows into the real
    database; if it fails, the load has failed)."""
    if on_error not in ("reject", "quarantine"):
        raise ValueError(f"on_error must be 'reject' or 'quarantine', not {on_error!r}")
    srcs = [SourceFile.of(f) for f in files]
    loader = Loader(con, on_error=on_error, today=today, new_patients=new_patients)
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
            if row and st.result.sha256:
                st.result.identical_to_batch = int(row[0])
                st.result.rows_already_present = st.result.rows_read
                staged.remove(st)
            elif identity in first_of and st.result.sha256:
                repeats.append((st, first_of[identity]))
                staged.remove(st)
            else:
                first_of[identity] = st
        staged.sort(key=lambda s: KIND_ORDER.index(s.result.kind or "scores"))
        for st in staged:
            parse = {"patients": loader._parse_patients, "sessions": loader._parse_sessions}
            parse.get(st.result.kind or "scores", loader._parse_scores)(st)
            if not file_errors:
                # Insert as we go so later files (scores) see this call's patients and sessions.
                if on_error == "reject" and loader.has_row_errors():
                    continue
                loader._insert(st)
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
        con.execute("COMMIT")
        if loaded and publish is not None:
            publish(result)
        with_rejects = [st for st in staged if st.n_bad]
        if with_rejects:
            target_base = Path(rejects) if rejects else None
            for st in with_rejects:
                loader._write_rejects(st, _rejects_target(target_base, st, len(with_rejects)))
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
