"""REDCap: a longitudinal "raw data" CSV export (``record_id``, ``redcap_event_name``,
``redcap_repeat_instrument``, ``phq9_1`` … ``phq9_9``, ``gad7_1`` …, ``pcl5_1`` …, a date field per
instrument) read through a ``"layout": "redcap"`` mapping (README, "REDCap exports")::

    {"kind": "scores", "layout": "redcap",
     "events": {"baseline_arm_1": "preparation", "dosing_arm_1": "dosing", "month_3_arm_1": "follow-up"},
     "dates": {"PHQ-9": "phq9_date", "GAD-7": "gad7_date"},
     "scales": {"PHQ-9": {"total": "phq9_total"}},
     "ids_are_pseudonymous": false}

Field names default to REDCap's usual ones (``phq9_1``…, ``<scale>_date``); ``scales`` overrides any of
them. ``record_id`` becomes the patient_id through a keyed hash (the database's own key: the same record
always gets the same ID) unless ``"ids_are_pseudonymous": true``. A total field is used when mapped, else the
items' sum (the validation's own rule). Rows of repeating instruments (``redcap_repeat_instrument``) hold
only their instrument's fields and are read like any other row.
"""

from __future__ import annotations

import hashlib
import hmac

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from kapdata import instruments as reg
from kapdata.ingest.checks import _lit
from kapdata.ingest.mapping import Mapping, MappingError, Part, _find, _positions, _Sql
from kapdata.ingest.readers import _quote_ident
from kapdata.ingest.staging import _text_cell

#: REDCap's usual field prefix per scale.
PREFIX = {"PHQ-9": "phq9", "GAD-7": "gad7", "PCL-5": "pcl5"}
RECORD_ID = "record_id"
EVENT = "redcap_event_name"
REPEAT = "redcap_repeat_instrument"
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # no I, L, O, U: pseudonyms never look alike when folded


def pseudonym(record_id: str, key: bytes) -> str:
    """``R`` + 10 Crockford base32 characters of HMAC-SHA256(key, record id): the same record always gets the
    same patient_id in this database."""
    digest = hmac.new(key, b"kap-redcap-record\x00" + record_id.encode("utf-8"), hashlib.sha256).digest()
    n = int.from_bytes(digest[:8], "big") >> 14
    chars = []
    for _ in range(10):
        chars.append(CROCKFORD[n & 31])
        n >>= 5
    return "R" + "".join(reversed(chars))


def scale_fields(mapping: Mapping, header: list[str]) -> dict[str, dict[str, str]]:
    """Per scale found in the export: contract column -> REDCap field (defaults, then the mapping's own)."""
    positions = _positions(header)
    out: dict[str, dict[str, str]] = {}
    for inst in reg.INSTRUMENTS:
        prefix = PREFIX.get(inst.code, inst.code.lower().replace("-", ""))
        fields = {f"item_{n}": f"{prefix}_{n}" for n in range(1, inst.n_items + 1)}
        fields = {t: f for t, f in fields.items() if _find(positions, f) is not None}
        for t in ("total", "assessed_on"):
            default = f"{prefix}_{'total' if t == 'total' else 'date'}"
            if _find(positions, default) is not None:
                fields[t] = default
        if inst.code in mapping.dates:
            fields["assessed_on"] = mapping.dates[inst.code]
        fields.update(mapping.scales.get(inst.code, {}))
        if any(t != "assessed_on" for t in fields):
            out[inst.code] = fields
    return out


