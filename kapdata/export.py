"""De-identified research exports (DESIGN §6): data, data dictionary and manifest. One implementation
for the Research export page and ``python -m kapdata export``.

- Patients are re-keyed ``P0001``… in an order drawn from a secret made for each export and never saved;
  the mapping never leaves the database connection.
- Dates become whole days from the patient's first dosing session (``day``), or whole weeks (``week``)
  if asked, unless calendar dates are asked for explicitly, which the manifest then records. The keys and
  relative days do not make the file anonymous: a patient's sequence of days and scores is unique for
  almost every patient, so anyone holding the clinic's records could match it.
- A k-anonymity check covers exactly the quasi-identifiers present in the data file; an export whose k is
  under the ``k_anonymity_min`` setting is refused (:class:`ExportRefused`). By default the file holds the
  most quasi-identifiers that pass.
- CSV text cells that a spreadsheet would run as a formula get a leading ``'``.
- Every clinical value comes from the views in ``db.VIEWS_SQL`` (``scores_phased``, ``outcomes``); the
  thresholds and settings in force are written into the manifest.

Shapes: ``long`` (one row per questionnaire), ``wide`` (one row per patient × scale), ``outcomes`` (the
``python -m kapdata outcomes`` file, re-keyed) and ``sessions`` (one row per dosing session).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import io
import json
import re
import secrets
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from kapdata import __version__, access, csvsafe, db, filters, ingest
from kapdata import instruments as reg
from kapdata.cohort import COHORT_SQL, CohortFilter
from kapdata.export_cli import ExportError, ExportRefused, add_cli  # noqa: F401 - re-exported
from kapdata.outcomes import OUTCOME_COLUMNS

if TYPE_CHECKING:  # frames and Arrow only for the page's preview and the FHIR bundle
    import pandas as pd
    import pyarrow as pa

SHAPES: tuple[str, ...] = ("long", "wide", "outcomes", "sessions")
FORMATS: tuple[str, ...] = ("csv", "parquet")
DATES: tuple[str, ...] = ("relative", "calendar")
#: Relative time in whole days, or whole weeks (``floor(day / 7)``: week 0 = days 0–6, week -1 = days -7…-1).
DAYS: tuple[str, ...] = ("day", "week")
#: Patient characteristics that could single someone out in combination (DESIGN §6), in file order.
QUASI_IDENTIFIERS: tuple[str, ...] = ("age_band", "sex", "clinic", "primary_condition", "route")
#: The default k-anonymity floor (setting ``k_anonymity_min``): an export with a smaller k is refused.
K_THRESHOLD = int(db.DEFAULT_SETTINGS["k_anonymity_min"])
#: Text cells starting with one of these are neutralised in CSV (OWASP "CSV injection"; tab and CR too).
FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")
DATA_FILES: dict[str, str] = {"csv": "data.csv", "parquet": "data.parquet"}
DICTIONARY_FILE = "data_dictionary.csv"
TABLE1_FILE = "table1.csv"
MANIFEST_FILE = "manifest.json"
DICTIONARY_COLUMNS: tuple[str, ...] = (
    "column",
    "type",
    "description",
    "allowed_values_or_unit",
    "source_or_loinc",
)

#: What each choice of time columns protects against (manifest, data dictionary, README).
DATES_PROTECT: dict[str, str] = {
    "day": "no calendar dates: whole days from each patient's first dosing session. Protects against "
    "matching on calendar dates (admission, appointment or birth dates held elsewhere); does not protect "
    "against matching the sequence of day gaps and scores with the clinic's own records",
    "week": "no calendar dates: whole weeks from each patient's first dosing session (week 0 = days 0-6). "
    "Protects against matching on calendar dates and makes exact day gaps unavailable, so sequences are "
    "harder to match with other records; a long enough sequence of weeks and scores can still be unique",
    "calendar": "calendar dates INCLUDED at the user's explicit request: protects against nothing "
    "date-based; anyone who knows when a patient was treated can find their rows",
}
LINKAGE_NOTE = (
    "pseudonymous, not anonymous: the patient keys are new for this export, but a patient's sequence of "
    "days (or weeks) and scores is unique for almost every patient (98-100% in typical cohorts), so anyone "
    "holding the clinic's records could link the rows back; share only under a data-sharing agreement"
)

SHAPE_HELP: dict[str, str] = {
    "long": "one row per questionnaire: patient, scale, phase, day, total (and item responses)",
    "wide": "one row per patient × scale: baseline and each phase endpoint with day, change, response, "
    "remission and reliable change",
    "outcomes": "the `python -m kapdata outcomes` file, re-keyed: one row per patient × scale × endpoint "
    "phase",
    "sessions": "one row per dosing session: day, route, dose, blood pressure, dissociation, side effects",
}
_ENDPOINT_METRICS: tuple[str, ...] = (
    "change",
    "response",
    "remission",
    "reliable_improvement",
    "reliable_deterioration",
)
_SESSION_COLUMNS: tuple[str, ...] = ingest.COLUMNS["sessions"][3:]  # dose_mg … side_effects


def phase_choices(shape: str) -> tuple[str, ...]:
    """Phases a shape can be filtered by: score phases for ``long``; endpoint phases for ``wide`` and
    ``outcomes`` (the baseline is always included); none for ``sessions``."""
    if shape == "long":
        return db.PHASES
    if shape in ("wide", "outcomes"):
        return db.ENDPOINT_PHASES
    return ()


def default_quasi_identifiers(shape: str) -> tuple[str, ...]:
    """Every quasi-identifier, except in ``outcomes`` whose columns are those of the outcomes file."""
    return () if shape == "outcomes" else QUASI_IDENTIFIERS


@dataclass(frozen=True)
class ExportSpec:
    """What to export. Empty tuples mean "all"; ``quasi_identifiers=None`` means the shape's default."""

    cohort: CohortFilter = field(default_factory=CohortFilter)
    instruments: tuple[str, ...] = ()
    phases: tuple[str, ...] = ()
    age_bands: tuple[str, ...] = ()
    sexes: tuple[str, ...] = ()
    min_scores: int = 0  # questionnaires of the chosen scales per patient, any phase
    completers_only: bool = False  # baseline and a score in a chosen endpoint phase (any, if none chosen)
    shape: str = "long"
    file_format: str = "csv"
    dates: str = "relative"
    quasi_identifiers: tuple[str, ...] | None = None
    days: str = "day"  # relative time in days or weeks
    items: bool = True  # item responses in the long shape

    def checked(self) -> ExportSpec:
        """The same request with names normalised (``phq9`` → ``PHQ-9``), or :class:`ExportError`."""
        for value, allowed, what in (
            (self.shape, SHAPES, "shape"),
            (self.file_format, FORMATS, "format"),
            (self.dates, DATES, "dates"),
            (self.days, DAYS, "days"),
        ):
            if value not in allowed:
                raise ExportError(f"unknown {what} {value!r}; choose {', '.join(allowed)}")
        if self.days == "week" and self.dates == "calendar":
            raise ExportError("week-level days protect nothing when calendar dates are included: choose one")
        codes = []
        for name in self.instruments:
            inst = reg.lookup(name)
            if inst is None:
                raise ExportError(f"unknown instrument {name!r}; known: {', '.join(reg.BY_CODE)}")
            codes.append(inst.code)
        phases = []
        for name in self.phases:
            phase = (
                "latest"
                if name.strip().lower() == "latest"
                else ingest.PHASE_ALIASES.get(name.strip().lower())
            )
            if phase is None:
                raise ExportError(f"unknown phase {name!r}; known: {', '.join((*db.PHASES, 'latest'))}")
            if not phase_choices(self.shape):
                raise ExportError(f"phases do not apply to the {self.shape} shape")
            if phase not in phase_choices(self.shape):
                allowed = ", ".join(phase_choices(self.shape))
                raise ExportError(
                    f"phase {phase!r} does not apply to the {self.shape} shape; choose {allowed}"
                )
            phases.append(phase)
        qis = self.qis
        for name in qis:
            if name not in QUASI_IDENTIFIERS:
                raise ExportError(f"unknown quasi-identifier {name!r}; known: {', '.join(QUASI_IDENTIFIERS)}")
        if qis and self.shape == "outcomes":
            raise ExportError("the outcomes shape has the outcomes file's columns: no quasi-identifiers")
        if self.min_scores < 0:
            raise ExportError("the minimum number of questionnaires cannot be negative")
        c = self.cohort
        if c.start_from and c.start_to and c.start_from > c.start_to:
            raise ExportError(f"treatment start from {c.start_from} is after start to {c.start_to}")
        return ExportSpec(
            cohort=c,
            instruments=tuple(dict.fromkeys(codes)),
            phases=tuple(p for p in phase_choices(self.shape) if p in phases),
            age_bands=tuple(self.age_bands),
            sexes=tuple(self.sexes),
            min_scores=int(self.min_scores),
            completers_only=self.completers_only,
            shape=self.shape,
            file_format=self.file_format,
            dates=self.dates,
            quasi_identifiers=None
            if self.quasi_identifiers is None
            else tuple(q for q in QUASI_IDENTIFIERS if q in qis),
            items=self.items and self.shape == "long",
            days=self.days,
        )

    @property
    def qis(self) -> tuple[str, ...]:
        return (
            default_quasi_identifiers(self.shape)
            if self.quasi_identifiers is None
            else self.quasi_identifiers
        )

    @property
    def data_file(self) -> str:
        return DATA_FILES[self.file_format]

    def filters(self) -> dict[str, Any]:
        """The request as the manifest records it. With relative dates the treatment-start dates and the
        provider codes are withheld (they would put calendar time and staff back next to the data)."""
        c = self.cohort
        calendar = self.dates == "calendar"

        def start(day: dt.date | None) -> str | None:
            if day is None:
                return None
            return day.isoformat() if calendar else "withheld (relative dates)"

        providers: Any = "all"
        if c.providers:
            providers = list(c.providers) if calendar else f"withheld ({len(c.providers)} chosen)"
        return {
            "instruments": list(self.instruments) or "all",
            "phases": list(self.phases) or "all",
            "treatment_start_from": start(c.start_from),
            "treatment_start_to": start(c.start_to),
            "clinics": list(c.clinics) or "all",
            "providers": providers,
            "routes": list(c.routes) or "all",
            "conditions": list(c.conditions) or "all",
            "age_bands": list(self.age_bands) or "all",
            "sexes": list(self.sexes) or "all",
            "min_scores_per_patient": self.min_scores,
            "completers_only": self.completers_only,
        }

    def params(self) -> dict[str, Any]:
        endpoint = [p for p in self.phases if p in db.ENDPOINT_PHASES] or ["latest"]
        return self.cohort.params() | {
            "instruments": list(self.instruments),
            "phases": list(self.phases),
            "age_bands": list(self.age_bands),
            "sexes": list(self.sexes),
            "min_scores": self.min_scores,
            "completers": self.completers_only,
            "completer_phases": endpoint,
            "codes": sorted(reg.BY_CODE),
            "scale_filtered": bool(self.instruments) or self.min_scores > 0 or self.completers_only,
        }


