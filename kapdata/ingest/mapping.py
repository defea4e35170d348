"""Column mappings: any spreadsheet (CSV, xlsx, Parquet) of a clinic's own shape, wide or long, and a REDCap
longitudinal export, become the contract's rows through a mapping (README, "Loading through a column
mapping").

A mapping is JSON::

    {"kind": "scores", "layout": "long",
     "columns": {"patient_id": "Pseudonym", "assessed_on": "Visit date", "instrument": "Measure",
                 "total": "Score", "item_1": "Q1"},
     "values": {"instrument": {"PHQ9 Depression": "PHQ-9"}, "phase": {"Pre": "preparation"}},
     "date_format": "%d/%m/%Y"}

``layout`` ``"wide"``: one row per visit holding several scales, each named in ``scales``
(``{"PHQ-9": {"total": "PHQ total", "item_1": "Q1"}}``); one score row per scale present in the row.
``layout`` ``"redcap"``: see :mod:`kapdata.ingest.redcap`. Patients and sessions mappings use ``columns``
only. The conversion is SQL over the file read as text (dates with DuckDB's ``try_strptime``); the file's
values are never formatted into SQL (columns are addressed by position, values passed as parameters).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import duckdb

from kapdata import instruments as reg
from kapdata.ingest.checks import _lit
from kapdata.ingest.contract import (
    AGE_BANDS,
    COLUMNS,
    PHASE_ALIASES,
    ROUTE_ALIASES,
    SEX_ALIASES,
    Kind,
    SourceFile,
    identifier_kind,
)
from kapdata.ingest.readers import FileError, _read_raw, read_header
from kapdata.ingest.staging import _text_cell

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

Layout = Literal["long", "wide", "redcap"]
LAYOUTS: tuple[str, ...] = ("long", "wide", "redcap")

#: kind -> the contract columns a mapping may fill.
TARGETS: dict[str, tuple[str, ...]] = {
    "patients": COLUMNS["patients"],
    "sessions": COLUMNS["sessions"],
    "scores": COLUMNS["scores"] + tuple(f"item_{n}" for n in range(1, reg.MAX_ITEMS + 1)),
}
#: Wide and REDCap layouts: what ``columns`` names (shared by every scale of a row) and what a scale names.
ROW_TARGETS: tuple[str, ...] = ("patient_id", "assessed_on", "phase")
DATE_TARGETS: frozenset[str] = frozenset({"assessed_on", "session_date"})
_KEYS = ("kind", "layout", "columns", "scales", "values", "date_format", "events", "dates")
_KEYS += ("ids_are_pseudonymous", "fields", "name")
#: At most this many rows reach a preview.
PREVIEW_ROWS = 20


class MappingError(ValueError):
    """The mapping cannot be used; the message says why in words."""


def scale_targets(code: str) -> tuple[str, ...]:
    inst = reg.get(code)
    return ("total", "assessed_on") + tuple(f"item_{n}" for n in range(1, inst.n_items + 1))


def _str_dict(value: object, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise MappingError(f"{what} must be an object of text to text")
    return {k: v for k, v in value.items() if v.strip()}


def _instrument_code(name: str) -> str:
    inst = reg.lookup(name)
    if inst is None:
        raise MappingError(f"unknown scale {name!r} in the mapping; known: {', '.join(reg.BY_CODE)}")
    return inst.code


@dataclass
class Mapping:
    """A column mapping (see the module's docstring for the JSON)."""

    kind: Kind = "scores"
    layout: Layout = "long"
    columns: dict[str, str] = field(default_factory=dict)  # contract column -> source header
    scales: dict[str, dict[str, str]] = field(default_factory=dict)  # wide/redcap: scale -> its columns
    values: dict[str, dict[str, str]] = field(default_factory=dict)  # contract column -> source -> value
    date_format: str | None = None  # strptime-style, for every date column
    events: dict[str, str] = field(default_factory=dict)  # redcap: event name -> phase
    dates: dict[str, str] = field(default_factory=dict)  # redcap: scale -> its date field
    ids_are_pseudonymous: bool | None = None  # None: as the layout does (REDCap hashes record_id)

    # ---------------------------------------------------------------------------------------- JSON
    @classmethod
    def from_json(cls, text: str) -> Mapping:
        try:
            doc = json.loads(text)
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            where = (
                f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
            )
            raise MappingError(f"the mapping is not valid JSON{where}") from None
        return cls.from_dict(doc)

    @classmethod
    def from_dict(cls, doc: object) -> Mapping:
        if not isinstance(doc, dict):
            raise MappingError("the mapping must be a JSON object ({...})")
        unknown = [k for k in doc if k not in _KEYS]
        if unknown:
            raise MappingError(
                f"unknown key {unknown[0]!r} in the mapping; expected some of {', '.join(_KEYS)}"
            )
        kind = doc.get("kind", "scores")
        if kind not in TARGETS:
            raise MappingError(f"unknown kind {kind!r}; expected patients, sessions or scores")
        layout = doc.get("layout", "long")
        if layout not in LAYOUTS:
            raise MappingError(f"unknown layout {layout!r}; expected long, wide or redcap")
        if layout != "long" and kind != "scores":
            raise MappingError(f"the {layout} layout is for scores; a {kind} mapping is long (columns only)")
        scales_doc = doc.get("scales") or {}
        if not isinstance(scales_doc, dict):
            raise MappingError("scales must be an object: scale name -> its columns")
        values_doc = doc.get("values") or {}
        if not isinstance(values_doc, dict):
            raise MappingError("values must be an object: column -> (file value -> contract value)")
        fmt = doc.get("date_format")
        if fmt is not None and (not isinstance(fmt, str) or "%" not in fmt):
            raise MappingError("date_format must be a strptime-style format such as %d/%m/%Y")
        pseudo = doc.get("ids_are_pseudonymous")
        if pseudo is not None and not isinstance(pseudo, bool):
            raise MappingError("ids_are_pseudonymous must be true or false")
        mapping = cls(
            kind=kind,
            layout=layout,
            columns=_str_dict(doc.get("columns"), "columns"),
            scales={_instrument_code(k): _str_dict(v, f"scales[{k!r}]") for k, v in scales_doc.items()},
            values={k: _str_dict(v, f"values[{k!r}]") for k, v in values_doc.items()},
            date_format=fmt or None,
            events=_str_dict(doc.get("events"), "events"),
            dates={_instrument_code(k): v for k, v in _str_dict(doc.get("dates"), "dates").items()},
            ids_are_pseudonymous=pseudo,
        )
        mapping.check()
        return mapping

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"kind": self.kind, "layout": self.layout, "columns": dict(self.columns)}
        for key in ("scales", "values", "events", "dates"):
            if getattr(self, key):
                doc[key] = getattr(self, key)
        if self.date_format:
            doc["date_format"] = self.date_format
        if self.ids_are_pseudonymous is not None:
            doc["ids_are_pseudonymous"] = self.ids_are_pseudonymous
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    # ------------------------------------------------------------------------------------ checking
    def check(self) -> None:
        """Refuse a mapping that cannot work, whatever the file: unknown target columns, a missing
        required one."""
        allowed = TARGETS[self.kind] if self.layout == "long" else ROW_TARGETS
        if self.layout == "redcap":
            allowed = ROW_TARGETS + ("event",)
        for target in self.columns:
            if target not in allowed:
                raise MappingError(
                    f"unknown target column {target!r} for a {self.layout} {self.kind} mapping; expected one "
                    f"of {', '.join(allowed)}"
                )
        for code, cols in self.scales.items():
            for target in cols:
                if target not in scale_targets(code):
                    raise MappingError(
                        f"unknown target column {target!r} for {code}; expected total, assessed_on or "
                        f"item_1 … item_{reg.get(code).n_items}"
                    )
        for target, table in self.values.items():
            if target not in TARGETS[self.kind] and target != "event":
                raise MappingError(f"values: unknown target column {target!r}")
            if not isinstance(table, dict):
                raise MappingError(f"values[{target!r}] must map file values to contract values")
        if self.layout == "redcap":
            return  # REDCap field names have defaults (kapdata.ingest.redcap)
        required = {"patients": ("patient_id",), "sessions": ("patient_id", "session_date")}.get(
            self.kind, ("patient_id", "assessed_on")
        )
        for target in required:
            if target not in self.columns and not (
                target == "assessed_on"
                and self.scales
                and all("assessed_on" in s for s in self.scales.values())
            ):
                raise MappingError(f"the mapping does not say which column holds {target}")
        if self.kind == "scores" and self.layout == "long":
            if "instrument" not in self.columns:
                raise MappingError("the mapping does not say which column holds the instrument")
            if "total" not in self.columns and not any(t.startswith("item_") for t in self.columns):
                raise MappingError("the mapping names neither a total nor item columns")
        if self.layout == "wide":
            if not self.scales:
                raise MappingError('a wide mapping names its scales (scales: {"PHQ-9": {...}})')
            for code, cols in self.scales.items():
                if "total" not in cols and not any(t.startswith("item_") for t in cols):
                    raise MappingError(f"{code}: the mapping names neither a total nor item columns")

    def source_columns(self) -> list[str]:
        """Every file header the mapping reads, in order, once."""
        names = list(self.columns.values())
        for cols in self.scales.values():
            names += cols.values()
        names += self.dates.values()
        return list(dict.fromkeys(names))

    def check_headers(self, headers: list[str]) -> dict[str, int]:
        """Position (1-based) of each source column in ``headers``; refuses a source column the file does not
        have, and a mapped column whose header looks like a direct identifier."""
        positions = _positions(headers)
        for name in self.source_columns():
            if _find(positions, name) is None:
                shown = ", ".join(headers[:30]) + (" …" if len(headers) > 30 else "")
                raise MappingError(
                    f"the mapping names column {name!r}, which is not in the file (its columns: {shown})"
                )
            what = identifier_kind(name)
            if what is not None:
                raise MappingError(
                    f"the mapping reads column {name!r}, which looks like {what}, a direct identifier: map "
                    "only pseudonymous codes and scores"
                )
        return positions


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _positions(headers: list[str]) -> dict[str, int]:
    positions: dict[str, int] = {}
    for pos, name in enumerate(headers, start=1):
        positions.setdefault(str(name), pos)
        positions.setdefault("\0" + str(name).strip().lower(), pos)
    return positions