def convert(
    con: duckdb.DuckDBPyConnection,
    header: list[str],
    offset: int,
    mapping: Mapping,
    *,
    key: bytes | None,
    limit: int | None = None,
) -> tuple[list[Part], list[str]]:
    """The export (already in ``mapped_raw``) as one scores part per scale."""
    positions = _positions(header)
    record = mapping.columns.get("patient_id", RECORD_ID)
    event = mapping.columns.get("event", EVENT)
    for what, name in (("the record id", record), ("the event name", event)):
        if _find(positions, name) is None:
            raise MappingError(
                f"the export has no {name!r} column ({what}): export the raw data of a longitudinal project, "
                "or name the column in the mapping's columns"
            )
    scales = scale_fields(mapping, header)
    if not scales:
        raise MappingError(
            "no scale fields found: expected REDCap fields such as phq9_1 … phq9_9, gad7_1 …, pcl5_1 …, or "
            "name them in the mapping's scales"
        )
    for code, fields in scales.items():
        for target, name in fields.items():
            if _find(positions, name) is None:
                raise MappingError(
                    f"the mapping names field {name!r} ({code} {target}), which is not in the export"
                )
        if "assessed_on" not in fields:
            raise MappingError(
                f'no date field for {code}: name it in the mapping\'s dates ({{"{code}": "…_date"}})'
            )
    pseudonymous = bool(mapping.ids_are_pseudonymous)
    rec = _text_cell(int(_find(positions, record) or 0))
    if pseudonymous:
        patient = rec
    else:
        if key is None:
            raise MappingError("a key is needed to pseudonymise REDCap record ids")
        # The distinct record ids (trimmed, blanks left out, as _text_cell reads them), read column-wise.
        column = con.table("mapped_raw").to_arrow_table().column(int(_find(positions, record) or 1) - 1)
        trimmed = pc.utf8_trim_whitespace(pc.cast(column, pa.string()))
        ids = [v for v in pc.unique(trimmed).to_pylist() if v]
        con.execute("CREATE OR REPLACE TEMP TABLE record_keys (record VARCHAR, patient_id VARCHAR)")
        if ids:
            con.executemany(
                "INSERT INTO record_keys VALUES (?, ?)", [[str(i), pseudonym(str(i), key)] for i in ids]
            )
        # The record column by its (quoted) name: a positional reference inside the subquery would mean
        # record_keys' own column.
        described = con.execute("DESCRIBE mapped_raw").fetchall()
        qualified = "mapped_raw." + _quote_ident(str(described[int(_find(positions, record) or 1) - 1][0]))
        patient = (
            "(SELECT k.patient_id FROM record_keys k "
            f"WHERE k.record = nullif(trim(CAST({qualified} AS VARCHAR)), ''))"
        )
    ev = _text_cell(int(_find(positions, event) or 0))
    row = f"CAST(rowid + {int(offset)} AS BIGINT) AS _kap_row"
    lim = f" ORDER BY rowid LIMIT {int(limit)}" if limit is not None else ""
    parts: list[Part] = []
    events_k = [k.strip().lower() for k in mapping.events]
    events_v = list(mapping.events.values())
    for code, fields in scales.items():
        sql = _Sql(mapping)
        own = {t: _find(positions, f) for t, f in fields.items()}
        if mapping.events:
            keys, vals = sql.param(events_k), sql.param(events_v)
            phase = f"{vals}[list_position({keys}, lower({ev}))]"
            sql.errors.append(
                f"CASE WHEN {ev} IS NOT NULL AND list_position({keys}, lower({ev})) IS NULL THEN "
                f"'event ' || {ev} || {_lit(' is not in the mapping’s events (event → phase)')} END"
            )
        else:
            phase = "CAST(NULL AS VARCHAR)"
        cols = [
            f"{patient} AS patient_id",
            f"{_lit(code)} AS instrument",  # our registry's code
            sql.column("assessed_on", own.get("assessed_on")),
            sql.column("total", own.get("total")),
            f"{phase} AS phase",
        ] + [sql.column(t, p) for t, p in own.items() if t.startswith("item_")]
        present = " OR ".join(
            f"{_text_cell(int(p))} IS NOT NULL" for t, p in own.items() if t != "assessed_on" and p
        )
        select = f"SELECT {row}, {', '.join(cols)}, {sql.error_expr()} FROM mapped_raw WHERE ({present}){lim}"
        parts.append(Part("scores", con.sql(select, params=sql.params or None).to_arrow_table(), code))
    notes = [
        f"REDCap export: {', '.join(f'{p.label} {p.table.num_rows:,} rows' for p in parts)}; record ids "
        + (
            "used as given (said to be pseudonymous)"
            if pseudonymous
            else "replaced by keyed pseudonyms (R + 10 characters)"
        )
    ]
    return parts, notes