# The patients and (patient, scale) pairs in the export. ``pairs``: the chosen scales, completers only if
# asked (DESIGN §5: a baseline and a score in the phase, from the outcomes view); ``eligible``: patients
# with enough questionnaires of the chosen scales, or every patient when no scale condition is set.
_FILTER_SQL = f"""
    cohort AS ({COHORT_SQL}),
    pts AS (
        SELECT p.* FROM patients p SEMI JOIN cohort USING (patient_id)
        WHERE (len($age_bands) = 0 OR list_contains($age_bands, p.age_band))
          AND (len($sexes) = 0 OR list_contains($sexes, p.sex))
    ),
    completed AS (
        SELECT DISTINCT patient_id, instrument FROM outcomes
        WHERE $completers AND baseline IS NOT NULL AND endpoint IS NOT NULL
          AND list_contains($completer_phases, phase)
    ),
    pairs AS (
        SELECT sp.patient_id, sp.instrument, sp.n_scores FROM score_points sp SEMI JOIN pts USING (patient_id)
        WHERE (len($instruments) = 0 OR list_contains($instruments, sp.instrument))
          AND (NOT $completers
               OR (sp.patient_id, sp.instrument) IN (SELECT (patient_id, instrument) FROM completed))
    ),
    eligible AS (
        SELECT patient_id FROM pts WHERE NOT $scale_filtered
        UNION
        SELECT patient_id FROM pairs GROUP BY patient_id HAVING sum(n_scores) >= $min_scores
    )"""


def _rel(spec: ExportSpec, expr: str, name: str, wrap: str = "{}", where: str = "") -> str:
    """A relative-time column: whole days (``name``), or whole weeks (``…_week``) when asked for;
    ``wrap``/``where``: an aggregate around it and its FILTER clause."""
    if spec.days == "week":
        expr, name = f"CAST(floor(({expr}) / 7) AS INTEGER)", name.removesuffix("day") + "week"
    return f"{wrap.format(expr)}{where} AS {name}"


def _qi_sql(spec: ExportSpec, exclude: tuple[str, ...] = ()) -> str:
    return "".join(f"p.{q}, " for q in spec.qis if q not in exclude)


#: Rows are ordered by new patient key, then scale (alphabetically, as in the outcomes file), then time.
#: Integer sort keys: sorting a million rows on text is twice as slow.
_ORDER_S = "CAST(list_position($codes, s.instrument) AS INTEGER)"
_ORDER_O = "CAST(list_position($codes, o.instrument) AS INTEGER)"


#: The shapes' joins to the export's patients: filtered (``pairs``, ``eligible``, ``patients``: the
#: filters' CTEs) or, when re-keying after :func:`_materialise`, ``export_pairs`` and ``keyed_patients``
#: (the export's patients with their new key ``new_id`` and its order ``rn``): the same rows, fewer joins.
_PATIENTS_JOIN = {
    False: "JOIN pairs USING (patient_id, instrument) SEMI JOIN eligible USING (patient_id) "
    "JOIN patients p USING (patient_id)",
    True: "JOIN export_pairs USING (patient_id, instrument) JOIN keyed_patients p USING (patient_id)",
}


def _key_cols(keyed: bool, source: str) -> tuple[str, str]:
    """The patient column and the extra sort key: the source ID, or the new key and its order ``_s0``."""
    return ("p.new_id AS patient_id", ", p.rn AS _s0") if keyed else (f"{source}.patient_id", "")


def _long_sql(spec: ExportSpec, keyed: bool = False) -> str:
    dates = "s.assessed_on, " if spec.dates == "calendar" else ""
    n_items = max((reg.BY_CODE[c].n_items for c in spec.instruments or reg.BY_CODE), default=0)
    items = "".join(f", s.items[{i}] AS item_{i}" for i in range(1, n_items + 1)) if spec.items else ""
    total = f"{_rel(spec, 's.day', 'day')}, {dates}s.total, s.prorated{items}"
    pid, s0 = _key_cols(keyed, "s")
    return f"""SELECT {pid}, {_qi_sql(spec)}s.instrument, s.phase, {total},
               {_ORDER_S} AS _s1, s.assessed_at AS _s2{s0}
        FROM scores_phased s {_PATIENTS_JOIN[keyed]}
        WHERE len($phases) = 0 OR list_contains($phases, s.phase)"""