def _find(positions: dict[str, int], name: str) -> int | None:
    """A header's position: exact, else ignoring case and surrounding spaces."""
    return positions.get(name, positions.get("\0" + name.strip().lower()))


# ------------------------------------------------------------------------------------------ converting


@dataclass
class Part:
    """Converted rows: one staged table (the contract's columns as text, ``_kap_row``, ``_kap_error``)."""

    kind: Kind
    table: pa.Table
    label: str = ""  # "" or the scale a part holds (wide and REDCap layouts: one part per scale)


class _Sql:
    """Builds the SELECT that turns the raw table into contract rows; parameters are collected, never
    formatted in."""

    def __init__(self, mapping: Mapping) -> None:
        self.mapping = mapping
        self.params: dict[str, object] = {}
        self.errors: list[str] = []  # SQL expressions giving a row's refusal, or NULL

    def param(self, value: object) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return "$" + name

    def value(self, target: str, expr: str) -> str:
        table = self.mapping.values.get(target)
        if not table:
            return expr
        keys = self.param([k.strip().lower() for k in table])
        vals = self.param(list(table.values()))
        # list_position finds the file's value among the mapping's (case and spaces ignored).
        return f"coalesce({vals}[list_position({keys}, lower({expr}))], {expr})"

    def date(self, target: str, expr: str) -> str:
        fmt = self.mapping.date_format
        if not fmt:
            return expr
        f = self.param(fmt)
        out = "%Y-%m-%dT%H:%M:%S" if re.search(r"%[HIMSpf]", fmt) else "%Y-%m-%d"
        self.errors.append(
            f"CASE WHEN {expr} IS NOT NULL AND try_strptime({expr}, {f}) IS NULL THEN "
            f"{_lit(target + ': ')} || {expr} || ' does not match the date format ' || {f} END"
        )
        return f"coalesce(strftime(try_strptime({expr}, {f}), {_lit(out)}), {expr})"

    def column(self, target: str, pos: int | None) -> str:
        if pos is None:
            return f"CAST(NULL AS VARCHAR) AS {target}"
        expr = _text_cell(pos)
        if target in DATE_TARGETS:
            expr = self.date(target, expr)
        return f"{self.value(target, expr)} AS {target}"

    def error_expr(self) -> str:
        if not self.errors:
            return "CAST(NULL AS VARCHAR) AS _kap_error"
        out = f"nullif(concat_ws('; ', {', '.join(self.errors)}), '') AS _kap_error"
        self.errors = []
        return out


