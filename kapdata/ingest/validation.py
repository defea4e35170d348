"""Validation: set-based SQL over the staged rows, every problem naming the file, row, column and value."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import duckdb

from kapdata import instruments as reg
from kapdata.ingest.checks import (
    Check,
    _alias_case,
    _common_checks,
    _date_checks,
    _fold_id,
    _identifier_value_checks,
    _in_list,
    _lit,
    _num,
    _number_column,
    _parse_date_sql,
    _range_check,
    _route_check,
    _whole,
)
from kapdata.ingest.contract import (
    AGE_BANDS,
    COLUMNS,
    CONDITIONS,
    MAX_PROBLEMS_LISTED,
    PHASE_ALIASES,
    PRORATE_MAX_MISSING,
    PRORATED_SCALES,
    ROUTE_ALIASES,
    SEX_ALIASES,
    SEXES,
    SIDE_EFFECTS,
)
from kapdata.ingest.readers import _diagnose_csv
from kapdata.ingest.staging import Stager, _Staged

#: A patient's attributes: the patients columns besides the id.
PATIENT_ATTRIBUTES: tuple[str, ...] = COLUMNS["patients"][1:]


def names_only(alias: str) -> str:
    """SQL: the patients row ``alias`` gives none of the attributes (it only names the patient)."""
    return " AND ".join(f"{alias}.{c} IS NULL" for c in PATIENT_ATTRIBUTES)


class Validator(Stager):
    def _checked_clean(self, st: _Staged, checks: list[Check], typed: str, also_bad: str = "false") -> bool:
        """One pass over the parsed rows (the view ``st.table``) makes ``<table>_clean``: each row's typed
        values (the SELECT list ``typed``) and ``ok``, false where any row rule holds. The per-rule report
        then runs only over the rows that failed (each rule looks at its own row only, so that finds
        exactly what running every rule over every row would). Rules marked ``in_pass=False`` are left
        out of ``ok``; ``also_bad`` stands for them there and must hold on a row exactly when one of them
        does (or when a rule in the pass does)."""
        if st.has_kap_error:
            # A row its converter refused is reported for that reason alone (its other cells may be empty).
            checks = [replace(c, bad=f"kap_error IS NULL AND ({c.bad})") for c in checks] + [
                Check("", "kap_error IS NOT NULL", "kap_error", value="NULL")
            ]
        terms = [f"coalesce({c.bad}, false)" for c in checks if c.in_pass]
        if also_bad != "false":
            terms.append(f"coalesce({also_bad}, false)")
        bad = " OR ".join(terms) if terms else "false"
        clean = st.table + "_clean"
        # A direct file's rows are numbered from their order afterwards (``_number_clean``).
        into, row_no = (clean + "_rows", "") if st.direct else (clean, "row_no, ")
        sql = f"CREATE OR REPLACE TEMP TABLE {into} AS SELECT {row_no}NOT ({bad}) AS ok, {typed} "
        sql += f"FROM {st.table}"
        params = {"today": self.today} if "$today" in sql else None
        if st.direct:
            if not self._read_direct(st, sql, params):
                return False
        else:
            self.con.execute(sql, params)
        st.clean_ready = True
        found = self.con.execute("SELECT count(*) FROM query_table(?) WHERE NOT ok", [clean]).fetchone()
        if not found or found[0] == 0:
            return True
        self._text_table(st)  # the failing rows' cells, as the file has them
        failed = st.table + "_bad"
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {failed} AS SELECT * FROM {st.table} "
            f"WHERE row_no IN (SELECT row_no FROM {clean} WHERE NOT ok)"
        )
        selects = [
            f"SELECT row_no, {_lit(c.column) if c.column else 'NULL'} AS col, "
            f"CAST({c.value or c.column} AS VARCHAR) AS value, "
            f"{c.reason} AS reason FROM {failed} WHERE coalesce({c.bad}, false)"
            for c in checks
        ]
        report = " UNION ALL ".join(selects)
        self._record(st, report, {"today": self.today} if "$today" in report else None)
        self._mark_bad(st)
        return True

    def _read_direct(self, st: _Staged, sql: str, params: dict[str, object] | None) -> bool:
        """Run the checking pass ``sql`` over a direct file (the first read of all its rows), then number
        them. False if the file is refused here: a malformed row (named, as a copy would name it), or a
        file that changed since it was staged."""
        try:
            self.con.execute(sql, params)
        except duckdb.OutOfMemoryException:
            raise
        except duckdb.Error:
            found = _diagnose_csv(st.src.path, len(st.columns))
            if found.row is None:
                raise  # no row of the file is at fault: a failure of ours, not shown as the file's
            self.refused_late = True
            self._problem(st.src, str(found), row=found.row, column=None, value=None)
            return False
        self._number_clean(st)
        return not self.refused_late

    def _record(self, st: _Staged, select_sql: str, params: object = None) -> None:
        """Store the rows of ``select_sql`` (row_no, column, value, reason) as errors of this file: one
        set-based INSERT, however many rows are bad (only the first ones reach the report)."""
        inserted = self.con.execute(
            f"INSERT INTO row_errors SELECT {int(st.index)}, * FROM ({select_sql})", params
        ).fetchone()
        if inserted and inserted[0]:
            st.unmarked = True
            self._text_table(st)  # its rejects file shows the rows as the file has them

    def _mark_bad(self, st: _Staged) -> None:
        if not st.unmarked:
            return
        st.unmarked = False
        if st.clean_base is None:
            target, row_no = st.table + "_clean", "row_no"
        else:  # a view: mark the rows it numbers
            target, row_no = st.table + "_clean_rows", f"rowid + {int(st.clean_base)}"
        self.con.execute(
            f"UPDATE {target} SET ok = false WHERE ok AND {row_no} IN "
            "(SELECT row_no FROM row_errors WHERE file_no = ?)",
            [st.index],
        )
        row = self.con.execute(
            "SELECT count(DISTINCT row_no) FROM row_errors WHERE file_no = ?", [st.index]
        ).fetchone()
        st.n_bad = int(row[0]) if row else 0

    def _lookalike_ids(self, st: _Staged) -> None:
        """IDs that differ only by letter case or look-alike characters (``k00001`` beside ``K00001``,
        ``KO0001``) are one patient typed two ways, or two patients easily mixed up: refused, within the
        file and against the database."""
        fold = _fold_id("patient_id")
        # Folded once per distinct ID, not once per row (a scores file has many rows per patient).
        probe = self.con.execute(
            f"SELECT count(*) FROM (SELECT {fold} AS k FROM "
            f"(SELECT DISTINCT patient_id FROM {st.table}_clean WHERE ok) GROUP BY k HAVING count(*) > 1)"
        ).fetchone()
        hint = "only by letter case or look-alike characters (O/0, I/L/1): use one spelling for one patient"
        if probe and probe[0]:
            self._record(
                st,
                f"""WITH f AS (SELECT row_no, patient_id, {fold} AS k FROM {st.table}_clean WHERE ok),
                g AS (SELECT k, arg_min(patient_id, row_no) AS first_id, min(row_no) AS first_row
                      FROM f GROUP BY k HAVING count(DISTINCT patient_id) > 1)
                SELECT f.row_no, 'patient_id', f.patient_id,
                       'patient_id differs from ' || g.first_id || ' (row ' || g.first_row || ') '
                       || {_lit(hint)}
                FROM f JOIN g USING (k) WHERE f.patient_id <> g.first_id""",
            )
            self._mark_bad(st)
        self._record(
            st,
            f"""WITH ids AS (SELECT DISTINCT patient_id FROM {st.table}_clean WHERE ok),
            f AS (SELECT patient_id, {fold} AS k FROM ids
                  WHERE patient_id NOT IN (SELECT patient_id FROM patients)),
            d AS (SELECT {_fold_id("patient_id")} AS k, min(patient_id) AS db_id FROM patients GROUP BY k),
            hits AS (SELECT f.patient_id, d.db_id FROM f JOIN d USING (k))
            SELECT t.row_no, 'patient_id', t.patient_id,
                   'patient_id differs from ' || hits.db_id || ', already in the database, ' || {_lit(hint)}
            FROM {st.table}_clean t JOIN hits USING (patient_id) WHERE t.ok""",
        )
        self._mark_bad(st)

    def _unknown_patients(self, st: _Staged) -> None:
        """A score or session for a patient neither in the database nor named by a patients file (or FHIR
        Patient resources) of this load is an error, unless new patients are allowed: a mistyped ID
        (``K0O173``) must not quietly become a new patient."""
        if self.new_patients:
            return
        reason = (
            "'patient ' || patient_id || ' is not in the database and no patients file in this load names "
            "it; check the ID, load a patients file, or allow new patients'"
        )
        self._record(
            st,
            f"""SELECT row_no, 'patient_id', patient_id, {reason} FROM {st.table}_clean
            WHERE ok AND patient_id NOT IN (SELECT patient_id FROM patients)
              AND patient_id NOT IN (SELECT patient_id FROM load_patients)""",
        )
        self._mark_bad(st)

    def has_row_errors(self) -> bool:
        row = self.con.execute("SELECT EXISTS (SELECT 1 FROM row_errors)").fetchone()
        return bool(row and row[0])

    def collect_row_errors(self, staged: Sequence[_Staged]) -> None:
        """The first ``MAX_PROBLEMS_LISTED`` row errors become Problems; the rest are counted."""
        names = {st.index: st.src for st in staged}
        rows = self.con.execute(
            "SELECT file_no, row_no, col, value, reason FROM row_errors "
            "ORDER BY file_no, row_no, col, reason LIMIT ?",
            [MAX_PROBLEMS_LISTED],
        ).fetchall()
        for file_no, row_no, col, value, reason in rows:
            self._problem(names[int(file_no)], reason, row=int(row_no), column=col, value=value)
        totals = self.con.execute(
            "SELECT count(*), count(DISTINCT (file_no, row_no)) FROM row_errors"
        ).fetchone()
        total, bad_rows = (int(totals[0]), int(totals[1])) if totals else (0, 0)
        self.result.unlisted_errors = max(total - len(rows), 0)
        self.result.error_rows = bad_rows

    # -- per kind
    def _parse_patients(self, st: _Staged) -> None:
        cols = COLUMNS["patients"]
        self._create_parsed(
            st,
            lambda: (
                f"""CREATE OR REPLACE TEMP VIEW {st.table} AS
            SELECT *,
                   replace(replace(replace(age_band, ' ', ''), '–', '-'), '—', '-') AS age_band__v,
                   {_alias_case("sex", SEX_ALIASES)} AS sex__v,
                   CASE WHEN upper(primary_condition) IN ('PTSD', 'MDD', 'GAD') THEN upper(primary_condition)
                        WHEN lower(primary_condition) = 'other' THEN 'other' END AS condition__v,
                   {_alias_case("route", ROUTE_ALIASES)} AS route__v
            FROM (SELECT {self._select_text(st, cols)} FROM {st.raw})"""
            ),
        )
        checks = (
            _common_checks()
            + [
                Check(
                    "age_band",
                    f"age_band IS NOT NULL AND age_band__v NOT IN {_in_list(AGE_BANDS)}",
                    _lit("unknown age band; expected one of " + ", ".join(AGE_BANDS)),
                ),
                Check(
                    "sex",
                    "sex IS NOT NULL AND sex__v IS NULL",
                    _lit("unknown sex; expected one of " + ", ".join(SEXES)),
                ),
                Check(
                    "primary_condition",
                    "primary_condition IS NOT NULL AND condition__v IS NULL",
                    _lit("unknown condition; expected one of " + ", ".join(CONDITIONS)),
                ),
                _route_check(),
            ]
            + _identifier_value_checks()
        )
        typed = (
            "patient_id, clinic, provider, age_band__v AS age_band, sex__v AS sex, "
            "condition__v AS primary_condition, route__v AS route"
        )
        if not self._checked_clean(st, checks, typed):
            return  # the file is refused whole
        self._lookalike_ids(st)
        value_cols = list(PATIENT_ATTRIBUTES)
        self._key_conflicts(st, ["patient_id"], value_cols, "patient_id", "patient", None)
        # Against the database: a patient with known attributes that differ is a conflict; a patient
        # created earlier with unknown attributes (from a scores/sessions file) gets them filled in.
        diffs = ", ".join(
            f"CASE WHEN c.{v} IS DISTINCT FROM p.{v} THEN '{v} ' || coalesce(p.{v}, '(empty)') END"
            for v in value_cols
        )
        differs = " OR ".join(f"c.{v} IS DISTINCT FROM p.{v}" for v in value_cols)
        # A row that gives no attribute only names the patient (a FHIR Patient): never a conflict.
        named_only = names_only("c")
        rows = f"""SELECT c.row_no, 'patient_id', c.patient_id,
                   'patient already in the database (batch ' || p.batch_id || ') with other attributes ('
                   || concat_ws(', ', {diffs}) || '); undo that batch first to replace it'
            FROM {st.table}_clean c JOIN patients p USING (patient_id)
            WHERE c.ok AND p.attributes_known AND ({differs}) AND NOT ({named_only})"""
        self._record(st, rows)
        self._mark_bad(st)
        # Patients this load names: its scores and sessions may refer to them (README, "New patients").
        self.con.execute(
            f"INSERT INTO load_patients SELECT DISTINCT patient_id FROM {st.table}_clean "
            "WHERE patient_id IS NOT NULL"
        )

    def _parse_sessions(self, st: _Staged) -> None:
        cols = COLUMNS["sessions"]
        systolic, diastolic = "systolic blood pressure (mmHg)", "diastolic blood pressure (mmHg)"
        numbers = {  # column: (whole number?, lowest, highest, what it is)
            "dose_mg": (False, 0, 2000, "dose_mg"),
            "dose_mg_per_kg": (False, 0, 10, "dose_mg_per_kg"),
            "bp_sys_pre": (True, 50, 300, systolic),
            "bp_sys_post": (True, 50, 300, systolic),
            "bp_dia_pre": (True, 20, 200, diastolic),
            "bp_dia_post": (True, 20, 200, diastolic),
            "dissociation": (True, 0, 24, "dissociation (CADSS-6 total)"),
        }
        self._create_parsed(
            st,
            lambda: (
                f"""CREATE OR REPLACE TEMP VIEW {st.table} AS
            SELECT *,
                   CAST({_parse_date_sql("session_date")} AS DATE) AS session_date__d,
                   {_alias_case("route", ROUTE_ALIASES)} AS route__v,
                   list_filter(string_split(lower(coalesce(side_effects, '')), ';'), lambda x: trim(x) <> '')
                       AS side_effects__l,
                   {", ".join(_number_column(c, whole) for c, (whole, *_) in numbers.items())}
            FROM (SELECT {self._select_text(st, cols)} FROM {st.raw})"""
            ),
        )
        checks = _common_checks() + _date_checks("session_date") + [_route_check()]
        for col, (whole, low, high, what) in numbers.items():
            checks += _range_check(col, low, high, what, whole=whole)
        checks.append(
            Check(
                "side_effects",
                f"len(list_filter(side_effects__l, lambda x: trim(x) NOT IN {_in_list(SIDE_EFFECTS)})) > 0",
                _lit("unknown side effect; use ';' between any of " + ", ".join(SIDE_EFFECTS)),
            )
        )
        typed = """patient_id, session_date__d AS session_date, route__v AS route,
                   dose_mg__n AS dose_mg, dose_mg_per_kg__n AS dose_mg_per_kg,
                   try_cast(bp_sys_pre__n AS SMALLINT) AS bp_sys_pre,
                   try_cast(bp_dia_pre__n AS SMALLINT) AS bp_dia_pre,
                   try_cast(bp_sys_post__n AS SMALLINT) AS bp_sys_post,
                   try_cast(bp_dia_post__n AS SMALLINT) AS bp_dia_post,
                   try_cast(dissociation__n AS SMALLINT) AS dissociation,
                   nullif(array_to_string(list_transform(side_effects__l, lambda x: trim(x)), ';'), '')
                       AS side_effects"""
        if not self._checked_clean(st, checks, typed):
            return  # the file is refused whole
        self._lookalike_ids(st)
        self._unknown_patients(st)
        value_cols = list(COLUMNS["sessions"][2:])  # everything but the key
        keys = ["patient_id", "session_date"]
        self._key_conflicts(
            st, keys, value_cols, "session_date", "session for the same patient and date", None
        )
        self._key_conflicts(
            st, keys, value_cols, "session_date", "session for the same patient and date", "sessions"
        )

    def _parse_scores(self, st: _Staged) -> None:
        items = st.item_numbers
        cols = list(COLUMNS["scores"]) + [f"item_{n}" for n in items]
        # An instrument by any accepted spelling: the registry's key (letters and digits, upper case; as
        # ``instruments.normalize_key``) picks the scale, its item count and range. Computed per row with no
        # join, so the rows keep the file's order (a direct file's row numbers come from it).
        # The registry's own spellings (nearly every row) are looked up before the regular expression.
        exact = " ".join(f"WHEN {_lit(i.code)} THEN {_lit(i.key)}" for i in reg.INSTRUMENTS)
        key = f"(CASE instrument {exact} ELSE upper(regexp_replace(instrument, '[^A-Za-z0-9]', '', 'g')) END)"

        def by_key(value: Callable[[reg.Instrument], str | int]) -> str:
            whens = " ".join(
                f"WHEN {_lit(i.key)} THEN {_lit(v) if isinstance(v := value(i), str) else int(v)}"
                for i in reg.INSTRUMENTS
            )
            return f"CASE instrument__k {whens} END"

        # Each item's text is cast to a number once (inner query), then checked for being whole.
        item_float = "".join(f", {_num(f'item_{n}')} AS item_{n}__f" for n in items)
        item_parsed = "".join(
            f", CASE WHEN item_{n}__f = round(item_{n}__f) THEN item_{n}__f END AS item_{n}__n" for n in items
        )
        item_totals = ""
        if items:
            given = " + ".join(f"CAST(item_{n} IS NOT NULL AND {n} <= n_items AS INTEGER)" for n in items)
            item_sum = " + ".join(
                f"(CASE WHEN {n} <= n_items THEN coalesce(item_{n}__n, 0) ELSE 0 END)" for n in items
            )
            item_totals = f", {given} AS items_given, {item_sum} AS item_sum"
            # prorate_ok: 1 to PRORATE_MAX_MISSING answers missing on a scale with a prorating rule;
            # prorated_total: round(mean of the answered items x n_items), halves up (exact in DOUBLE:
            # the operands are small whole numbers, and a half is representable).
            prorate = (
                f"SELECT *, coalesce(instrument__v IN {_in_list(PRORATED_SCALES)} "
                f"AND items_given < n_items AND items_given >= n_items - {PRORATE_MAX_MISSING} "
                "AND items_given > 0, false) AS prorate_ok, "
                "CASE WHEN items_given > 0 THEN floor(item_sum * n_items / items_given + 0.5) END "
                "AS prorated_total FROM ("
            )
            prorate_end = ")"
        else:
            prorate, prorate_end = "", ""
        self._create_parsed(
            st,
            lambda: (
                f"""CREATE OR REPLACE TEMP VIEW {st.table} AS {prorate}
            SELECT *, CAST(assessed_on__ts AS DATE) AS assessed_on__d {item_totals}
            FROM (
                SELECT *, n_items * item_lo AS total_lo, n_items * item_hi AS total_hi FROM (
                SELECT s.*, {by_key(lambda i: i.code)} AS instrument__v,
                       {by_key(lambda i: i.n_items)} AS n_items,
                       {by_key(lambda i: i.item_min)} AS item_lo, {by_key(lambda i: i.item_max)} AS item_hi,
                       {_parse_date_sql("assessed_on")} AS assessed_on__ts,
                       {_whole("total")} AS total__n,
                       {_alias_case("phase", PHASE_ALIASES)} AS phase__v
                       {item_parsed}
                FROM (SELECT *, {key} AS instrument__k{item_float}
                      FROM (SELECT {self._select_text(st, cols)} FROM {st.raw})) s)){prorate_end}"""
            ),
        )
        known = ", ".join(i.code for i in reg.INSTRUMENTS)
        checks = _common_checks() + [
            Check("instrument", "instrument IS NULL", _lit("instrument is required")),
            Check(
                "instrument",
                "instrument IS NOT NULL AND instrument__v IS NULL",
                _lit(f"unknown instrument; expected one of {known}"),
            ),
        ]
        checks += _date_checks("assessed_on")
        checks += [
            Check("total", "total IS NOT NULL AND total__n IS NULL", _lit("not a whole number")),
            Check(
                "total",
                "total__n < total_lo OR total__n > total_hi",
                "'total out of range: ' || instrument__v || ' totals are ' || total_lo || '-' || total_hi",
            ),
            Check(
                "phase",
                "phase IS NOT NULL AND phase__v IS NULL",
                _lit("unknown phase; expected preparation, dosing, integration or follow-up"),
            ),
        ]
        for n in items:
            col = f"item_{n}"
            checks += [
                Check(
                    col, f"{col} IS NOT NULL AND {col}__n IS NULL", _lit("not a whole number"), in_pass=False
                ),
                Check(
                    col,
                    f"{col}__n IS NOT NULL AND {n} > n_items",
                    f"instrument__v || ' has ' || n_items || ' items: {col} must be empty'",
                    in_pass=False,
                ),
                Check(
                    col,
                    f"{n} <= n_items AND ({col}__n < item_lo OR {col}__n > item_hi)",
                    "'item out of range: ' || instrument__v || ' items are ' || item_lo || '-' || item_hi",
                    in_pass=False,
                ),
            ]
        # In the checking pass the three rules above, for every item, are one test: each answer given is
        # a whole number in range at a position the scale has. (Where the instrument is unknown its own
        # rule refuses the row.)
        items_bad = (
            "NOT ("
            + " AND ".join(
                f"(item_{n} IS NULL OR coalesce({n} <= n_items "
                f"AND item_{n}__n BETWEEN item_lo AND item_hi, false))"
                for n in items
            )
            + ")"
            if items
            else "false"
        )
        if items:
            present = set(items)
            answer = {n: f"item_{n}" if n in present else "NULL" for n in range(1, reg.MAX_ITEMS + 1)}
            missing_list = (
                "concat_ws(', ', "
                + ", ".join(
                    f"CASE WHEN {n} <= n_items AND {answer[n]} IS NULL THEN 'item_{n}' END" for n in answer
                )
                + ")"
            )
            incomplete = "items_given > 0 AND items_given < n_items"
            proratable = f"instrument__v IN {_in_list(PRORATED_SCALES)}"
            checks += [
                Check(
                    "items",
                    f"{incomplete} AND NOT {proratable}",
                    "instrument__v || ' totals are not prorated: give all ' || n_items || "
                    "' items or only a total (' || items_given || ' of ' || n_items || "
                    f"' items given; missing: ' || {missing_list} || ')'",
                    value="items_given",
                ),
                Check(
                    "items",
                    f"{incomplete} AND {proratable} AND items_given < n_items - {PRORATE_MAX_MISSING}",
                    "'too many missing item answers: ' || (n_items - items_given) || ' of ' || n_items "
                    "|| ' ' || instrument__v || ' items missing (' || "
                    f"{missing_list} || '); a total is prorated only when at most {PRORATE_MAX_MISSING} are "
                    "missing (NHS Data Dictionary rule): give the missing answers, or only a total'",
                    value="items_given",
                ),
                Check(
                    "total",
                    "items_given = n_items AND total__n IS NOT NULL AND total__n <> item_sum",
                    "'total ' || total || ' is not the sum of the items (' || "
                    "coalesce(CAST(try_cast(item_sum AS BIGINT) AS VARCHAR), CAST(item_sum AS VARCHAR)) "
                    "|| ')'",
                ),
                Check(
                    "total",
                    "prorate_ok AND total__n IS NOT NULL AND total__n <> prorated_total",
                    "'total ' || total || ' is not the prorated total of the items (' || "
                    "coalesce(CAST(try_cast(prorated_total AS BIGINT) AS VARCHAR), "
                    "CAST(prorated_total AS VARCHAR)) || ': the mean of the ' || items_given || "
                    "' answered items times ' || n_items || ', rounded; missing: ' || "
                    f"{missing_list} || ')'",
                ),
                Check(
                    "total",
                    "total IS NULL AND coalesce(items_given, 0) = 0 AND instrument__v IS NOT NULL",
                    _lit("a score needs a total or its item answers"),
                ),
            ]
        else:
            checks.append(Check("total", "total IS NULL", _lit("a score needs a total or its item answers")))
        if items:
            # Every position of the scale, NULL where the file has no such column, so a prorated row keeps
            # each answer at its item number (and NULL where it was not answered). One list per scale
            # length (not the longest list, sliced): a row builds only its own.
            def answers(length: int) -> str:
                return (
                    "["
                    + ", ".join(
                        f"try_cast(item_{n}__n AS SMALLINT)" if n in items else "CAST(NULL AS SMALLINT)"
                        for n in range(1, length + 1)
                    )
                    + "]"
                )

            lengths = sorted({i.n_items for i in reg.INSTRUMENTS})
            item_list = "CASE n_items " + " ".join(f"WHEN {k} THEN {answers(k)}" for k in lengths) + " END"
            total_expr = "CASE WHEN prorate_ok THEN prorated_total ELSE coalesce(total__n, item_sum) END"
            items_expr = f"CASE WHEN items_given = n_items OR prorate_ok THEN {item_list} END"
            prorated_expr = "prorate_ok"
        else:
            total_expr = "total__n"
            items_expr = "CAST(NULL AS SMALLINT[])"
            prorated_expr = "false"
        typed = f"""patient_id, instrument__v AS instrument, assessed_on__d AS assessed_on,
                   assessed_on__ts AS assessed_at, try_cast({total_expr} AS SMALLINT) AS total,
                   {items_expr} AS items, phase__v AS phase, {prorated_expr} AS prorated"""
        if not self._checked_clean(st, checks, typed, items_bad):
            return  # the file is refused whole
        self._lookalike_ids(st)
        self._unknown_patients(st)
        keys = ["patient_id", "instrument", "assessed_at"]
        what = "score for the same patient, instrument and time"
        # IS DISTINCT FROM on items: NULL answers at the same positions are equal (a re-import is a no-op).
        values = ["total", "items", "phase", "prorated"]
        self._key_conflicts(st, keys, values, "assessed_on", what, None)
        self._key_conflicts(st, keys, values, "assessed_on", what, "scores")
        if items:
            self._report_prorated(st)

    def _report_prorated(self, st: _Staged) -> None:
        """One info line per file: how many good rows had their total prorated, and which."""
        rows = self.con.execute(
            f"SELECT row_no FROM {st.table}_clean WHERE ok AND prorated ORDER BY row_no"
        ).fetchall()
        st.result.rows_prorated = len(rows)
        if not rows:
            return
        shown = ", ".join(str(r[0]) for r in rows[:20])
        more = f" and {len(rows) - 20} more" if len(rows) > 20 else ""
        self._problem(
            st.src,
            f"{len(rows)} row(s) with 1-{PRORATE_MAX_MISSING} missing item answers: the total is prorated "
            "(the mean of the answered items times the number of items, rounded to the nearest whole "
            "number; NHS Data Dictionary rule for PHQ-9 and GAD-7) and marked prorated; a missing PHQ-9 "
            f"item 9 leaves the safety flag unknown. Rows {shown}{more}",
            row=None,
            column="items",
            value=None,
            severity="info",
        )

    def _key_conflicts(
        self, st: _Staged, keys: list[str], values: list[str], column: str, what: str, table: str | None
    ) -> None:
        """Rows sharing a key with different values: with each other in the file (``table`` None),
        or with a row already in ``table``. Identical rows are not conflicts (a re-import is a no-op)."""
        key = ", ".join(keys)
        if table is None:
            # First by a hash of the key (a small, fast grouping): no hash twice, no key twice. Only
            # if one is (a duplicate, or rarely two keys with one hash) are the keys themselves grouped.
            probe_sql = (
                f"SELECT count(*) FROM (SELECT 1 FROM {st.table}_clean WHERE ok "
                f"GROUP BY hash({key}) HAVING count(*) > 1)"
            )
            probe = self.con.execute(probe_sql).fetchone()
            if probe and probe[0]:
                probe_sql = (
                    f"SELECT count(*) FROM (SELECT 1 FROM {st.table}_clean WHERE ok "
                    f"GROUP BY {key} HAVING count(*) > 1)"
                )
                probe = self.con.execute(probe_sql).fetchone()
            st.has_duplicate_keys = bool(probe and probe[0])
            if not st.has_duplicate_keys:
                return
            vals = ", ".join(values)
            sql = f"""WITH g AS (
                SELECT {key}, list(row_no ORDER BY row_no) AS rows FROM {st.table}_clean
                WHERE ok GROUP BY {key} HAVING count(DISTINCT ({vals})) > 1)
            SELECT c.row_no,
                   {_lit("duplicate " + what + " with different values; see row(s) ")}
                   || array_to_string(list_slice(list_filter(g.rows, lambda r: r <> c.row_no), 1, 10), ', ')
                   || CASE WHEN len(g.rows) > 11 THEN ' and ' || (len(g.rows) - 11) || ' more' ELSE '' END
            FROM {st.table}_clean c JOIN g USING ({key})
            WHERE c.ok"""
        else:
            differs = " OR ".join(f"c.{v} IS DISTINCT FROM t.{v}" for v in values)
            sql = f"""SELECT c.row_no,
                   {_lit("a " + what + " is already in the database (batch ")} || t.batch_id
                   || ') with different values; undo that batch first to replace it'
            FROM {st.table}_clean c JOIN {table} t USING ({key})
            WHERE c.ok AND ({differs})"""
        # The conflicting rows first (few, usually none), then the value each shows in the file.
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE key_conflicts AS {sql}")
        found = self.con.execute("SELECT count(*) FROM key_conflicts").fetchone()
        if not found or found[0] == 0:
            return
        self._text_table(st)  # the value each conflicting row shows in the file
        self._record(
            st,
            f"""SELECT k.row_no, {_lit(column)}, CAST(p.{column} AS VARCHAR), k.reason
            FROM key_conflicts AS k(row_no, reason) JOIN {st.table} p ON p.row_no = k.row_no""",
        )
        self._mark_bad(st)