def _wide_sql(spec: ExportSpec, keyed: bool = False) -> str:
    calendar = spec.dates == "calendar"
    cols = [
        "any_value(o.baseline) AS baseline",
        "any_value(o.baseline_prorated) AS baseline_prorated",
        _rel(spec, "CAST(o.baseline_on - d.first_session AS INTEGER)", "baseline_day", "any_value({})"),
    ]
    if calendar:
        cols.append("any_value(o.baseline_on) AS baseline_on")
    for phase in (p for p in db.ENDPOINT_PHASES if not spec.phases or p in spec.phases):
        name = phase.replace("-", "_")
        where = f" FILTER (WHERE o.phase = '{phase}')"
        cols.append(f"any_value(o.endpoint){where} AS {name}")
        cols.append(f"any_value(o.endpoint_prorated){where} AS {name}_prorated")
        cols.append(
            _rel(
                spec,
                "CAST(o.endpoint_on - d.first_session AS INTEGER)",
                f"{name}_day",
                "any_value({})",
                where,
            )
        )
        if calendar:
            cols.append(f"any_value(o.endpoint_on){where} AS {name}_on")
        cols.extend(f"any_value(o.{m}){where} AS {name}_{m}" for m in _ENDPOINT_METRICS)
    qi = _qi_sql(spec)
    pid, s0 = _key_cols(keyed, "o")
    return f"""SELECT {pid}, {qi}o.instrument, {", ".join(cols)},
               {_ORDER_O} AS _s1, 0 AS _s2{s0}
        FROM outcomes o {_PATIENTS_JOIN[keyed]} LEFT JOIN patient_dosing d USING (patient_id)
        GROUP BY ALL"""


def _outcomes_sql(spec: ExportSpec, keyed: bool = False) -> str:
    cols = []
    for col in OUTCOME_COLUMNS[1:]:
        if col == "endpoint_on":
            if spec.dates == "calendar":
                cols.append("o.endpoint_on")
            cols.append(_rel(spec, "CAST(o.endpoint_on - d.first_session AS INTEGER)", "endpoint_day"))
        elif col == "pct_change":
            cols.append("round(o.pct_change, 6) AS pct_change")
        elif col in ("baseline", "endpoint"):
            cols.append(f"o.{col}, o.{col}_prorated")  # the outcomes table's mark of a prorated total
        else:
            cols.append(f"o.{col}")
    pid, s0 = _key_cols(keyed, "o")
    join = (
        "JOIN export_pairs USING (patient_id, instrument) JOIN new_keys p USING (patient_id)"
        if keyed
        else "JOIN pairs USING (patient_id, instrument) SEMI JOIN eligible USING (patient_id)"
    )
    return f"""SELECT {pid}, {", ".join(cols)}, {_ORDER_O} AS _s1,
               o.phase_order AS _s2{s0}
        FROM outcomes o {join}
        LEFT JOIN patient_dosing d USING (patient_id)
        WHERE len($phases) = 0 OR list_contains($phases, o.phase)"""


def _sessions_sql(spec: ExportSpec, keyed: bool = False) -> str:
    dates = "s.session_date, " if spec.dates == "calendar" else ""
    route = "s.route, " if "route" in spec.qis else ""
    rest = ", ".join(f"s.{c}" for c in _SESSION_COLUMNS)
    pid, s0 = _key_cols(keyed, "s")
    join = (
        "JOIN keyed_patients p USING (patient_id)"
        if keyed
        else "SEMI JOIN eligible USING (patient_id) JOIN patients p USING (patient_id)"
    )
    return f"""SELECT {pid}, {_qi_sql(spec, exclude=("route",))}
               CAST(row_number() OVER (PARTITION BY s.patient_id ORDER BY s.session_date) AS INTEGER)
                   AS session_number,
               {_rel(spec, "CAST(s.session_date - d.first_session AS INTEGER)", "day")}, {dates}{route}{rest},
               s.session_date AS _s1, 0 AS _s2{s0}
        FROM sessions s {join}
        JOIN patient_dosing d USING (patient_id)"""


_SHAPE_SQL = {"long": _long_sql, "wide": _wide_sql, "outcomes": _outcomes_sql, "sessions": _sessions_sql}

#: Re-keying: the export's rows (source IDs) with new keys P0001… in the order of a keyed hash of the source
#: ID; the secret is made per export and never stored. The new key is made once per patient (not per row).
_KEYS_SQL = """
    keys AS (
        SELECT patient_id, row_number() OVER (ORDER BY sha256($secret || patient_id)) AS rn,
               count(*) OVER () AS total
        FROM export_patients
    ),
    new_keys AS (
        SELECT patient_id, rn,
               'P' || lpad(CAST(rn AS VARCHAR),
                           CAST(greatest(4, length(CAST(total AS VARCHAR))) AS INTEGER), '0') AS new_id
        FROM keys
    ),
    keyed_patients AS (SELECT p.*, k.rn, k.new_id FROM new_keys k JOIN patients p USING (patient_id))"""


def _rows_sql(spec: ExportSpec) -> str:
    """``WITH`` the filters and ``export_source`` (the rows of ``spec``'s shape, source IDs): a prefix for a
    final ``SELECT … FROM export_source``."""
    return "WITH " + _FILTER_SQL + ", export_source AS (" + _SHAPE_SQL[spec.shape](spec) + ") "


def _used(sql: str, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters ``sql`` names (DuckDB refuses unused ones)."""
    return {k: v for k, v in params.items() if re.search(r"\$" + k + r"\b", sql)}


def _materialise(con: duckdb.DuckDBPyConnection, spec: ExportSpec) -> tuple[int, int]:
    """Build the temporary tables ``export_pairs`` (rows per patient, and per scale where the shape has one)
    and ``export_patients`` (the export's patients) for ``spec``; they live and die with the connection. Only
    the keys are kept: the rows themselves are computed once more, re-keyed and sorted, by :func:`_keyed`
    (cheaper than storing a million wide rows and reading them back). Returns (rows, patients)."""
    by = "patient_id" if spec.shape == "sessions" else "patient_id, instrument"
    if spec.shape == "long" and not spec.phases:
        # Every questionnaire of a chosen pair is a row: its count is the pair's ``n_scores`` (score_points
        # counts the pair's scores_phased rows), so the rows need not be made and grouped once more.
        sql = (
            "CREATE OR REPLACE TEMP TABLE export_pairs AS WITH "
            + _FILTER_SQL
            + " SELECT patient_id, instrument, n_scores AS n FROM pairs SEMI JOIN eligible USING (patient_id)"
        )
    else:
        sql = (
            "CREATE OR REPLACE TEMP TABLE export_pairs AS "
            + _rows_sql(spec)
            + f"SELECT {by}, count(*) AS n FROM export_source GROUP BY {by}"
        )
    con.execute(sql, _used(sql, spec.params())).fetchall()
    con.execute(
        "CREATE OR REPLACE TEMP TABLE export_patients AS SELECT DISTINCT patient_id FROM export_pairs"
    ).fetchall()
    [(rows, patients)] = con.execute(
        "SELECT (SELECT coalesce(sum(n), 0) FROM export_pairs), (SELECT count(*) FROM export_patients)"
    ).fetchall()
    return int(rows), int(patients)


def _keyed_sql(spec: ExportSpec, limited: bool = False) -> str:
    """The export's rows for ``spec`` (its quasi-identifiers resolved), re-keyed, in file order: new patient
    key, then scale, then time. Run after :func:`_materialise`: the filters are not evaluated again, the
    shape's rows are those of the patients (and scales) in ``export_patients`` / ``export_pairs`` (the same
    rows: those tables hold exactly the patients and pairs that have rows), joined once to their new keys.
    ``limited``: the first ``$limit`` rows only (a preview); a whole file has no ``LIMIT``, which would make
    DuckDB sort in one thread (a third slower at 50,000 patients)."""
    return (
        "WITH "
        + _KEYS_SQL
        + ", export_source AS ("
        + _SHAPE_SQL[spec.shape](spec, True)
        + """)
    SELECT r.* EXCLUDE (_s0, _s1, _s2) FROM export_source r
    ORDER BY r._s0, r._s1, r._s2"""
        + (" LIMIT $limit" if limited else "")
    )


def _keyed_params(spec: ExportSpec, sql: str, secret: str | None, limit: int | None) -> dict[str, Any]:
    params = spec.params() | {"secret": secret or secrets.token_hex(32), "limit": limit}
    return _used(sql, params)


def _keyed(
    con: duckdb.DuckDBPyConnection, spec: ExportSpec, secret: str | None, limit: int | None = None
) -> pa.Table:

    sql = _keyed_sql(spec, limited=limit is not None)
    return con.sql(sql, params=_keyed_params(spec, sql, secret, limit)).to_arrow_table()


def _keyed_parquet(
    con: duckdb.DuckDBPyConnection, spec: ExportSpec, secret: str | None, target: Path
) -> list[tuple[str, str]]:
    """Write the re-keyed rows as Parquet with DuckDB's own writer (no Arrow): the columns' names and
    data-dictionary types (:func:`_column_types`)."""
    sql = _keyed_sql(spec)
    params = _keyed_params(spec, sql, secret, None)
    # (On ``con`` itself: the temporary tables are the connection's own, a cursor would not see them.)
    con.execute(
        "COPY (" + sql + ") TO $kap_copy_target (FORMAT parquet)",
        params | {"kap_copy_target": str(target)},
    ).fetchall()
    return _column_types(con.sql(sql, params=params))  # a lazy relation: bound for its types, not run


def _keyed_csv(
    con: duckdb.DuckDBPyConnection, spec: ExportSpec, secret: str | None, target: Path
) -> list[tuple[str, str]]:
    """Write the re-keyed rows as CSV with DuckDB's own writer (no Arrow table of every row in Python):
    a header, cells quoted only where they must be, empty for NULL; every text cell starting with
    ``= + - @`` (or tab, carriage return) prefixed with ``'`` in the SQL (:func:`csvsafe.sql_neutralised`).
    Returns the columns' names and data-dictionary types (:func:`_column_types`)."""
    sql = _keyed_sql(spec)
    params = _keyed_params(spec, sql, secret, None)
    rel = con.sql(sql, params=params)  # a lazy relation: bound for its columns and types, not run
    cells = [
        csvsafe.sql_neutralised(f'r."{c}"') + f' AS "{c}"' if t.id == "varchar" else f'r."{c}"'
        for c, t in zip(rel.columns, rel.types, strict=True)
    ]
    con.execute(
        "COPY (SELECT " + ", ".join(cells) + " FROM (" + sql + ") r) TO $kap_copy_target (HEADER)",
        params | {"kap_copy_target": str(target)},
    ).fetchall()
    return _column_types(rel)