def _read(con: duckdb.DuckDBPyConnection, src: SourceFile) -> tuple[list[str], int]:
    """The file into temp table ``mapped_raw`` (every cell text); its header and first data row's number."""
    header = read_header(src)
    offset = _read_raw(con, src, "mapped_raw", len(header))
    rows = con.execute("SELECT coalesce(min(rowid), 0) FROM mapped_raw").fetchall()
    return header, offset - int(rows[0][0])


def convert(
    src: SourceFile, mapping: Mapping, *, key: bytes | None = None, limit: int | None = None
) -> tuple[list[Part], list[str]]:
    """The file through the mapping: parts of converted rows, and info notes. Raises :class:`MappingError`
    (the mapping does not fit the file) or :class:`~kapdata.ingest.readers.FileError` (unreadable)."""
    con = duckdb.connect()
    try:
        header, offset = _read(con, src)
        if mapping.layout == "redcap":
            from kapdata.ingest import redcap

            parts, notes = redcap.convert(con, header, offset, mapping, key=key, limit=limit)
            return parts, notes + _ignored_identifiers(header, mapping)
        positions = mapping.check_headers(header)
        notes = _ignored_identifiers(header, mapping)
        row = f"CAST(rowid + {int(offset)} AS BIGINT) AS _kap_row"
        lim = f" ORDER BY rowid LIMIT {int(limit)}" if limit is not None else ""
        parts: list[Part] = []
        if mapping.layout == "long":
            sql = _Sql(mapping)
            cols = [
                sql.column(t, _find(positions, mapping.columns[t]) if t in mapping.columns else None)
                for t in TARGETS[mapping.kind]
                if t in mapping.columns or not t.startswith("item_")
            ]
            select = f"SELECT {row}, {', '.join(cols)}, {sql.error_expr()} FROM mapped_raw{lim}"
            parts.append(Part(mapping.kind, con.sql(select, params=sql.params or None).to_arrow_table()))
        else:
            for code, scale in mapping.scales.items():
                parts.append(Part("scores", _wide_part(con, mapping, positions, code, scale, row, lim), code))
        return parts, notes
    finally:
        con.close()


