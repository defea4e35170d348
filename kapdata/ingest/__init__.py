"""Read, validate and load patients, sessions and scores (DESIGN §3), from any source, through one pipeline.

Everything one call loads is one transaction: either every file's good rows are committed, or the
database is left exactly as it was. The modules follow the pipeline:

* :mod:`~kapdata.ingest.contract`: the three files' columns, allowed values, aliases and limits.
* readers, one per format: :mod:`~kapdata.ingest.readers` (the native CSV/TSV, Parquet and xlsx files,
  every cell as text), :mod:`~kapdata.ingest.mapping` (any spreadsheet through a saved column mapping,
  wide or long), :mod:`~kapdata.ingest.redcap` (a REDCap longitudinal export) and :mod:`kapdata.fhir`
  (FHIR R4). Every converter yields, per kind, a table of the contract's columns as text plus the source's
  own row number (``_kap_row``) and optionally a row's refusal (``_kap_error``).
* :mod:`~kapdata.ingest.staging`: each source becomes one staged table (``raw_<n>``) with its row numbers.
* :mod:`~kapdata.ingest.validation`: set-based SQL over the staged rows (rules in
  :mod:`~kapdata.ingest.checks`); every problem names the file, the row as the source shows it, the column,
  the value and the reason (:mod:`~kapdata.ingest.report`).
* :mod:`~kapdata.ingest.commit`: each file's good rows become one batch in ``batches``, which can be undone.
* :mod:`~kapdata.ingest.pipeline`: :func:`load_files` ties it together (checked in a private copy, then
  published in one short transaction; a first load: in a whole copy of the file, renamed over it).
"""

from __future__ import annotations

from kapdata import db
from kapdata.ingest import mapping
from kapdata.ingest.commit import Loader, UndoError, list_batches, undo_batch, undo_with_connection
from kapdata.ingest.contract import (
    AGE_BANDS,
    COLUMNS,
    CONDITIONS,
    DATE_RE,
    EARLIEST_DATE,
    IGNORABLE_COLUMNS,
    ITEM_COLUMN_RE,
    KIND_ORDER,
    MAX_COLUMNS,
    MAX_HEADER_BYTES,
    MAX_PROBLEMS_LISTED,
    MAX_XLSX_BYTES,
    PATIENT_ID_RE,
    PHASE_ALIASES,
    PRORATE_MAX_MISSING,
    PRORATED_SCALES,
    REQUIRED,
    ROUTE_ALIASES,
    ROUTES,
    SEX_ALIASES,
    SEXES,
    SIDE_EFFECTS,
    Kind,
    OnError,
    SourceFile,
    identifier_kind,
    normalize_header,
    templates,
)
from kapdata.ingest.pipeline import STALE_RETRIES, load_files, load_with_connection
from kapdata.ingest.readers import FileError, fingerprint, read_header
from kapdata.ingest.report import FileResult, ImportRejected, LoadResult, Problem

__all__ = [
    "AGE_BANDS",
    "COLUMNS",
    "CONDITIONS",
    "DATE_RE",
    "EARLIEST_DATE",
    "IGNORABLE_COLUMNS",
    "ITEM_COLUMN_RE",
    "KIND_ORDER",
    "MAX_COLUMNS",
    "MAX_HEADER_BYTES",
    "MAX_PROBLEMS_LISTED",
    "MAX_XLSX_BYTES",
    "PATIENT_ID_RE",
    "PHASE_ALIASES",
    "PRORATED_SCALES",
    "PRORATE_MAX_MISSING",
    "REQUIRED",
    "ROUTES",
    "ROUTE_ALIASES",
    "SEXES",
    "SEX_ALIASES",
    "SIDE_EFFECTS",
    "STALE_RETRIES",
    "FileError",
    "FileResult",
    "ImportRejected",
    "Kind",
    "LoadResult",
    "Loader",
    "OnError",
    "Problem",
    "SourceFile",
    "UndoError",
    "db",
    "fingerprint",
    "identifier_kind",
    "list_batches",
    "mapping",
    "load_files",
    "load_with_connection",
    "normalize_header",
    "read_header",
    "templates",
    "undo_batch",
    "undo_with_connection",
]