#: Data-dictionary types of DuckDB's type ids.
_DUCKDB_TYPES: dict[str, str] = {
    "boolean": "boolean",
    **dict.fromkeys(("tinyint", "smallint", "integer", "bigint", "hugeint"), "integer"),
    **dict.fromkeys(("utinyint", "usmallint", "uinteger", "ubigint", "uhugeint"), "integer"),
    **dict.fromkeys(("float", "double", "decimal"), "number"),
    **dict.fromkeys(("date", "timestamp", "timestamp_s", "timestamp_ms", "timestamp_ns"), "date"),
    "timestamp with time zone": "date",
}


def _column_types(rel: duckdb.DuckDBPyRelation) -> list[tuple[str, str]]:
    """(column, data-dictionary type) of a query's result, from DuckDB's types (no rows fetched)."""
    return [(c, _DUCKDB_TYPES.get(t.id, "string")) for c, t in zip(rel.columns, rel.types, strict=True)]


@dataclass(frozen=True)
class KAnonymity:
    """The smallest number of patients sharing one combination of the file's quasi-identifiers."""

    quasi_identifiers: tuple[str, ...]
    k: int | None  # None when the export is empty
    groups: int
    groups_below_threshold: int
    patients_in_groups_below_threshold: int
    threshold: int = K_THRESHOLD  # the floor (setting k_anonymity_min)
    suggested_drop: tuple[str, ...] = ()  # the fewest columns to leave out for k >= threshold
    left_out_by_default: tuple[str, ...] = ()  # quasi-identifiers the default column set left out

    @property
    def refused(self) -> bool:
        """True when the export must not be released: k under the floor."""
        return self.k is not None and self.k < self.threshold

    @property
    def warning(self) -> str | None:
        if not self.refused:
            return None
        over = ", ".join(self.quasi_identifiers) or "no quasi-identifiers"
        text = (
            f"k-anonymity is {self.k} (under {self.threshold}) over {over}: "
            f"{self.groups_below_threshold} combination(s) are shared by fewer than {self.threshold} "
            f"patients ({self.patients_in_groups_below_threshold} patients)."
        )
        if self.suggested_drop and set(self.suggested_drop) != set(self.quasi_identifiers):
            return text + f" Leaving out {', '.join(self.suggested_drop)} gives k ≥ {self.threshold}."
        if self.quasi_identifiers:
            return (
                text
                + f" Even with no quasi-identifiers the export has fewer than {self.threshold} patients: "
                "widen the filters."
            )
        return text + f" The export has fewer than {self.threshold} patients: widen the filters."

    @property
    def refusal(self) -> str | None:
        """Why the export is refused, or None."""
        return None if not self.refused else "export refused: " + (self.warning or "")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"warning": self.warning}


def _k_by_subset(
    con: duckdb.DuckDBPyConnection, spec: ExportSpec, n: int, floor: int
) -> dict[tuple[str, ...], tuple[int, int, int, int]]:
    """(k, groups, groups under ``floor``, patients in them) for every subset of the file's quasi-identifiers
    at once (GROUPING SETS), so the report can say which to leave out. ``n``: the patients in the export."""
    qis = spec.qis
    if not qis:
        below = int(n < floor)
        return {(): (n, 1, below, n * below)}
    cols = ", ".join(qis)
    # Patient characteristics come from the patients table, except a sessions file's route: per session.
    # (One row per patient from the patients table, so ``count(*)`` counts patients; a patient's sessions can
    # have several routes, so there ``count(DISTINCT patient_id)``.)
    count = "count(*)"
    if spec.shape == "sessions" and "route" in qis:
        head = _rows_sql(spec) + ", d AS (SELECT DISTINCT patient_id, " + cols + " FROM export_source)"
        params = spec.params()
        count = "count(DISTINCT patient_id)"
    else:
        head = (
            "WITH d AS (SELECT patient_id, "
            + cols
            + " FROM export_patients JOIN patients USING (patient_id))"
        )
        params = {}
    sets = ", ".join(
        "(" + ", ".join(q for bit, q in enumerate(qis) if mask >> bit & 1) + ")"
        for mask in range(2 ** len(qis))
    )
    sql = (
        head
        + f""",
            g AS (SELECT GROUPING({cols}) AS gid, {count} AS n
                  FROM d GROUP BY GROUPING SETS ({sets}))
            SELECT gid, min(n), count(*), count(*) FILTER (WHERE n < $t),
                   coalesce(sum(n) FILTER (WHERE n < $t), 0)
            FROM g GROUP BY gid"""
    )
    rows = con.execute(sql, _used(sql, params | {"t": floor})).fetchall()
    # GROUPING() sets bit (len - 1 - i) when column i is *not* grouped.
    by_kept: dict[tuple[str, ...], tuple[int, int, int, int]] = {}
    for gid, k, groups, below, patients_below in rows:
        kept = tuple(q for i, q in enumerate(qis) if not gid >> (len(qis) - 1 - i) & 1)
        by_kept[kept] = (int(k), int(groups), int(below), int(patients_below))
    return by_kept


def _best(
    qis: tuple[str, ...], by_kept: dict[tuple[str, ...], tuple[int, int, int, int]], floor: int
) -> tuple[str, ...]:
    """The most quasi-identifiers with k >= ``floor`` (then the larger k, then the earlier columns)."""
    ok = [kept for kept, v in by_kept.items() if v[0] >= floor]
    return max(ok, key=lambda kept: (len(kept), by_kept[kept][0], [q in kept for q in qis]), default=())