def _wide_part(
    con: duckdb.DuckDBPyConnection,
    mapping: Mapping,
    positions: dict[str, int],
    code: str,
    scale: dict[str, str],
    row: str,
    lim: str,
) -> pa.Table:
    sql = _Sql(mapping)
    shared = {t: _find(positions, s) for t, s in mapping.columns.items()}
    own = {t: _find(positions, s) for t, s in scale.items()}
    cols = [
        sql.column("patient_id", shared.get("patient_id")),
        f"{_lit(code)} AS instrument",  # our registry's code, not file input
        sql.column("assessed_on", own.get("assessed_on", shared.get("assessed_on"))),
        sql.column("total", own.get("total")),
        sql.column("phase", shared.get("phase")),
    ] + [sql.column(t, p) for t, p in own.items() if t.startswith("item_")]
    present = " OR ".join(f"{_text_cell(p)} IS NOT NULL" for t, p in own.items() if t != "assessed_on" and p)
    select = f"SELECT {row}, {', '.join(cols)}, {sql.error_expr()} FROM mapped_raw WHERE {present}{lim}"
    return con.sql(select, params=sql.params or None).to_arrow_table()


def _ignored_identifiers(header: list[str], mapping: Mapping) -> list[str]:
    used = set(mapping.source_columns())
    skipped = [h for h in header if h not in used and identifier_kind(h) is not None]
    if not skipped:
        return []
    return [
        f"{len(skipped)} column(s) that look like direct identifiers are not read and never stored: "
        + ", ".join(skipped[:10])
        + (" …" if len(skipped) > 10 else "")
    ]


