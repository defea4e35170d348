"""Streamlit glue for the mapping step of the Data import page: a spreadsheet with the clinic's own headers
(or a REDCap export) is read through a column mapping built here, previewed, saved by name in the database
and offered again when the same headers come back.

The mapping itself — what it means, how a file is read through it, how it is stored — is
:mod:`kapdata.ingest.mapping`; this module only draws the editor and turns its widgets into a mapping. A
mapped file is then validated and committed by :mod:`kapui.data` exactly like a native file.

Nothing a file holds is rendered as Markdown: headers and values are widget options or ``st.dataframe``
cells (text), and file or mapping names go through :func:`kapui.md_escape`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

import kapui
from kapdata import db, ingest
from kapdata import instruments as reg
from kapdata.ingest import mapping as mp
from kapdata.ingest import redcap
from kapui.data import Upload

FHIR_SUFFIXES: tuple[str, ...] = (".json", ".ndjson")
SPREADSHEET_SUFFIXES: tuple[str, ...] = (".csv", ".xlsx", ".parquet")
KINDS: tuple[str, ...] = ("patients", "sessions", "scores")
LAYOUTS: dict[str, str] = {
    "long": "long: one row per score (a column names the scale)",
    "wide": "wide: one row per visit, the items of several scales side by side",
    "redcap": "REDCap longitudinal export (record_id, redcap_event_name)",
}
NOT_IN_FILE = "— not in the file —"
AS_WRITTEN = "(as written)"
NO_PHASE = "(no phase given)"
SUGGESTED = "Suggested from the file's columns"
#: ``load_files`` keyword for "these FHIR ids are already pseudonymous" (kapdata.fhir.read_*).
FHIR_PSEUDONYMOUS_OPTION = "fhir_ids_are_pseudonymous"
HEAD_ROWS = 2000  # rows read for the suggestions and the distinct values of the value maps
MAX_VALUE_CHOICES = 30  # distinct source values offered in one value map
PREVIEW_ROWS = 20
#: Contract values a value map can translate to, per contract column.
CONTRACT_VALUES: dict[str, tuple[str, ...]] = {
    "instrument": tuple(i.code for i in reg.INSTRUMENTS),
    "phase": ("preparation", "dosing", "integration", "follow-up"),
    "route": ingest.ROUTES,
}
PREVIEW_NAMES = {"_kap_row": "row", "_kap_error": "refused by the mapping"}
_SAVED_NOTE = "import_mapping_saved"  # session state: the last "saved as" message, per file


def is_fhir(name: str) -> bool:
    return Path(name).suffix.lower() in FHIR_SUFFIXES


def is_spreadsheet(name: str) -> bool:
    return Path(name).suffix.lower() in SPREADSHEET_SUFFIXES


# ------------------------------------------------------------------------------------- reading the head


@dataclass(frozen=True)
class Head:
    """The first rows of an upload, every cell as text; ``None`` from :func:`read_head` if unreadable."""

    headers: list[str]
    frame: pd.DataFrame

    def samples(self, n: int = 50) -> dict[str, list[str]]:
        out = {}
        for pos, h in enumerate(self.headers):
            col = self.frame.iloc[:, pos]
            out[h] = [v for v in col.astype(str).tolist() if v != ""][:n]
        return out

    def distinct(self, header: str) -> list[str]:
        """The column's distinct non-empty values in the rows read (first appearance order)."""
        if header not in self.headers:
            return []
        col = self.frame.iloc[:, self.headers.index(header)].astype(str).str.strip()
        return list(dict.fromkeys(v for v in col if v))


def read_head(upload: Upload, n: int = HEAD_ROWS) -> Head | None:
    """The upload's header and first ``n`` rows as text, from memory; ``None`` when it is not a readable
    table (the validation report then says why, in words)."""
    suffix = Path(upload.name).suffix.lower()
    data = io.BytesIO(upload.getvalue())
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(data)
            batch = next(pf.iter_batches(batch_size=n), None)
            frame = batch.to_pandas() if batch is not None else pf.schema_arrow.empty_table().to_pandas()
        elif suffix == ".xlsx":
            frame = pd.read_excel(data, dtype=str, nrows=n, engine="openpyxl")
        elif suffix == ".csv":
            frame = pd.read_csv(data, dtype=str, nrows=n, keep_default_na=False, encoding="utf-8-sig")
        else:
            return None
    except Exception:
        return None
    frame = frame.astype("string").fillna("")
    return Head([str(c) for c in frame.columns], frame)


