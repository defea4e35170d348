"""Sources that are not the three native files: FHIR R4 (:mod:`kapdata.fhir`), REDCap and any spreadsheet
through a column mapping (:mod:`kapdata.ingest.mapping`). Each becomes parts of converted rows, staged and
validated like a native file's (README, "One pipeline")."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from kapdata.ingest.contract import Kind, SourceFile
from kapdata.ingest.mapping import Mapping, MappingError
from kapdata.ingest.readers import FileError, fingerprint

if TYPE_CHECKING:
    import pyarrow as pa

FHIR_SUFFIXES = (".json", ".ndjson")
#: meta key of the per-database secret that pseudonymises FHIR ids and REDCap record ids.
KEY_META = "pseudonym_key"


@dataclass
class StagePart:
    """One staged table: its kind, rows, the name reports use and the sha256 of the file it came from."""

    kind: Kind
    table: pa.Table
    name: str
    sha256: str
    label: str = ""  # non-empty: one of several parts of one file of the same kind (a scale)


@dataclass
class Converted:
    parts: list[StagePart] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)


def is_converted(src: SourceFile) -> bool:
    """Whether ``src`` goes through a converter (a mapping, or FHIR by its suffix or a folder)."""
    return src.mapping is not None or src.path.is_dir() or src.path.suffix.lower() in FHIR_SUFFIXES


def needs_key(src: SourceFile, fhir_ids_are_pseudonymous: bool) -> bool:
    if src.mapping is not None:
        return src.mapping.layout == "redcap" and not src.mapping.ids_are_pseudonymous
    return not fhir_ids_are_pseudonymous


def read_key(con: duckdb.DuckDBPyConnection) -> bytes | None:
    rows = con.execute("SELECT value FROM meta WHERE key = ?", [KEY_META]).fetchall()
    return bytes.fromhex(rows[0][0]) if rows else None


def pseudonym_key(con: duckdb.DuckDBPyConnection) -> bytes:
    """The database's pseudonym key, created on first use (32 random bytes, kept in ``meta``): the same FHIR
    id or REDCap record always maps to the same patient_id in this database, so next month's export links
    up; another database gives other IDs."""
    key = read_key(con)
    if key is None:
        key = secrets.token_bytes(32)
        con.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT DO NOTHING", [KEY_META, key.hex()])
        key = read_key(con) or key
    return key


def _sha(path: Path) -> str:
    return fingerprint(path)[0] if path.is_file() else ""


def convert(src: SourceFile, *, key: bytes | None, fhir_ids_are_pseudonymous: bool = False) -> Converted:
    """The source as staged parts. Raises :class:`FileError` with the reason in words when the whole source
    is refused (a mapping that does not fit, an unreadable file, a FHIR version other than R4)."""
    if src.mapping is not None:
        return _mapped(src, src.mapping, key)
    return _fhir(src, key, fhir_ids_are_pseudonymous)


def _mapped(src: SourceFile, mapping: Mapping, key: bytes | None) -> Converted:
    from kapdata.ingest import mapping as mp

    if src.path.is_dir():
        raise FileError("is a folder: a mapping reads one file (CSV, xlsx or Parquet)")
    try:
        parts, notes = mp.convert(src, mapping, key=key)
    except MappingError as exc:
        raise FileError(str(exc)) from None
    sha = _sha(src.path)
    several = len(parts) > 1
    out = Converted(infos=list(notes))
    for part in parts:
        if part.table.num_rows == 0:
            continue
        name = f"{src.name} ({part.label})" if several and part.label else src.name
        out.parts.append(StagePart(part.kind, part.table, name, sha, part.label if several else ""))
    if not out.parts:
        raise FileError("the mapping finds no rows to load in this file")
    return out


def skipped_line(skipped: dict[str, int], shown: int = 8) -> str:
    """One report line for the records a source held that this product does not load (not errors): the
    total, then the most frequent kinds with their counts."""
    ranked = sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0]))
    parts = [f"{what} ×{n:,}" for what, n in ranked[:shown]]
    if len(ranked) > shown:
        parts.append(f"and {len(ranked) - shown} more kinds")
    total = sum(skipped.values())
    return f"{total:,} record(s) skipped (not loaded, not an error): " + ", ".join(parts)


def _fhir(src: SourceFile, key: bytes | None, ids_are_pseudonymous: bool) -> Converted:
    import pyarrow.compute as pc

    from kapdata import fhir

    if not src.path.exists():
        raise FileError("file not found")
    try:
        found = fhir.read_fhir(src.path, key=key, ids_are_pseudonymous=ids_are_pseudonymous)
    except fhir.FhirError as exc:
        raise FileError(str(exc)) from None
    out = Converted(infos=list(found.notes))
    if found.skipped:
        out.infos.append(skipped_line(found.skipped))
    folder = src.path if src.path.is_dir() else None
    for conv in found.converted:
        table = conv.table
        if table.num_rows == 0:
            continue
        if folder is not None and "_kap_source" in table.column_names:
            # A folder: each file's rows are their own part (row numbers are that file's lines/entries).
            sources = table.column("_kap_source")
            for name in sorted({s for s in sources.to_pylist() if s is not None}):
                rows = table.filter(pc.equal(sources, name))
                inner = folder.parent / name
                shown = src.name + name[len(folder.name) :] if name.startswith(folder.name) else name
                out.parts.append(StagePart(conv.kind, rows, shown, _sha(inner)))
        else:
            out.parts.append(StagePart(conv.kind, table, src.name, _sha(src.path)))
    if not out.parts:
        raise FileError(
            "nothing to load: no Patient, ketamine Procedure/MedicationAdministration, or PHQ-9, GAD-7 or "
            "PCL-5 Observation/QuestionnaireResponse found"
            + (f" ({'; '.join(out.infos)})" if out.infos else "")
        )
    return out


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str) -> str:
    """A part's name as a file name (``visits.csv (PHQ-9)`` → ``visits.csv_PHQ-9``)."""
    return _UNSAFE.sub("_", name).strip("_.") or "rows"