def preview(path: Path, mapping: Mapping, n: int = PREVIEW_ROWS, *, key: bytes | None = None) -> pd.DataFrame:
    """The first ``n`` contract rows the mapping makes of the file (wide and REDCap: up to ``n`` source rows,
    a row per scale), as text, with the source row (``_kap_row``) and any refusal by the mapping
    (``_kap_error``). REDCap record ids are hashed with ``key`` (the database's own, from
    :func:`kapdata.ingest.sources.read_key`), else with a throwaway key: then they are only a preview."""
    import secrets

    import pandas as pd

    src = SourceFile(Path(path), Path(path).name)
    parts, _notes = convert(src, mapping, key=key or secrets.token_bytes(32), limit=n)
    frames = [p.table.to_pandas() for p in parts]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=["_kap_row", *TARGETS[mapping.kind][:5]])
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return frame.sort_values("_kap_row", kind="stable").head(n * max(len(parts), 1)).reset_index(drop=True)


# ----------------------------------------------------------------------------------------- suggesting

#: Header synonyms per contract column (compared with letters and digits only, lower case).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "patient_id": (
        "patientid",
        "patient",
        "pseudonym",
        "pseudoid",
        "subject",
        "subjectid",
        "participant",
        "participantid",
        "recordid",
        "studyid",
        "code",
        "id",
        "pid",
        "client",
        "clientid",
        "case",
    ),
    "assessed_on": (
        "assessedon",
        "date",
        "visitdate",
        "assessmentdate",
        "completed",
        "completedon",
        "dateofassessment",
        "scoredate",
        "surveydate",
        "administered",
        "when",
        "timestamp",
    ),
    "instrument": ("instrument", "measure", "scale", "questionnaire", "test", "assessment", "form", "tool"),
    "total": ("total", "score", "totalscore", "sum", "result", "value", "points"),
    "phase": ("phase", "visit", "timepoint", "stage", "event", "period", "treatmentphase"),
    "session_date": ("sessiondate", "date", "dosingdate", "treatmentdate", "infusiondate", "visitdate"),
    "route": ("route", "administration", "routeofadministration"),
    "dose_mg": ("dosemg", "dose", "mg", "ketaminedose", "dosage"),
    "dose_mg_per_kg": ("dosemgperkg", "dosemgkg", "mgkg", "doseperkg"),
    "bp_sys_pre": ("bpsyspre", "systolicpre", "sbppre", "presystolic"),
    "bp_dia_pre": ("bpdiapre", "diastolicpre", "dbppre", "prediastolic"),
    "bp_sys_post": ("bpsyspost", "systolicpost", "sbppost", "postsystolic"),
    "bp_dia_post": ("bpdiapost", "diastolicpost", "dbppost", "postdiastolic"),
    "dissociation": ("dissociation", "cadss", "cadss6"),
    "side_effects": ("sideeffects", "adverseevents", "effects", "ae"),
    "clinic": ("clinic", "site", "location", "centre", "center"),
    "provider": ("provider", "clinician", "therapist", "prescriber"),
    "age_band": ("ageband", "agegroup", "agerange", "age"),
    "sex": ("sex", "gender"),
    "primary_condition": ("primarycondition", "condition", "diagnosis", "indication", "dx"),
}
_ITEM_HEADER = re.compile(r"^(?:item|q|question|phq9|gad7|pcl5|phq|gad|pcl)?_?(\d{1,2})$")
_DATE_VALUE = re.compile(r"^\s*(\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2,4})([ T].*)?$")
_ID_VALUE = re.compile(r"^[A-Za-z]{0,4}[-_]?\d{2,}[A-Za-z0-9_-]*$")


def _looks(values: list[str], pattern: re.Pattern[str]) -> bool:
    given = [v for v in values if str(v).strip()]
    return bool(given) and sum(bool(pattern.match(str(v))) for v in given) >= 0.8 * len(given)


def _small_ints(values: list[str], high: int) -> bool:
    given = [str(v).strip() for v in values if str(v).strip()]
    return bool(given) and all(v.isdigit() and int(v) <= high for v in given)