def is_native(headers: Sequence[str]) -> bool:
    """True when the headers already make one of the three native files (the core's recognition rule)."""
    cols = {ingest.normalize_header(h) for h in headers}
    return bool(
        cols & {"instrument", "assessed_on", "session_date", "patient_id"}
        or any(ingest.ITEM_COLUMN_RE.match(c) for c in cols)
    )


def file_key(upload: Upload) -> str:
    """Stable per upload: keys this file's widgets."""
    return hashlib.sha1(f"{upload.file_id}|{upload.name}".encode()).hexdigest()[:10]


# ---------------------------------------------------------------------------------------- saved mappings


def saved_mappings(path: str) -> list[tuple[str, mp.Mapping]]:
    try:
        with db.reader(path) as con:
            return list(mp.saved(con))
    except Exception:  # no database yet, or it is busy: nothing saved can be offered
        logging.getLogger("kapui").warning("saved mappings could not be read", exc_info=True)
        return []


def matching_mapping(path: str, headers: list[str]) -> str | None:
    """The name of the saved mapping made for exactly these headers, if any."""
    try:
        with db.reader(path) as con:
            found = mp.for_headers(con, headers)
    except Exception:
        logging.getLogger("kapui").warning("saved mappings could not be read", exc_info=True)
        return None
    return found[0] if found else None


def save_mapping(path: str, name: str, mapping: mp.Mapping) -> None:
    with db.session(path) as con:
        mp.save(con, name, mapping)


# ------------------------------------------------------------------------------------------------ editor


def _spec(mapping: mp.Mapping) -> dict[str, Any]:
    """The mapping's JSON shape (the documented, stable form) as a dict."""
    return dict(json.loads(mapping.to_json()))


def _targets(kind: str) -> tuple[str, ...]:
    return tuple(mp.TARGETS[kind])


def _scale_targets(inst: reg.Instrument, layout: str) -> list[str]:
    """A scale's own columns in a wide or REDCap mapping (REDCap gives a scale's date in ``dates``)."""
    return [t for t in mp.scale_targets(inst.code) if not (layout == "redcap" and t == "assessed_on")]


def _guess(target: str, value: str) -> str | None:
    """The contract value a source value plainly means (``phq9`` → PHQ-9, ``prep`` → preparation)."""
    if target == "instrument":
        found = reg.lookup(value)
        if found is None:  # "PHQ9 Depression": the first word may name the scale
            first = value.replace("_", " ").split(" ")[0] if value else ""
            found = reg.lookup(first) if first else None
        return found.code if found else None
    if target == "phase":
        return ingest.PHASE_ALIASES.get(value.strip().lower())
    if target == "route":
        return ingest.ROUTE_ALIASES.get(value.strip().lower())
    return None


def _column_picker(
    label: str, headers: list[str], chosen: str | None, key: str, help: str | None = None
) -> str | None:
    options = [NOT_IN_FILE, *headers]
    index = options.index(chosen) if chosen in headers else 0
    picked = st.selectbox(label, options, index=index, key=key, help=help)
    return None if picked == NOT_IN_FILE else str(picked)


def _pickers(
    targets: Sequence[str], headers: list[str], chosen: dict[str, Any], prefix: str, per_row: int = 3
) -> dict[str, str]:
    out: dict[str, str] = {}
    for start in range(0, len(targets), per_row):
        row = targets[start : start + per_row]
        for col, target in zip(st.columns(per_row), row, strict=False):
            with col:
                picked = _column_picker(target, headers, chosen.get(target), f"{prefix}_col_{target}")
            if picked is not None:
                out[target] = picked
    return out