def _resolve_qis(con: duckdb.DuckDBPyConnection, spec: ExportSpec, n: int) -> tuple[ExportSpec, KAnonymity]:
    """The k-anonymity report; for ``quasi_identifiers=None`` first choose the default columns (the most
    that pass the floor; the rows are then made without the others). Returns the resolved request."""
    floor = int(db.get_settings(con).get("k_anonymity_min", K_THRESHOLD))
    qis = spec.qis
    if n == 0:
        return dataclasses.replace(spec, quasi_identifiers=qis), KAnonymity(qis, None, 0, 0, 0, floor)
    by_kept = _k_by_subset(con, spec, n, floor)
    best = _best(qis, by_kept, floor)
    left_out: tuple[str, ...] = ()
    if spec.quasi_identifiers is None and best != qis:
        left_out = tuple(q for q in qis if q not in best)
        qis = best
    k, groups, below, patients_below = by_kept[qis]
    drop = () if k >= floor else tuple(q for q in qis if q not in best)
    report = KAnonymity(qis, k, groups, below, patients_below, floor, drop, left_out)
    return dataclasses.replace(spec, quasi_identifiers=qis), report


def _k_anonymity(con: duckdb.DuckDBPyConnection, spec: ExportSpec, n: int) -> KAnonymity:
    """The k-anonymity report of an export whose columns are already chosen."""
    return _resolve_qis(con, dataclasses.replace(spec, quasi_identifiers=spec.qis), n)[1]


# ---------------------------------------------------------------- data dictionary


def _join(parts: Sequence[str]) -> str:
    return "; ".join(p for p in parts if p)


@dataclass(frozen=True)
class _DocContext:
    spec: ExportSpec
    instruments: tuple[reg.Instrument, ...]
    thresholds: dict[str, dict[str, Any]]
    settings: dict[str, float]
    clinics: tuple[str, ...]

    def per_scale(self, fmt: str) -> str:
        """``fmt`` filled in for each exported scale from the thresholds in force."""
        return _join([f"{i.code} " + fmt.format(**self.thresholds.get(i.code, {})) for i in self.instruments])

    def sourced(self, fmt: str, key: str) -> str:
        """:meth:`per_scale`, then where each scale's default for threshold ``key`` comes from (the
        registry's ``threshold_sources``, as on the definitions page)."""
        sources = _join([f"{i.code} default: {i.threshold_sources.get(key, '')}" for i in self.instruments])
        return _join([self.per_scale(fmt), sources])


def _doc(col: str, ctx: _DocContext) -> tuple[str, str, str]:
    """(description, allowed values or unit, source or LOINC) of one exported column."""
    insts = ctx.instruments
    day_rule = "whole days from the patient's first dosing session (0 = first dosing day, negative = before)"
    if col == "week" or col.endswith("_week"):
        week_rule = (
            "whole weeks from the patient's first dosing session, floor(days / 7) (0 = days 0–6, "
            "-1 = days -7 to -1)"
        )
        desc, _, source = _doc(col.removesuffix("week") + "day", ctx)
        desc = desc.replace(day_rule, week_rule).replace("Day of", "Week of").replace("day of", "week of")
        return desc, "weeks", source
    qi = "quasi-identifier (counted in the manifest's k-anonymity report)"
    ranges = _join([f"{i.code} {i.total_min}–{i.total_max}" for i in insts])
    totals = _join([f"{i.code} total LOINC {i.loinc_total}" for i in insts])
    prorated_doc = (
        "Whether {what} was prorated: 1–2 of the questionnaire's item answers were missing and the total is "
        "the mean of the answered items times the number of items, rounded to the nearest whole number "
        "(PHQ-9 and GAD-7 only; PCL-5 totals are never prorated)",
        "true, false" + ("" if ctx.spec.shape == "long" else ", empty"),
        "NHS Data Dictionary / NHS Talking Therapies rule for PHQ-9 and GAD-7 (applied on import)",
    )
    simple: dict[str, tuple[str, str, str]] = {
        "patient_id": (
            "Patient key for this export only, assigned in a random order from a secret that is not saved: "
            "the key itself does not lead back to the clinic's patient ID or to another export's key. The "
            "rows are still pseudonymous, not anonymous: a patient's sequence of days and scores is unique "
            "for almost every patient and can be matched with the clinic's records",
            "P0001, P0002, …",
            "kapdata export (re-keyed)",
        ),
        "age_band": (f"Age band; {qi}", ", ".join(ingest.AGE_BANDS), "patients file"),
        "sex": (f"Sex; {qi}", ", ".join(ingest.SEXES), "patients file"),
        "clinic": (f"Clinic (pseudonymous name); {qi}", ", ".join(ctx.clinics), "patients file"),
        "primary_condition": (f"Primary condition; {qi}", ", ".join(ingest.CONDITIONS), "patients file"),
        "instrument": (
            "Questionnaire (scale)",
            ", ".join(i.code for i in insts),
            _join([f"{i.code}: {i.title}, LOINC panel {i.loinc_panel}" for i in insts]),
        ),
        "total": (
            "Total score of the questionnaire",
            ranges,
            _join([totals, *[s for i in insts for s in i.sources]]),
        ),
        "baseline": (
            "Baseline: the last score of the scale in preparation (on or before the first dosing session)",
            ranges,
            totals,
        ),
        "prorated": (
            prorated_doc[0].format(what="the total") + "; the missing items are empty",
            *prorated_doc[1:],
        ),
        "baseline_prorated": (prorated_doc[0].format(what="the baseline"), *prorated_doc[1:]),
        "endpoint_prorated": (prorated_doc[0].format(what="the endpoint"), *prorated_doc[1:]),
        "baseline_day": (f"Day of the baseline: {day_rule}", "days", "sessions file"),
        "baseline_on": (
            "Calendar date of the baseline (calendar dates were asked for)",
            "date",
            "scores file",
        ),
        "day": (
            f"Day of the dosing session: {day_rule}"
            if ctx.spec.shape == "sessions"
            else f"Day of the questionnaire: {day_rule}; empty when the patient has no dosing session",
            "days",
            "sessions and scores files",
        ),
        "assessed_on": (
            "Calendar date of the questionnaire (calendar dates were asked for)",
            "date",
            "scores file",
        ),
        "session_date": (
            "Calendar date of the dosing session (calendar dates were asked for)",
            "date",
            "sessions file",
        ),
        "session_number": (
            "Number of the dosing session for this patient, in date order",
            "1, 2, …",
            "sessions file",
        ),
        "endpoint": (
            "Endpoint: the last score of the scale in the phase (latest: after baseline)",
            ranges,
            totals,
        ),
        "endpoint_day": (f"Day of the endpoint: {day_rule}", "days", "sessions and scores files"),
        "endpoint_on": (
            "Calendar date of the endpoint (calendar dates were asked for)",
            "date",
            "scores file",
        ),
        "pct_change": (
            "Change as a percentage of baseline; empty when baseline is 0",
            "percent",
            "outcomes view",
        ),
        "recovery": (
            "Recovery (NHS Talking Therapies, per scale): baseline in the clinical range and endpoint below "
            "it; empty when the baseline is below the clinical range or missing",
            "true, false, empty",
            _join([ctx.sourced("clinical range ≥ {caseness}", "caseness"), reg.NHS_TALKING_THERAPIES]),
        ),
        "reliable_recovery": (
            "Recovery and reliable improvement; empty when recovery is",
            "true, false, empty",
            reg.NHS_TALKING_THERAPIES,
        ),
        "dose_mg": ("Ketamine dose", "mg", "sessions file"),
        "dose_mg_per_kg": ("Ketamine dose by body weight", "mg/kg", "sessions file"),
        "bp_sys_pre": ("Systolic blood pressure before dosing", "mmHg", "sessions file"),
        "bp_dia_pre": ("Diastolic blood pressure before dosing", "mmHg", "sessions file"),
        "bp_sys_post": ("Systolic blood pressure after dosing", "mmHg", "sessions file"),
        "bp_dia_post": ("Diastolic blood pressure after dosing", "mmHg", "sessions file"),
        "dissociation": ("Dissociation during the session (CADSS-6 total)", "0–24", "sessions file"),
        "side_effects": ("Side effects, ';'-separated", ", ".join(ingest.SIDE_EFFECTS), "sessions file"),
    }
    window = int(ctx.settings.get("integration_window_days", 84))
    if col == "phase":
        if ctx.spec.shape == "long":
            return (
                "Phase of care when the questionnaire was completed: on or before the first dosing session → "
                f"preparation; until the last session → dosing; up to {window} days after → integration; "
                "later → follow-up (an explicit phase in the scores file wins)",
                ", ".join(ctx.spec.phases or db.PHASES),
                "derived from the dosing sessions",
            )
        return (
            "Endpoint phase: the last score in that phase; latest = the last score after baseline",
            ", ".join(ctx.spec.phases or db.ENDPOINT_PHASES),
            f"derived from the dosing sessions (integration window {window} days)",
        )
    if col == "route":
        what = "Route of this dosing session" if ctx.spec.shape == "sessions" else "Route of ketamine"
        return (
            f"{what}; {qi}",
            ", ".join(ingest.ROUTES),
            "sessions file" if ctx.spec.shape == "sessions" else "patients file",
        )
    if col.startswith("item_"):
        n = int(col.removeprefix("item_"))
        has = [i for i in insts if n <= i.n_items]
        return (
            "Item response: " + _join([f"{i.code} item {n} '{i.item_labels[n - 1]}'" for i in has]),
            _join([f"{i.code} {i.item_min}–{i.item_max}" for i in has]),
            _join([f"{i.code} LOINC {i.loinc_items[n]}" for i in has if n in i.loinc_items]),
        )
    metric_docs: dict[str, tuple[str, str, str]] = {
        "change": ("Endpoint − baseline (negative is better)", "points", "outcomes view"),
        "response": (
            "Response: reduction from baseline of at least the scale's percentage; empty unless the baseline "
            "is above 0",
            "true, false, empty",
            ctx.sourced("≥ {response_pct}% reduction", "response_pct"),
        ),
        "remission": (
            "Remission: endpoint below the scale's cut-off; empty unless the baseline is in the clinical "
            "range",
            "true, false, empty",
            ctx.sourced("endpoint < {remission_below}", "remission_below"),
        ),
        "reliable_improvement": (
            "Reliable improvement: change ≤ −RC (RC: the scale's published reliable-change value)",
            "true, false, empty",
            ctx.sourced("RC {reliable_change} points", "reliable_change"),
        ),
        "reliable_deterioration": (
            "Reliable deterioration: change ≥ +RC (RC: the scale's published reliable-change value)",
            "true, false, empty",
            ctx.sourced("RC {reliable_change} points", "reliable_change"),
        ),
    }
    if col in simple:
        return simple[col]
    if col in metric_docs:
        return metric_docs[col]
    for phase in db.ENDPOINT_PHASES:
        prefix = phase.replace("-", "_")
        label = "latest score after baseline" if phase == "latest" else f"last score in {phase}"
        if col == prefix:
            return (f"Endpoint at {phase}: the {label}", ranges, totals)
        if col.startswith(prefix + "_"):
            rest = col.removeprefix(prefix + "_")
            base = {
                "day": simple["endpoint_day"],
                "on": simple["endpoint_on"],
                "prorated": simple["endpoint_prorated"],
            }.get(rest) or metric_docs[rest]
            return (f"{phase.capitalize()}: {base[0][0].lower()}{base[0][1:]}", base[1], base[2])
    raise KeyError(f"no data dictionary entry for column {col!r}")


