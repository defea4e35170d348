"""Commit and undo: each file's good rows become one batch; a batch can be undone."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import duckdb

from kapdata import csvsafe, db
from kapdata.ingest.staging import _Staged
from kapdata.ingest.validation import Validator, names_only


class Loader(Validator):
    """One load call: stage every file, validate, then commit or roll back."""

    # -- commit
    def _next_batch_id(self) -> int:
        row = self.con.execute("SELECT coalesce(max(batch_id), 0) + 1 FROM batches").fetchone()
        return int(row[0]) if row else 1

    def _insert(self, st: _Staged) -> None:
        res = st.result
        kind = res.kind
        assert kind is not None
        batch_id = self._next_batch_id()
        clean = f"{st.table}_clean"
        # One row per key (identical duplicates within the file collapse), minus what is already there.
        if kind == "patients":
            keys = ["patient_id"]
        elif kind == "sessions":
            keys = ["patient_id", "session_date"]
        else:
            keys = ["patient_id", "instrument", "assessed_at"]
        key = ", ".join(keys)
        if st.has_duplicate_keys:
            source = (
                f"(SELECT *, row_number() OVER (PARTITION BY {key} ORDER BY row_no) AS dup_rank "
                f"FROM {clean} WHERE ok) WHERE dup_rank = 1"
            )
            dropped = "row_no, ok, dup_rank"
        else:
            source, dropped = f"{clean} WHERE ok", "row_no, ok"
        rows_sql = f"SELECT * EXCLUDE ({dropped}) FROM {source}"
        if kind == "patients":
            present = False  # a patient already there is filled in or left alone, never inserted twice
        else:
            found = self.con.execute("SELECT EXISTS (SELECT 1 FROM " + kind + ")").fetchone()
            present = bool(found and found[0])
        if st.has_duplicate_keys or present:
            # A copy, from which the rows already in the table are taken out below.
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE new_rows AS {rows_sql}")
            rows = "new_rows"
        else:  # nothing to take out: read the checked rows where they are
            rows = f"({rows_sql})"
        count_sql = f"SELECT count(*) FROM {clean} WHERE ok"
        ok_row = self.con.execute(count_sql).fetchone()
        ok_rows = int(ok_row[0]) if ok_row else 0
        if kind == "patients":
            # A row that names a patient and gives none of the attributes (a FHIR Patient: no other field is
            # read; a patients file with only patient_id) says the patient exists, not what they are: a new
            # patient is created with unknown attributes, which a later patients file fills in, and a
            # patient already there is left as it is.
            named_only = names_only("n")
            fill = self.con.execute(
                f"""SELECT count(*) FROM {rows} n JOIN patients p USING (patient_id)
                   WHERE NOT p.attributes_known AND NOT ({named_only})"""
            ).fetchone()
            filled = int(fill[0]) if fill else 0
            self.con.execute(
                f"""UPDATE patients AS p SET clinic = n.clinic, provider = n.provider, age_band = n.age_band,
                       sex = n.sex, primary_condition = n.primary_condition, route = n.route,
                       attributes_known = true, attributes_batch_id = ?
                   FROM {rows} n WHERE p.patient_id = n.patient_id AND NOT p.attributes_known
                       AND NOT ({named_only})""",
                [batch_id],
            )
            unknown = self.con.execute(
                f"""SELECT count(*) FROM {rows} n
                   WHERE {named_only} AND patient_id NOT IN (SELECT patient_id FROM patients)"""
            ).fetchone()
            if unknown and unknown[0]:
                self._problem(
                    st.src,
                    f"{unknown[0]} patient(s) named without any attribute (clinic, provider, age band, sex, "
                    "condition, route): created with unknown attributes, which a patients file can fill in",
                    row=None,
                    column="patient_id",
                    value=None,
                    severity="info",
                )
            inserted = self.con.execute(
                f"""INSERT INTO patients
                   SELECT patient_id, clinic, provider, age_band, sex, primary_condition, route,
                          NOT ({named_only}), ?, CASE WHEN {named_only} THEN NULL ELSE ? END
                   FROM {rows} n WHERE patient_id NOT IN (SELECT patient_id FROM patients)""",
                [batch_id, batch_id],
            ).fetchone()
            loaded = (int(inserted[0]) if inserted else 0) + filled
        else:
            # key and kind are our own identifiers (the contract's key columns and table name)
            if present:
                already = f"DELETE FROM new_rows WHERE ({key}) IN (SELECT ({key}) FROM {kind})"
                self.con.execute(already)
            new_patients = self.con.execute(
                f"""SELECT DISTINCT patient_id FROM {rows} n
                   WHERE patient_id NOT IN (SELECT patient_id FROM patients) ORDER BY patient_id"""
            ).fetchall()
            if new_patients:
                res.new_patients = len(new_patients)
                shown = ", ".join(r[0] for r in new_patients[:20])
                more = f" and {len(new_patients) - 20} more" if len(new_patients) > 20 else ""
                self._problem(
                    st.src,
                    f"{len(new_patients)} patient(s) are in no patients file; "
                    f"created with unknown attributes: {shown}{more}",
                    row=None,
                    column="patient_id",
                    value=None,
                    severity="info",
                )
                self.con.execute(
                    f"""INSERT INTO patients (patient_id, attributes_known, batch_id)
                       SELECT DISTINCT patient_id, false, ? FROM {rows} n
                       WHERE patient_id NOT IN (SELECT patient_id FROM patients)""",
                    [batch_id],
                )
            if kind == "sessions":
                sql = f"""INSERT INTO sessions
                       SELECT patient_id, session_date, route, dose_mg, dose_mg_per_kg, bp_sys_pre,
                              bp_dia_pre, bp_sys_post, bp_dia_post, dissociation, side_effects, ?
                       FROM {rows} n"""
            else:
                sql = f"""INSERT INTO scores (patient_id, instrument, assessed_on, assessed_at, total, items,
                       phase, batch_id, prorated)
                       SELECT patient_id, instrument, assessed_on, assessed_at, total, items, phase, ?,
                              prorated
                       FROM {rows} n"""
            inserted = self.con.execute(sql, [batch_id]).fetchone()
            loaded = int(inserted[0]) if inserted else 0
        res.rows_loaded = loaded
        res.rows_rejected = st.n_bad
        res.rows_already_present = ok_rows - loaded
        if kind == "patients":
            res.rows_already_present = ok_rows - loaded
        self.con.execute(
            "INSERT INTO batches (batch_id, file_name, sha256, kind, rows_read, rows_loaded, "
            "rows_already_present, rows_rejected, new_patients, on_error, loaded_at, undone_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, current_localtimestamp(), NULL)",
            [
                batch_id,
                st.src.name,
                res.sha256,
                kind,
                res.rows_read,
                res.rows_loaded,
                res.rows_already_present,
                res.rows_rejected,
                res.new_patients,
                self.on_error,
            ],
        )
        res.batch_id = batch_id

    def _release(self, st: _Staged, *, keep_raw: bool) -> None:
        """Drop a file's work tables once its rows are checked and loaded (``keep_raw``: its raw rows, for
        its rejects file)."""
        self.con.execute("DROP VIEW IF EXISTS " + st.table)
        if st.clean_base is not None:
            self.con.execute("DROP VIEW IF EXISTS " + st.table + "_clean")
        tables = (st.table + "_clean", st.table + "_clean_rows", st.table + "_bad", "new_rows")
        for table in tables if st.clean_base is None else tables[1:]:
            self.con.execute("DROP TABLE IF EXISTS " + table)
        if st.direct:
            self.con.execute("DROP VIEW IF EXISTS " + st.raw)  # the file itself: nothing to keep
        elif not keep_raw:
            self.con.execute("DROP TABLE IF EXISTS " + st.raw)

    def _write_rejects(self, st: _Staged, target: Path) -> None:
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE reject_reasons AS SELECT row_no, "
            "CASE WHEN col IS NULL THEN reason ELSE col || ': ' || reason END AS reason "
            "FROM row_errors WHERE file_no = ?",
            [st.index],
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        frame = self.con.execute(
            f"""SELECT r.* EXCLUDE (_rn{", _kap_row" if st.row_expr == "_kap_row" else ""}{
                ", _kap_error" if st.has_kap_error else ""
            }),
                       e.row_no AS _row, e.reasons AS _errors
                FROM (SELECT *, {st.row_expr} AS _rn FROM {st.raw}) r
                JOIN (SELECT row_no, string_agg(reason, '; ' ORDER BY reason) AS reasons
                      FROM reject_reasons GROUP BY row_no) e ON e.row_no = r._rn
                ORDER BY e.row_no"""
        ).df()
        csvsafe.write_csv(frame, target)
        st.result.rejects_path = target


_WORK_TABLE_RE = re.compile(
    r"^(raw_\d+(_csv)?|parsed_\d+(_clean|_clean_rows|_bad)?|row_errors|load_patients|new_rows|reject_reasons|"
    r"still_used|key_conflicts)$"
)


def _drop_work_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Drop this module's temporary work tables and views (names matched against our own fixed patterns)."""
    with contextlib.suppress(duckdb.Error):
        # The views first: they read the tables.
        views = con.execute("SELECT view_name FROM duckdb_views() WHERE temporary").fetchall()
        for (name,) in views:
            if _WORK_TABLE_RE.match(name):
                con.execute("DROP VIEW IF EXISTS temp.main." + name)
        names = con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()
        for (name,) in names:
            if _WORK_TABLE_RE.match(name):
                con.execute("DROP TABLE IF EXISTS temp.main." + name)