def _value_map(target: str, values: list[str], current: dict[str, str], prefix: str) -> dict[str, str]:
    """One selectbox per distinct source value of a mapped column: source value → contract value."""
    options = [AS_WRITTEN, *CONTRACT_VALUES[target]]
    shown = values[:MAX_VALUE_CHOICES]
    out: dict[str, str] = {}
    st.markdown(f"**Values of {target}** (the file's value → the value loaded)")
    if len(values) > len(shown):
        st.caption(
            f"The first {len(shown)} of {len(values):,} distinct values are listed; the others load as "
            "written (and are checked like any other)."
        )
    for start in range(0, len(shown), 3):
        for col, value in zip(st.columns(3), shown[start : start + 3], strict=False):
            preset = current.get(value) or _guess(target, value)
            index = options.index(preset) if preset in options else 0
            with col:
                key = f"{prefix}_val_{target}_{hashlib.sha1(value.encode()).hexdigest()[:8]}"
                picked = st.selectbox(kapui.md_escape(value), options, index=index, key=key)
            if picked != AS_WRITTEN and picked != value:
                out[value] = str(picked)
    return out


def _events_map(values: list[str], current: dict[str, str], prefix: str) -> dict[str, str]:
    """REDCap: each ``redcap_event_name`` → a phase."""
    options = [NO_PHASE, *CONTRACT_VALUES["phase"]]
    out: dict[str, str] = {}
    st.markdown("**Events → phase**")
    st.caption(
        "Give every event its phase, or none: with no event mapped, each score's phase is derived from the "
        "dosing dates; an event left out of a partial table is an error naming its rows."
    )
    for start in range(0, len(values[:MAX_VALUE_CHOICES]), 3):
        for col, value in zip(st.columns(3), values[start : start + 3], strict=False):
            preset = current.get(value)
            index = options.index(preset) if preset in options else 0
            with col:
                key = f"{prefix}_event_{hashlib.sha1(value.encode()).hexdigest()[:8]}"
                picked = st.selectbox(kapui.md_escape(value), options, index=index, key=key)
            if picked != NO_PHASE:
                out[value] = str(picked)
    return out


def is_redcap(headers: Sequence[str]) -> bool:
    """A REDCap longitudinal export: ``record_id`` and ``redcap_event_name``."""
    names = {h.strip().lower() for h in headers}
    return {redcap.RECORD_ID, redcap.EVENT} <= names