def _thresholds(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    cur = con.execute("SELECT * FROM instruments ORDER BY code")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, values, strict=True)) for values in cur.fetchall()]


def _dictionary(
    con: duckdb.DuckDBPyConnection,
    spec: ExportSpec,
    columns: list[tuple[str, str]],
    thresholds: list[dict[str, Any]],
) -> list[tuple[str, ...]]:
    """One row per data column (``columns``: name, type): column, type, description, allowed values or
    unit, source or LOINC."""
    clinics: tuple[str, ...] = ()
    if any(name == "clinic" for name, _ in columns):
        rows = con.execute(
            "SELECT DISTINCT clinic FROM export_patients JOIN patients USING (patient_id) "
            "WHERE clinic IS NOT NULL ORDER BY 1"
        ).fetchall()
        clinics = tuple(r[0] for r in rows)
    ctx = _DocContext(
        spec=spec,
        instruments=tuple(reg.BY_CODE[c] for c in (spec.instruments or reg.BY_CODE)),
        thresholds={t["code"]: t for t in thresholds},
        settings=db.get_settings(con),
        clinics=clinics,
    )
    return [(name, kind, *_doc(name, ctx)) for name, kind in columns]


# ---------------------------------------------------------------- files


def _quoted(cell: str | None) -> str:
    if cell is None:
        return ""
    return '"' + csvsafe.neutralise(cell).replace('"', '""') + '"'


def text_csv_bytes(header: Sequence[str], rows: Sequence[Sequence[str | None]]) -> bytes:
    """A small all-text table as CSV (every cell and header name quoted, ``""`` for a quote, empty for None,
    ``\\n`` line ends; formulas neutralised), without importing pyarrow: the data dictionary and Table 1."""
    lines = [",".join(_quoted(str(h)) for h in header)]
    lines.extend(",".join(_quoted(c) for c in row) for row in rows)
    return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True)
class Export:
    """An export ready to write: file name → bytes, plus the manifest's main numbers."""

    spec: ExportSpec
    files: dict[str, bytes]
    manifest: dict[str, Any]

    @property
    def rows(self) -> int:
        return int(self.manifest["rows"])

    @property
    def patients(self) -> int:
        return int(self.manifest["patients"])

    @property
    def k_anonymity(self) -> dict[str, Any]:
        return dict(self.manifest["k_anonymity"])


def for_principal(spec: ExportSpec, principal: access.Principal | None) -> ExportSpec:
    """The request as ``principal`` may make it: refused (``access.NotPermitted``) without the export
    permission, or with calendar dates and no per-user permission for them; the cohort narrowed to the
    principal's clinics (in the SQL). ``None``: unchanged (the command line, tests)."""
    if principal is None:
        return spec
    access.check_export(principal, spec.dates == "calendar")
    return dataclasses.replace(spec, cohort=access.scoped(principal, spec.cohort))