def _guess_date_format(values: list[str]) -> str | None:
    given = [str(v).strip()[:10] for v in values if str(v).strip()]
    if not given or all(re.match(r"^\d{4}-\d{2}-\d{2}$", v) for v in given):
        return None
    for fmt in ("%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d-%m-%Y", "%Y/%m/%d", "%d/%m/%y"):
        import datetime as dt

        try:
            for v in given:
                dt.datetime.strptime(v, fmt)
            return fmt
        except ValueError:
            continue
    return None


def suggest(headers: list[str], samples: dict[str, list[str]], kind: str | None = None) -> Mapping:
    """A best-guess mapping: headers matched by name (synonyms, case and spacing ignored) and by content
    (dates, ID-like codes, small integers, instrument names). A guess to show and correct, never applied
    unseen."""
    samples = {h: [str(v) for v in samples.get(h, []) if v is not None] for h in headers}
    candidates = [h for h in headers if identifier_kind(h) is None]
    keys = {h: _key(h) for h in candidates}
    instrument_col = next(
        (
            h
            for h in candidates
            if samples[h]
            and sum(reg.lookup(v) is not None for v in samples[h])
            >= 0.8 * len([v for v in samples[h] if v.strip()])
            and any(v.strip() for v in samples[h])
        ),
        None,
    )
    scale_prefixed = _scale_columns(candidates)
    if kind is None:
        names = set(keys.values())
        if instrument_col or scale_prefixed or names & {"score", "total", "totalscore"}:
            kind = "scores"
        elif names & {"sessiondate", "dose", "dosemg", "route"}:
            kind = "sessions"
        elif names & {"sex", "gender", "ageband", "agegroup", "clinic", "diagnosis"}:
            kind = "patients"
        else:
            kind = "scores"
    if kind not in TARGETS:
        raise MappingError(f"unknown kind {kind!r}; expected patients, sessions or scores")
    taken: set[str] = set()
    columns: dict[str, str] = {}

    def pick(target: str, ok: Any = None) -> None:
        if target in columns:
            return
        for syn in SYNONYMS.get(target, ()):
            for h in candidates:
                if h not in taken and keys[h] == syn and (ok is None or ok(samples[h])):
                    columns[target] = h
                    taken.add(h)
                    return
        if ok is not None:
            for h in candidates:
                if h not in taken and samples[h] and ok(samples[h]):
                    columns[target] = h
                    taken.add(h)
                    return

    def is_date(v: list[str]) -> bool:
        return _looks(v, _DATE_VALUE)

    def is_id(v: list[str]) -> bool:
        return _looks(v, _ID_VALUE) and not is_date(v)

    if instrument_col and kind == "scores":
        columns["instrument"] = instrument_col
        taken.add(instrument_col)
    pick("patient_id", is_id)
    date_target = "session_date" if kind == "sessions" else ("assessed_on" if kind == "scores" else None)
    if date_target:
        pick(date_target, is_date)
    mapping = Mapping(kind=kind)  # type: ignore[arg-type]
    if kind == "scores" and not instrument_col and len(scale_prefixed) >= 1:
        mapping.layout = "wide"
        pick("phase")
        mapping.columns = {t: columns[t] for t in ROW_TARGETS if t in columns}
        mapping.scales = {code: cols for code, cols in scale_prefixed.items()}
    else:
        for target in TARGETS[kind]:
            if target.startswith("item_"):
                continue
            pick(target)
        if kind == "scores":
            for h in candidates:
                m = _ITEM_HEADER.match(keys[h]) or _ITEM_HEADER.match(h.lower())
                if h not in taken and m and _small_ints(samples[h], 4):
                    target = f"item_{int(m.group(1))}"
                    if target in TARGETS["scores"] and target not in columns:
                        columns[target] = h
                        taken.add(h)
        mapping.columns = {t: columns[t] for t in TARGETS[kind] if t in columns}
    date_col = columns.get(date_target or "")
    if date_col:
        mapping.date_format = _guess_date_format(samples.get(date_col, []))
    values: dict[str, dict[str, str]] = {}
    for target, aliases in (("phase", PHASE_ALIASES), ("route", ROUTE_ALIASES), ("sex", SEX_ALIASES)):
        col = columns.get(target)
        if col:
            unknown = sorted(
                {v.strip() for v in samples[col] if v.strip() and v.strip().lower() not in aliases}
            )
            if unknown:
                values[target] = {v: "" for v in unknown}
    if instrument_col:
        table = {v.strip(): reg.lookup(v).code for v in samples[instrument_col] if reg.lookup(v)}  # type: ignore[union-attr]
        odd = {k: v for k, v in table.items() if k != v}
        if odd:
            values["instrument"] = odd
    if kind == "patients" and "age_band" in columns:
        bad = sorted({v for v in samples[columns["age_band"]] if v.strip() and v.strip() not in AGE_BANDS})
        if bad:
            values["age_band"] = {v: "" for v in bad}
    mapping.values = {t: {k: v for k, v in tbl.items() if v} for t, tbl in values.items()}
    mapping.values = {t: tbl for t, tbl in mapping.values.items() if tbl}
    return mapping