def editor(upload: Upload, head: Head, path: str) -> mp.Mapping | None:
    """Draw the mapping editor for one upload; returns the mapping its widgets describe (``None`` while
    the mapping cannot be built, with the reason shown in words)."""
    fk = file_key(upload)
    headers = head.headers
    samples = head.samples()
    saved = dict(saved_mappings(path))
    match = matching_mapping(path, headers)
    if match is not None:
        st.info(
            f"The saved mapping “{kapui.md_escape(match)}” was made for these headers: it is chosen below. "
            "Check the preview, then validate and commit as usual."
        )
    starts = [SUGGESTED, *saved]
    start = st.selectbox(
        "Start from",
        starts,
        index=starts.index(match) if match in saved else 0,
        key=f"map_{fk}_start",
        help="A saved mapping, or the matches suggested from the file's headers and values.",
    )
    if start in saved:
        spec = _spec(saved[start])
    elif is_redcap(headers):  # REDCap's own field names: the redcap layout reads them by default
        spec = {"kind": "scores", "layout": "redcap", "columns": {}}
    else:
        spec = _spec(mp.suggest(headers, samples))
    c1, c2 = st.columns([1, 2])
    kind = c1.selectbox(
        "Kind of file",
        KINDS,
        index=KINDS.index(spec.get("kind", "scores")) if spec.get("kind") in KINDS else 2,
        key=f"map_{fk}_{start}_kind",
    )
    if kind != spec.get("kind"):
        spec = _spec(mp.suggest(headers, samples, kind))
    layouts = list(LAYOUTS) if kind == "scores" else ["long"]
    layout = c2.radio(
        "Layout",
        layouts,
        index=layouts.index(spec.get("layout")) if spec.get("layout") in layouts else 0,
        format_func=LAYOUTS.get,
        key=f"map_{fk}_{start}_{kind}_layout",
        horizontal=True,
    )
    prefix = f"map_{fk}_{start}_{kind}_{layout}"
    columns: dict[str, Any] = dict(spec.get("columns") or {})
    values: dict[str, dict[str, str]] = {k: dict(v) for k, v in (spec.get("values") or {}).items()}
    out: dict[str, Any] = {"kind": kind, "layout": layout}

    st.markdown("**Columns** (the product's column ← the file's column)")
    if layout == "long":
        targets = _targets(kind)
        main = [t for t in targets if not ingest.ITEM_COLUMN_RE.match(t)]
        picked = _pickers(main, headers, columns, prefix)
        items = [t for t in targets if ingest.ITEM_COLUMN_RE.match(t)]
        if items:
            with st.expander("Item columns (item_1 … item_N)", expanded=any(t in columns for t in items)):
                picked |= _pickers(items, headers, columns, prefix, per_row=4)
        out["columns"] = picked
    else:
        common = ["patient_id", "event"] if layout == "redcap" else list(mp.ROW_TARGETS)
        if layout == "redcap":  # REDCap's own field names unless the mapping says otherwise
            for target, field_name in (("patient_id", "record_id"), ("event", "redcap_event_name")):
                if target not in columns:
                    columns[target] = next((h for h in headers if h.strip().lower() == field_name), "")
        picked = _pickers(common, headers, columns, prefix)
        out["columns"] = picked
        scales_spec: dict[str, dict[str, str]] = dict(spec.get("scales") or {})
        dates_spec: dict[str, str] = dict(spec.get("dates") or {})
        if (
            layout == "redcap"
        ):  # what the export's own field names give (phq9_1 …, phq9_date), then the spec's
            defaults = redcap.scale_fields(
                mp.Mapping.from_json('{"kind": "scores", "layout": "redcap"}'), headers
            )
            for code, fields in defaults.items():
                scales_spec[code] = {t: f for t, f in fields.items() if t != "assessed_on"} | scales_spec.get(
                    code, {}
                )
                if "assessed_on" in fields:
                    dates_spec.setdefault(code, fields["assessed_on"])
        scales: dict[str, dict[str, str]] = {}
        dates: dict[str, str] = {}
        for inst in reg.INSTRUMENTS:
            chosen = dict(scales_spec.get(inst.code) or {})
            with st.expander(f"{inst.code} columns", expanded=bool(chosen)):
                if layout == "redcap":
                    date = _column_picker(
                        f"{inst.code} date field",
                        headers,
                        dates_spec.get(inst.code),
                        f"{prefix}_date_{inst.key}",
                    )
                    if date is not None:
                        dates[inst.code] = date
                targets = _scale_targets(inst, layout)
                got = _pickers(targets, headers, chosen, f"{prefix}_{inst.key}", per_row=4)
            if got:
                scales[inst.code] = got
        out["scales"] = scales
        if layout == "redcap":
            out["dates"] = dates
            event_col = picked.get("event")
            if event_col is not None:
                out["events"] = _events_map(head.distinct(event_col), dict(spec.get("events") or {}), prefix)
            if st.checkbox(
                "The record ids are already pseudonymous",
                value=bool(spec.get("ids_are_pseudonymous")),
                key=f"{prefix}_pseudonymous",
                help="Off (the default): each REDCap record_id is replaced by a keyed hash before it is "
                "stored.",
            ):
                out["ids_are_pseudonymous"] = True

    value_maps: dict[str, dict[str, str]] = {}
    for target in CONTRACT_VALUES:
        source = out["columns"].get(target)
        if source is None or ingest.identifier_kind(source) is not None:
            continue
        got = _value_map(target, head.distinct(source), values.get(target, {}), prefix)
        if got:
            value_maps[target] = got
    out["values"] = value_maps
    date_format = st.text_input(
        "Date format",
        value=str(spec.get("date_format") or ""),
        key=f"{prefix}_date_format",
        placeholder="empty: ISO dates such as 2025-06-01",
        help="How the file writes its dates, in Python's strptime codes: %d/%m/%Y is 30/05/2025, "
        "%m/%d/%Y is 05/30/2025. Empty: ISO dates (2025-05-30, or a date-time with its offset).",
    )
    if date_format.strip():
        out["date_format"] = date_format.strip()
    # The patient_id and REDCap event columns may have any header (``redcap_event_name`` holds "name"):
    # their values are checked as pseudonymous IDs and event names. Any other identifier-like column is not.
    exempt = {out["columns"].get("patient_id"), out["columns"].get("event")}
    sources = [c for t, c in out["columns"].items() if c not in exempt]
    sources += list(out.get("dates", {}).values())
    sources += [c for scale in out.get("scales", {}).values() for c in scale.values()]
    identifiers = [c for c in dict.fromkeys(sources) if ingest.identifier_kind(c) is not None]
    if identifiers:
        st.warning(
            "A column that looks like a direct identifier cannot be mapped (data must arrive anonymized): "
            + kapui.md_escape(", ".join(identifiers))
        )
        return None
    try:
        return mp.Mapping.from_json(json.dumps(out))
    except mp.MappingError as exc:
        st.warning(f"This mapping cannot be used yet: {kapui.md_escape(str(exc))}")
        return None