# ------------------------------------------------------------------------------------------- batches


def list_batches(con: duckdb.DuckDBPyConnection) -> list[dict[str, object]]:
    cur = con.execute("SELECT * FROM batches ORDER BY batch_id")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


class UndoError(Exception):
    pass


def undo_batch(batch_id: int, db_path: str | os.PathLike[str] | None = None) -> dict[str, int]:
    """Remove one batch's rows in one transaction; returns counts of what was removed."""
    with db.session(db_path) as con:
        return undo_with_connection(con, batch_id)


def undo_with_connection(con: duckdb.DuckDBPyConnection, batch_id: int) -> dict[str, int]:
    row = con.execute("SELECT kind, undone_at FROM batches WHERE batch_id = ?", [batch_id]).fetchone()
    if row is None:
        raise UndoError(f"no batch {batch_id}")
    if row[1] is not None:
        raise UndoError(f"batch {batch_id} was already undone at {row[1]}")
    counts: dict[str, int] = {}
    con.execute("BEGIN TRANSACTION")
    try:
        for table in ("scores", "sessions"):
            r = con.execute("DELETE FROM " + table + " WHERE batch_id = ?", [batch_id]).fetchone()
            counts[table] = int(r[0]) if r else 0
        # Attributes this batch filled in on patients created earlier go back to unknown.
        r = con.execute(
            """UPDATE patients SET clinic = NULL, provider = NULL, age_band = NULL, sex = NULL,
                   primary_condition = NULL, route = NULL, attributes_known = false,
                   attributes_batch_id = NULL
               WHERE attributes_batch_id = ? AND batch_id <> ?""",
            [batch_id, batch_id],
        ).fetchone()
        counts["patients_reset"] = int(r[0]) if r else 0
        # Patients this batch created (unknown) whose attributes a patients file gave later now belong
        # to that patients batch: they stay.
        con.execute(
            """UPDATE patients SET batch_id = attributes_batch_id
               WHERE batch_id = ? AND attributes_batch_id IS NOT NULL AND attributes_batch_id <> ?""",
            [batch_id, batch_id],
        )
        # Patients this batch created: kept (attributes unknown) while other batches still refer to them.
        con.execute(
            """CREATE OR REPLACE TEMP TABLE still_used AS
               SELECT patient_id, min(batch_id) AS batch_id FROM (
                   SELECT patient_id, batch_id FROM scores
                   UNION ALL SELECT patient_id, batch_id FROM sessions)
               GROUP BY patient_id"""
        )
        r = con.execute(
            """UPDATE patients AS p SET clinic = NULL, provider = NULL, age_band = NULL, sex = NULL,
                   primary_condition = NULL, route = NULL, attributes_known = false,
                   attributes_batch_id = NULL,
                   batch_id = u.batch_id
               FROM still_used u WHERE p.patient_id = u.patient_id AND p.batch_id = ?""",
            [batch_id],
        ).fetchone()
        counts["patients_kept"] = int(r[0]) if r else 0
        r = con.execute("DELETE FROM patients WHERE batch_id = ?", [batch_id]).fetchone()
        counts["patients"] = int(r[0]) if r else 0
        con.execute("UPDATE batches SET undone_at = current_localtimestamp() WHERE batch_id = ?", [batch_id])
        db.bump_data_version(con)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        _drop_work_tables(con)
    return counts