def _scale_columns(headers: list[str]) -> dict[str, dict[str, str]]:
    """Wide exports name a scale's columns after it (``PHQ9_1`` … ``PHQ9_9``, ``PHQ total``)."""
    found: dict[str, dict[str, str]] = {}
    for h in headers:
        k = _key(h)
        for inst in reg.INSTRUMENTS:
            stem = _key(inst.code)  # phq9, gad7, pcl5
            if not k.startswith(stem):
                continue
            rest = k[len(stem) :]
            if rest.startswith(("item", "q")):
                rest = rest[4:] if rest.startswith("item") else rest[1:]
            if rest.isdigit() and 1 <= int(rest) <= inst.n_items:
                found.setdefault(inst.code, {})[f"item_{int(rest)}"] = h
            elif rest in ("total", "score", "totalscore", "sum"):
                found.setdefault(inst.code, {})["total"] = h
            elif rest in ("date", "dateassessed", "completed"):
                found.setdefault(inst.code, {})["assessed_on"] = h
    return found


# ---------------------------------------------------------------------------------------------- saving


def save(con: duckdb.DuckDBPyConnection, name: str, mapping: Mapping) -> None:
    """Save (or replace) a mapping by name, with the source columns it reads."""
    name = name.strip()
    if not name or len(name) > 100:
        raise MappingError("a mapping's name is 1-100 characters")
    mapping.check()
    con.execute(
        "INSERT OR REPLACE INTO mappings (name, spec, headers, saved_at) "
        "VALUES (?, ?, ?, current_localtimestamp())",
        [name, mapping.to_json(), mapping.source_columns()],
    )


def saved(con: duckdb.DuckDBPyConnection) -> list[tuple[str, Mapping]]:
    """Every saved mapping, newest first (a spec that no longer parses is left out)."""
    out = []
    for name, spec in con.execute("SELECT name, spec FROM mappings ORDER BY saved_at DESC, name").fetchall():
        try:
            out.append((str(name), Mapping.from_json(str(spec))))
        except MappingError:
            continue
    return out


def for_headers(con: duckdb.DuckDBPyConnection, headers: list[str]) -> tuple[str, Mapping] | None:
    """A saved mapping whose source columns are all among ``headers`` (the same export next month): the one
    reading the most columns, the newest among equals."""
    have = {str(h).strip().lower() for h in headers}
    best: tuple[int, str, Mapping] | None = None
    for name, mapping in saved(con):
        cols = [c.strip().lower() for c in mapping.source_columns()]
        if cols and all(c in have for c in cols) and (best is None or len(cols) > best[0]):
            best = (len(cols), name, mapping)
    return None if best is None else (best[1], best[2])


def load_mapping_file(path: str | Path) -> Mapping:
    """A mapping from a JSON file (the command line's ``--mapping``)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MappingError(f"mapping file {p.name} not found") from None
    except (OSError, UnicodeDecodeError):
        raise MappingError(f"mapping file {p.name} cannot be read as UTF-8 text") from None
    return Mapping.from_json(text)


def iter_parts(parts: list[Part]) -> Iterator[Part]:
    yield from (p for p in parts if p.table.num_rows)


__all__ = [
    "TARGETS",
    "FileError",
    "Mapping",
    "MappingError",
    "Part",
    "convert",
    "for_headers",
    "load_mapping_file",
    "preview",
    "save",
    "saved",
    "suggest",
]