def build(
    con: duckdb.DuckDBPyConnection,
    spec: ExportSpec,
    *,
    secret: str | None = None,
    principal: access.Principal | None = None,
) -> Export:
    """Build the three files in memory. ``secret`` orders the new patient keys (tests fix it; otherwise a
    fresh random one that is never stored). ``principal``: see ``for_principal``."""
    spec = for_principal(spec, principal).checked()
    rows, patients = _materialise(con, spec)
    spec, k = _resolve_qis(con, spec, patients)
    if k.refused:
        raise ExportRefused(k)
    # DuckDB writes the data file itself (COPY; no Arrow table of every row in Python).
    write = _keyed_csv if spec.file_format == "csv" else _keyed_parquet
    with tempfile.TemporaryDirectory(prefix="kapexport") as tmp:
        target = Path(tmp) / spec.data_file
        columns = write(con, spec, secret, target)
        data = target.read_bytes()
    thresholds = _thresholds(con)
    min_cell = int(db.get_settings(con)["min_cell"])
    table1 = _table1_rows(con, spec, min_cell, patients)
    files = {
        spec.data_file: data,
        DICTIONARY_FILE: text_csv_bytes(DICTIONARY_COLUMNS, _dictionary(con, spec, columns, thresholds)),
        TABLE1_FILE: text_csv_bytes(TABLE1_COLUMNS, table1),
    }
    calendar = spec.dates == "calendar"
    not_exported = ["source patient ID", "provider", *(q for q in QUASI_IDENTIFIERS if q not in spec.qis)]
    manifest = {
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "software": {"kapdata": __version__, "duckdb": duckdb.__version__, "pyarrow": _pyarrow_version()},
        "shape": spec.shape,
        "format": spec.file_format,
        "filters": spec.filters(),
        "rows": rows,
        "patients": patients,
        "columns": [name for name, _ in columns],
        "dates": spec.dates,
        "days": None if calendar else spec.days,
        "calendar_dates_included": calendar,
        "de_identification": {
            "patient_ids": "re-keyed P0001… for this export in a random order from a secret that was not "
            "saved; the mapping to source IDs was not written anywhere",
            "dates": DATES_PROTECT["calendar" if calendar else spec.days],
            "linkage": LINKAGE_NOTE,
            "csv_formula_injection": "text cells starting with = + - @ (or tab / carriage return) were "
            "prefixed with ' in CSV files"
            if spec.file_format == "csv"
            else "not applicable (Parquet data file)",
            "columns_not_exported": ", ".join(not_exported),
        },
        "quasi_identifiers": list(spec.qis),
        "quasi_identifiers_left_out_by_default": list(k.left_out_by_default),
        "k_anonymity": k.as_dict(),
        "definitions_in_force": {"settings": db.get_settings(con), "instruments": thresholds},
        "files": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            for name, data in files.items()
        },
    }
    files[MANIFEST_FILE] = (json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n").encode()
    return Export(spec, files, manifest)


def _pyarrow_version() -> str:
    """The installed pyarrow's version (the manifest records it) without importing it."""
    from importlib import metadata

    try:
        return metadata.version("pyarrow")
    except metadata.PackageNotFoundError:
        return "not installed"


def write_dir(
    con: duckdb.DuckDBPyConnection, spec: ExportSpec, out: str | Path, *, secret: str | None = None
) -> Export:
    """Write ``DIR/data.csv`` (or ``.parquet``), ``DIR/data_dictionary.csv``, ``DIR/table1.csv`` and
    ``DIR/manifest.json``. Nothing is written when the export is refused."""
    export = build(con, spec, secret=secret)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in export.files.items():
        (folder / name).write_bytes(data)
    return export


FHIR_FILE = "bundle.json"


def write_fhir_bundle(
    con: duckdb.DuckDBPyConnection, spec: ExportSpec, out: str | Path, *, secret: str | None = None
) -> Export:
    """``export --format fhir``: ``DIR/bundle.json``, an R4 Bundle (type collection) of one Observation per
    questionnaire (LOINC total code, items as components, subject ``Patient/P0001``…, the export's keys),
    checked with ``fhir.resources``, and ``DIR/manifest.json``. FHIR dates are calendar dates, so only
    ``--shape long --dates calendar`` is accepted (:class:`ExportError` otherwise). The Bundle carries no
    patient characteristics, so k-anonymity is counted over none (the cohort's size against the floor)."""
    from kapdata import fhir

    if spec.shape != "long":
        raise ExportError("--format fhir writes one Observation per questionnaire: use --shape long")
    if spec.dates != "calendar":
        raise ExportError(
            "--format fhir needs --dates calendar: a FHIR Observation's date is a calendar date, so days "
            "from the first dose cannot be written"
        )
    spec = dataclasses.replace(spec, file_format="csv", items=True, quasi_identifiers=()).checked()
    rows, patients = _materialise(con, spec)
    spec, k = _resolve_qis(con, spec, patients)
    if k.refused:
        raise ExportRefused(k)
    observations = [
        fhir.observation(
            n,
            str(r["patient_id"]),
            str(r["instrument"]),
            r["assessed_on"].isoformat(),
            None if r["total"] is None else int(r["total"]),
            {i: r.get(f"item_{i}") for i in range(1, reg.MAX_ITEMS + 1)},
            prorated=bool(r["prorated"]),
        )
        for n, r in enumerate(_keyed(con, spec, secret).to_pylist(), 1)
    ]
    data = (json.dumps(fhir.bundle(observations), indent=1, ensure_ascii=False) + "\n").encode()
    manifest = {
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "software": {"kapdata": __version__},
        "shape": "long",
        "format": "fhir",
        "fhir": "FHIR R4 Bundle (type collection) of Observations, LOINC-coded; checked with fhir.resources",
        "filters": spec.filters(),
        "rows": rows,
        "patients": patients,
        "dates": "calendar",
        "calendar_dates_included": True,
        "de_identification": {
            "patient_ids": "re-keyed P0001… for this export (Observation.subject Patient/P0001…) in a random "
            "order from a secret that was not saved",
            "dates": DATES_PROTECT["calendar"],
            "linkage": LINKAGE_NOTE,
            "columns_not_exported": "source patient ID, provider and every patient characteristic",
        },
        "k_anonymity": k.as_dict(),
        "files": {FHIR_FILE: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}},
    }
    files = {
        FHIR_FILE: data,
        MANIFEST_FILE: (json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n").encode(),
    }
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return Export(spec, files, manifest)


def zip_bytes(
    con: duckdb.DuckDBPyConnection,
    spec: ExportSpec,
    *,
    secret: str | None = None,
    principal: access.Principal | None = None,
) -> bytes:
    """The page's download: one ``.zip`` with the data, the dictionary, Table 1 and the manifest
    (:class:`ExportRefused` when k is under the floor)."""
    return build_zip(con, spec, secret=secret, principal=principal)[1]


def build_zip(
    con: duckdb.DuckDBPyConnection,
    spec: ExportSpec,
    *,
    secret: str | None = None,
    principal: access.Principal | None = None,
) -> tuple[Export, bytes]:
    """``zip_bytes`` with the export it holds (its spec, rows and manifest, for the audit trail)."""
    export = build(con, spec, secret=secret, principal=principal)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name, data in export.files.items():
            zf.writestr(name, data)
    return export, buf.getvalue()


def audit_detail(export: Export, content: bytes | None = None) -> dict[str, Any]:
    """What the audit trail records of an export: the request, its counts and the checksums."""
    detail: dict[str, Any] = {
        "shape": export.spec.shape,
        "format": export.spec.file_format,
        "dates": export.spec.dates,
        "filters": export.spec.filters(),
        "quasi_identifiers": list(export.spec.qis),
        "rows": export.rows,
        "patients": export.patients,
        "files": {name: f["sha256"] for name, f in export.manifest["files"].items()},
    }
    if content is not None:
        detail["zip_sha256"] = hashlib.sha256(content).hexdigest()
    return detail


def zip_name(spec: ExportSpec, now: dt.datetime | None = None) -> str:
    stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M")
    return f"kap_export_{spec.shape}_{spec.file_format}_{stamp}.zip"


# ---------------------------------------------------------------- preview and Table 1


@dataclass(frozen=True)
class Preview:
    head: pd.DataFrame  # the first rows, re-keyed as in a download
    rows: int
    patients: int
    columns: list[str]
    k_anonymity: KAnonymity
    table1: pd.DataFrame  # characteristic, group, patients (small cells suppressed)
    min_cell: int


TABLE1_COLUMNS: tuple[str, ...] = ("Characteristic", "Group", "Patients")
_TABLE1_SQL = """
    WITH pp AS (
        SELECT coalesce(age_band, 'unknown') AS "Age band", coalesce(sex, 'unknown') AS "Sex",
               coalesce(primary_condition, 'unknown') AS "Primary condition",
               coalesce(route, 'unknown') AS "Route"
        FROM patients SEMI JOIN export_patients USING (patient_id)
    ),
    long AS (UNPIVOT pp ON COLUMNS(*) INTO NAME characteristic VALUE grp)
    SELECT characteristic, grp, count(*) AS n FROM long GROUP BY characteristic, grp
    ORDER BY list_position($names, characteristic),
             list_position($orders[list_position($names, characteristic)], grp) NULLS LAST, grp
"""
_BASELINE_SQL = """
    SELECT instrument, count(baseline) AS n, avg(baseline) AS mean, stddev_samp(baseline) AS sd
    FROM score_points SEMI JOIN pairs USING (patient_id, instrument)
    GROUP BY instrument ORDER BY list_position($codes, instrument)
"""
#: The (patient, scale) pairs whose baselines Table 1 describes: those in the file, or for the sessions
#: shape the chosen scales of the patients in the file.
_PAIRS_SQL = {
    "rows": "SELECT patient_id, instrument FROM export_pairs",
    "sessions": """SELECT patient_id, instrument FROM score_points
        SEMI JOIN export_patients USING (patient_id)
        WHERE len($instruments) = 0 OR list_contains($instruments, instrument)""",
}


def _suppress(counts: list[int], min_cell: int) -> list[bool]:
    """Primary suppression of counts under ``min_cell``; when exactly one count is hidden, hide the next
    smallest too, so that it cannot be recovered from the total."""
    hidden = [0 < n < min_cell for n in counts]
    if sum(hidden) == 1 and len(counts) > 1:
        rest = [(n, i) for i, n in enumerate(counts) if not hidden[i]]
        hidden[min(rest)[1]] = True
    return hidden


def _table1_rows(
    con: duckdb.DuckDBPyConnection, spec: ExportSpec, min_cell: int, total: int
) -> list[tuple[str, str, str]]:
    """Table 1 of the export's patients: n, age band, sex, condition, route (n and %), baseline mean ± SD.
    Groups under ``min_cell`` patients show as ``<min_cell``. Rows of ``TABLE1_COLUMNS``."""
    small = f"<{min_cell}"
    out: list[tuple[str, str, str]] = [("Patients", "all", small if 0 < total < min_cell else f"{total:,}")]
    if total < min_cell:
        return out
    counts = con.execute(
        _TABLE1_SQL,
        {
            "names": ["Age band", "Sex", "Primary condition", "Route"],
            "orders": [
                list(ingest.AGE_BANDS),
                list(ingest.SEXES),
                list(ingest.CONDITIONS),
                list(ingest.ROUTES),
            ],
        },
    ).fetchall()
    for name in dict.fromkeys(c for c, _, _ in counts):
        group = [(g, int(n)) for c, g, n in counts if c == name]
        hidden = _suppress([n for _, n in group], min_cell)
        for (g, n), hide in zip(group, hidden, strict=True):
            out.append((name, g, small if hide else f"{n:,} ({100 * n / total:.0f}%)"))
    params: dict[str, Any] = {"codes": list(reg.BY_CODE)}
    pairs = _PAIRS_SQL["rows"]
    if spec.shape == "sessions":
        pairs = _PAIRS_SQL["sessions"]
        params["instruments"] = list(spec.instruments)
    sql = "WITH pairs AS (" + pairs + ")" + _BASELINE_SQL
    for code, n, mean, sd in con.execute(sql, params).fetchall():
        label = f"{code} baseline"
        if n == 0:
            continue
        value = f"{small} patients" if n < min_cell else f"{mean:.1f} ± {sd:.1f} (n = {n:,})"
        out.append((label, "mean ± SD", value))
    return out


def _table1(con: duckdb.DuckDBPyConnection, spec: ExportSpec, min_cell: int, total: int) -> pd.DataFrame:
    """:func:`_table1_rows` as a frame (the page's preview)."""
    import pandas as pd

    return pd.DataFrame(_table1_rows(con, spec, min_cell, total), columns=list(TABLE1_COLUMNS))


def preview(
    con: duckdb.DuckDBPyConnection,
    spec: ExportSpec,
    n: int = 20,
    principal: access.Principal | None = None,
) -> Preview:
    """What the download would hold: the first rows, counts, k-anonymity (``k_anonymity.refused``: no
    download) and a suppressed Table 1. ``quasi_identifiers=None`` shows the default columns.
    ``principal``: see ``for_principal``."""
    spec = for_principal(spec, principal).checked()
    rows, patients = _materialise(con, spec)
    spec, k = _resolve_qis(con, spec, patients)
    head = _keyed(con, spec, None, n).to_pandas()
    min_cell = int(db.get_settings(con)["min_cell"])
    return Preview(
        head=head,
        rows=rows,
        patients=patients,
        columns=list(head.columns),
        k_anonymity=k,
        table1=_table1(con, spec, min_cell, patients),
        min_cell=min_cell,
    )


# ---------------------------------------------------------------- command line


def _date(value: str | None, option: str) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ExportError(f"{option}: {value!r} is not a date (YYYY-MM-DD)") from None


def _resolve(values: Sequence[str], known: Sequence[str], what: str) -> tuple[str, ...]:
    """Names as stored in the database, matched without regard to case."""
    by_lower = {k.lower(): k for k in known}
    out = []
    for v in values:
        if v.lower() not in by_lower:
            raise ExportError(f"unknown {what} {v!r}; in the database: {', '.join(known) or 'none'}")
        out.append(by_lower[v.lower()])
    return tuple(out)


def _without(names: Sequence[str] | None, shape: str) -> tuple[str, ...] | None:
    """``--without`` names → the quasi-identifiers to keep (None: the default set that passes)."""
    if names is None:
        return None
    for name in names:
        if name not in QUASI_IDENTIFIERS:
            raise ExportError(
                f"--without {name!r}: not a patient characteristic; one of {', '.join(QUASI_IDENTIFIERS)}"
            )
    return tuple(q for q in default_quasi_identifiers(shape) if q not in names)


def _refusal_hint(k: KAnonymity, given: Sequence[str] = ()) -> str:
    """The refusal, with the options that would pass (``given``: the ``--without`` names already used)."""
    if k.suggested_drop and set(k.suggested_drop) != set(k.quasi_identifiers):
        names = [q for q in QUASI_IDENTIFIERS if q in given or q in k.suggested_drop]
        return f"{k.refusal} Run again with " + " ".join(f"--without {q}" for q in names) + "."
    return k.refusal or "export refused"


def cmd_export(args: argparse.Namespace) -> int:
    """Run ``export``: 0 with one summary line; :class:`ExportError` (exit 2) for bad usage;
    :class:`ExportRefused` (exit 3) under the k-anonymity floor; other failures go to the command line's
    own one-line handler."""
    cohort = CohortFilter(
        start_from=_date(args.start_from, "--start-from"), start_to=_date(args.start_to, "--start-to")
    )
    spec = ExportSpec(
        cohort=cohort,
        instruments=tuple(args.instrument),
        phases=tuple(args.phase),
        shape=args.shape,
        file_format="csv" if args.file_format == "fhir" else args.file_format,
        dates=args.dates,
        days=getattr(args, "days", "day"),
        quasi_identifiers=_without(getattr(args, "without", None), args.shape),
    ).checked()
    with db.reader(args.db) as con:
        opts = filters.filter_options(con)
        cohort = CohortFilter(
            start_from=cohort.start_from,
            start_to=cohort.start_to,
            clinics=_resolve(args.clinic, opts.clinics, "clinic"),
            routes=_resolve(args.route, opts.routes, "route"),
            conditions=_resolve(args.condition, opts.conditions, "condition"),
        )
        spec = dataclasses.replace(spec, cohort=cohort)
        try:
            writer = write_fhir_bundle if args.file_format == "fhir" else write_dir
            export = writer(con, spec, args.out)
        except ExportRefused as exc:
            raise ExportRefused(
                exc.k_anonymity, _refusal_hint(exc.k_anonymity, getattr(args, "without", None) or ())
            ) from None
    k = export.k_anonymity
    files = ", ".join(str(Path(args.out) / name) for name in export.files)
    qis = ", ".join(k["quasi_identifiers"]) or "none"
    left_out = (
        f" (left out to reach k ≥ {k['threshold']}: {', '.join(k['left_out_by_default'])})"
        if k["left_out_by_default"]
        else ""
    )
    days = "" if export.spec.dates == "calendar" else f" in {export.spec.days}s"
    print(
        f"{files}: {export.rows:,} rows, {export.patients:,} patients ({spec.shape}, {args.file_format}, "
        f"{spec.dates} dates{days}); k-anonymity {k['k'] if k['k'] is not None else '-'} over {qis}{left_out}"
    )
    if export.rows == 0:
        print("warning: the filters match no data; the files hold headers only", file=sys.stderr)
    args.audited = ("export", str(args.out), audit_detail(export))
    return 0