def preview(upload: Upload, mapping: mp.Mapping, n: int = PREVIEW_ROWS) -> pd.DataFrame | str:
    """The first ``n`` rows as the mapping reads them (contract columns, text), or why it cannot, in words.

    The upload is written to a private temporary folder only while it is read, then deleted."""
    folder = Path(tempfile.mkdtemp(prefix="kap-import-"))
    try:
        target = folder / (Path(upload.name).name or "upload")
        target.write_bytes(upload.getvalue())
        frame = mp.preview(target, mapping, n=n).rename(columns=PREVIEW_NAMES)
        if "refused by the mapping" in frame.columns and not frame["refused by the mapping"].notna().any():
            frame = frame.drop(columns=["refused by the mapping"])
    except mp.MappingError as exc:
        return str(exc)
    except Exception:
        logging.getLogger("kapui").exception("mapping preview failed")
        return "the file cannot be read through this mapping; check the kind, the layout and the columns"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return frame.astype("string").fillna("")


def mapping_step(upload: Upload, head: Head, path: str) -> mp.Mapping | None:
    """The whole mapping step for one upload: editor, live preview, "Save mapping as…"."""
    fk = file_key(upload)
    mapping = editor(upload, head, path)
    if mapping is None:
        return None
    st.markdown("**Preview** (the first rows as they will be checked)")
    shown = preview(upload, mapping)
    if isinstance(shown, str):
        st.warning(f"No preview: {kapui.md_escape(shown)}")
    else:
        st.dataframe(shown, hide_index=True, width="stretch")
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    name = c1.text_input(
        "Save mapping as…",
        key=f"map_{fk}_name",
        placeholder="e.g. clinic EHR monthly export",
        help="Saved in the database: when a file with the same headers is uploaded again, this mapping is "
        "chosen for it (and `python -m kapdata load FILE --mapping NAME.json` can use its JSON).",
    )
    if c2.button("Save mapping", key=f"map_{fk}_save", disabled=not name.strip()):
        try:
            save_mapping(path, name.strip(), mapping)
        except mp.MappingError as exc:
            st.session_state[_SAVED_NOTE] = (fk, False, f"Not saved: {exc}")
        except Exception as exc:
            logging.getLogger("kapui").exception("saving a mapping failed")
            st.session_state[_SAVED_NOTE] = (fk, False, f"Not saved. {db.explain(exc, path)}")
        else:
            st.session_state[_SAVED_NOTE] = (
                fk,
                True,
                f"Saved as “{name.strip()}”: it is offered again when a file with these headers comes back.",
            )
    note = st.session_state.get(_SAVED_NOTE)
    if note and note[0] == fk:
        (st.success if note[1] else st.error)(kapui.md_escape(note[2]))
    st.download_button(
        "Download this mapping (JSON)",
        mapping.to_json().encode(),
        file_name=f"{Path(upload.name).stem}.mapping.json",
        mime="application/json",
        key=f"map_{fk}_download",
        help="For the command line: python -m kapdata load FILE --mapping this.json",
    )
    return mapping


def template_downloads() -> None:
    """Download buttons for the three native files' templates (header row and an example row)."""
    templates = ingest.templates()
    cols = st.columns(max(len(templates), 1))
    for col, (name, content) in zip(cols, templates.items(), strict=False):
        file_name = name if name.endswith(".csv") else f"{name}.csv"
        col.download_button(
            f"Template: {file_name}", content, file_name=file_name, mime="text/csv", key=f"template_{name}"
        )
