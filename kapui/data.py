"""Streamlit glue for the data manager's pages: import (upload → validate → commit), history and undo,
settings, definitions.

The import runs through :func:`kapdata.ingest.load_files`, the same implementation as ``python -m kapdata
load``: uploaded files are written to a private temporary folder under their own names, a dry run gives
the validation report (nothing changes), and the commit is one transaction (all or nothing). After every
write — a commit, an undo, a settings change — :func:`clear_caches` drops every cached query so each page
shows the change at once.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pandas as pd
import streamlit as st

from kapdata import csvsafe, db, ingest
from kapdata import settings as ks

UPLOAD_TYPES: tuple[str, ...] = ("csv", "parquet", "xlsx", "json", "ndjson")  # .json/.ndjson: FHIR R4
PREVIEW_ROWS = 5
REPORT_COLUMNS: tuple[str, ...] = ("file", "row", "column", "value", "reason", "severity")

_VALIDATION = "import_validation"  # session state: the staged upload and its dry-run report
_OUTCOME = "import_outcome"  # session state: the last commit's outcome, shown until the next upload
_UPLOADER = "import_uploader_generation"  # bumped after a commit so the uploader starts empty
UNDO_CHOICE = "undo_batch"  # the key of the page's batch selector
_UNDO_RESET = "undo_batch_reset"  # set by a commit or an undo: the selector starts again from the newest
OPTIONS_RESET = "import_options_reset"  # set by a commit: the load options start again from their defaults


class Upload(Protocol):
    """What the page gets from ``st.file_uploader`` (an ``UploadedFile``)."""

    name: str
    file_id: str
    size: int

    def getvalue(self) -> bytes: ...


def clear_caches() -> None:
    """Every page's cached numbers are stale after a write: drop them all (and clinic outcomes' shared
    views of them)."""
    from kapui import clinic

    st.cache_data.clear()
    clinic.clear_views()


def max_upload_mb() -> int:
    """``server.maxUploadSize`` from ``.streamlit/config.toml`` (Streamlit's default is 200 MB)."""
    value = st.get_option("server.maxUploadSize")
    return int(value) if value else 200


# ---------------------------------------------------------------------------------------- cached reads


@st.cache_data(show_spinner=False, max_entries=8)
def current_settings(path: str, version: tuple[int, int]) -> ks.Settings:
    with db.reader(path) as con:
        return ks.read(con)


_BATCH_COLUMNS: dict[str, str] = {
    "batch_id": "batch",
    "loaded_at": "loaded at",
    "file_name": "file",
    "kind": "kind",
    "rows_read": "rows read",
    "rows_loaded": "loaded",
    "rows_already_present": "already present",
    "rows_rejected": "rejected",
    "new_patients": "new patients",
    "on_error": "on error",
    "sha256": "sha256",
    "demo": "demo data",
    "undone_at": "undone_at",
}


@st.cache_data(show_spinner=False, max_entries=8)
def batches(path: str, version: tuple[int, int]) -> pd.DataFrame:
    """Import history, newest first, with the column names the page shows."""
    with db.reader(path) as con:
        rows = ingest.list_batches(con)
    frame = pd.DataFrame(rows, columns=list(_BATCH_COLUMNS))
    frame["status"] = [
        "active" if pd.isna(u) else f"undone {pd.Timestamp(u):%Y-%m-%d %H:%M}" for u in frame["undone_at"]
    ]
    frame = frame.drop(columns=["undone_at"]).rename(columns=_BATCH_COLUMNS)
    order = ["batch", "loaded at", "file", "kind", "status"]
    frame = frame[order + [c for c in frame.columns if c not in order]]
    return frame.iloc[::-1].reset_index(drop=True)


def undo_choices(history: pd.DataFrame) -> dict[int, str]:
    """Active batches that can be undone: batch id → what the confirmation names."""
    active = history[history["status"] == "active"]
    return {
        int(r["batch"]): f"batch {r['batch']} · {r['file']} ({r['kind']}, {r['loaded']:,} rows loaded "
        f"{pd.Timestamp(r['loaded at']):%Y-%m-%d %H:%M})"
        for _, r in active.iterrows()
    }


def select_undo_choice(choices: Mapping[int, str]) -> None:
    """Call before the batch selector is drawn: after a commit or an undo, or when the chosen batch is gone,
    choose the newest active batch *explicitly*.

    Only dropping the selector's value (as this once did) leaves the browser showing the batch it had
    chosen (the widget keeps its key) while the server falls back to the first choice, so the confirmation
    named another batch than the box. A value set before the widget is drawn is sent to the browser too.
    """
    reset = st.session_state.pop(_UNDO_RESET, False)
    if choices and (reset or st.session_state.get(UNDO_CHOICE) not in choices):
        st.session_state[UNDO_CHOICE] = next(iter(choices))


def why(exc: Exception) -> str:
    """Our own refusals say what is wrong in their own words; anything else is explained, not quoted."""
    if isinstance(exc, ingest.UndoError):
        return str(exc).capitalize() + "."
    logging.getLogger("kapui").error("operation failed", exc_info=exc)
    return db.explain(exc)


def undo(path: str, batch_id: int) -> str:
    """Undo one batch (one transaction); returns what was removed, in words."""
    from kapui import auth

    auth.principal().require("undo", "undo an import")
    counts = ingest.undo_batch(batch_id, path)
    clear_caches()
    auth.record(path, "undo", f"batch {batch_id}", dict(counts))
    st.session_state[_UNDO_RESET] = True
    kept = counts["patients_kept"] + counts["patients_reset"]
    text = (
        f"Batch {batch_id} undone: {counts['scores']:,} scores, {counts['sessions']:,} sessions and "
        f"{counts['patients']:,} patients removed."
    )
    if kept:
        text += f" {kept:,} patients still used by other batches were set back to unknown attributes."
    return text


# -------------------------------------------------------------------------------------------- settings


def save_settings(
    path: str, general: Mapping[str, object], thresholds: Mapping[str, Mapping[str, object]]
) -> list[ks.Change]:
    """Validate and save (raises ``settings.InvalidSettings``, nothing saved); every page shows the change."""
    from kapui import auth

    auth.principal().require("settings", "change the settings")
    done = ks.update(path, general=general, thresholds=thresholds)
    if done:
        clear_caches()
        auth.record(path, "settings change", "settings", {"changes": [str(c) for c in done]})
    return done


def reset_settings(path: str) -> list[ks.Change]:
    from kapui import auth

    auth.principal().require("settings", "change the settings")
    done = ks.reset(path)
    if done:
        clear_caches()
        auth.record(path, "settings change", "reset", {"changes": [str(c) for c in done]})
    return done


# ---------------------------------------------------------------------------------------------- import


@dataclass
class Validation:
    """Uploaded files staged in a temporary folder and the dry run's report on them."""

    signature: tuple[tuple[str, str, int], ...]
    version: tuple[int, int]
    folder: Path  # deleted as soon as the dry run ends; a commit stages the uploads again
    sources: list[ingest.SourceFile]
    result: ingest.LoadResult | None = None
    failure: str | None = None  # the dry run itself could not run (e.g. the database is busy)
    uploads: list[Upload] = field(default_factory=list)
    previews: list[pd.DataFrame | None] = field(default_factory=list)  # identifier columns left out
    mappings: dict[str, object] = field(default_factory=dict)  # upload file_id -> its column mapping
    options: dict[str, object] = field(default_factory=dict)  # load_files keywords (new_patients, ...)

    @property
    def token(self) -> str:
        """Stable for one set of uploads: keys the widgets that belong to it."""
        return hashlib.sha1(repr(self.signature).encode()).hexdigest()[:12]

    @property
    def errors(self) -> list[ingest.Problem]:
        return self.result.errors if self.result else []

    @property
    def refused(self) -> list[str]:
        """Files refused as a whole (unreadable, unknown kind, missing column, identifier column)."""
        names = {f.file for f in self.result.files if f.refused} if self.result else set()
        return [s.name for s in self.sources if s.name in names]

    @property
    def rows_to_load(self) -> int:
        return sum(f.rows_loaded for f in self.result.files) if self.result else 0

    @property
    def can_commit(self) -> bool:
        """A clean report with something new in it."""
        return self.result is not None and not self.errors and self.rows_to_load > 0

    @property
    def can_quarantine(self) -> bool:
        """Row errors only: the valid rows can load and the rest go to a rejects file."""
        return self.result is not None and bool(self.errors) and not self.refused


@dataclass
class Outcome:
    """What a commit did, kept in the session so it shows after the page reruns."""

    ok: bool
    message: str
    lines: list[str] = field(default_factory=list)
    rejects: list[tuple[str, bytes]] = field(default_factory=list)
    report: pd.DataFrame | None = None


def uploader_key() -> str:
    return f"import_files_{st.session_state.get(_UPLOADER, 0)}"


def last_outcome() -> Outcome | None:
    value = st.session_state.get(_OUTCOME)
    return value if isinstance(value, Outcome) else None


def _forget_validation() -> None:
    old = st.session_state.pop(_VALIDATION, None)
    if isinstance(old, Validation):
        shutil.rmtree(old.folder, ignore_errors=True)


def _safe_preview(src: ingest.SourceFile) -> pd.DataFrame | None:
    """The preview of a staged file without any column that looks like an identifier; None if the file
    cannot be read as a table (the report says why)."""
    try:
        frame = preview_frame(src)
    except Exception:
        return None
    keep = [c for c in frame.columns if ingest.identifier_kind(str(c)) is None]
    return frame[keep]


def _stage(
    files: Sequence[Upload], folder: Path, mappings: Mapping[str, object] | None = None
) -> list[ingest.SourceFile]:
    """Write the uploads to ``folder/<n>/<own name>`` (names kept for the report; no path parts); an
    upload with a column mapping (``mappings[file_id]``, see :mod:`kapui.mapping`) is read through it."""
    sources = []
    for n, f in enumerate(files):
        name = Path(f.name).name or f"upload-{n + 1}"
        target = folder / str(n + 1) / name
        target.parent.mkdir(parents=True)
        target.write_bytes(f.getvalue())
        mapping = (mappings or {}).get(f.file_id)
        sources.append(
            ingest.SourceFile(target, name)
            if mapping is None
            else ingest.SourceFile(target, name, mapping=mapping)
        )
    return sources


def validate_uploads(
    files: Sequence[Upload],
    path: str,
    *,
    mappings: Mapping[str, object] | None = None,
    options: Mapping[str, object] | None = None,
) -> Validation:
    """Stage and dry-run the uploads; reused across reruns until the files, their mappings, the load
    options (``load_files`` keywords such as ``new_patients``) or the database change."""
    mappings, options = dict(mappings or {}), dict(options or {})
    signature = tuple((f.file_id, f.name, f.size) for f in files) + (
        ("mappings", repr(sorted((k, getattr(m, "to_json", m.__repr__)()) for k, m in mappings.items())), 0),
        ("options", repr(sorted(options.items())), 0),
    )
    version = db.file_version(path)
    current = st.session_state.get(_VALIDATION)
    if isinstance(current, Validation) and current.signature == signature and current.version == version:
        return current
    _forget_validation()
    st.session_state.pop(_OUTCOME, None)
    folder = Path(tempfile.mkdtemp(prefix="kap-import-"))
    try:
        sources = _stage(files, folder, mappings)
        validation = Validation(
            signature, version, folder, sources, uploads=list(files), mappings=mappings, options=options
        )
        # Quarantine mode for the dry run: every file is checked against this load's good rows too, so
        # the report and the counts say exactly what either kind of commit would do.
        validation.result = ingest.load_files(
            validation.sources, path, on_error="quarantine", dry_run=True, **options
        )
        validation.previews = [_safe_preview(src) for src in validation.sources]
    except Exception as exc:  # shown on the page; a dry run never changes the database
        logging.getLogger("kapui").exception("dry run failed")
        validation = Validation(
            signature, version, folder, [], uploads=list(files), mappings=mappings, options=options
        )
        validation.failure = db.explain(exc, path)
    finally:
        # The uploads (which may hold what a refused file should never have had) leave the disk now.
        shutil.rmtree(folder, ignore_errors=True)
    st.session_state[_VALIDATION] = validation
    return validation


def counts_frame(v: Validation) -> pd.DataFrame:
    """One row per file: what it was taken for and its row counts."""
    files = v.result.files if v.result else []
    refused = set(v.refused)
    rows = []
    for f in files:
        valid = f.rows_read - f.rows_rejected
        if f.file in refused:
            status = "refused: see the report"
        elif refused:
            status = "waits: the load is refused while another file is"
        elif f.identical_to_batch is not None:
            status = f"already loaded (batch {f.identical_to_batch}): nothing to do"
        elif f.rows_rejected:
            status = f"{f.rows_rejected:,} rows with errors"
        elif f.rows_loaded == 0:
            status = "nothing new"
        else:
            status = "ready"
        rows.append(
            {
                "file": f.file,
                "taken as": f.kind or "—",
                "rows read": f.rows_read,
                "valid": 0 if f.file in refused else valid,
                "rejected": f.rows_read if f.file in refused else f.rows_rejected,
                "already present": f.rows_already_present,
                "new rows": 0 if f.file in refused else f.rows_loaded,
                "patients created (unknown)": f.new_patients,
                "status": status,
            }
        )
    return pd.DataFrame(rows)


def totals(counts: pd.DataFrame) -> dict[str, int]:
    """Headline counts over every file: rows read, valid, rejected, already present, new rows, new patients.

    New patients: the new rows of patients files plus the patients of sessions or scores files who are in
    no patients file (created with unknown attributes).
    """
    names = ("rows read", "valid", "rejected", "already present", "new rows")
    if counts.empty:
        return dict.fromkeys((*names, "new patients"), 0)
    out = {c: int(counts[c].sum()) for c in names}
    from_patient_files = counts.loc[counts["taken as"] == "patients", "new rows"].sum()
    out["new patients"] = int(from_patient_files + counts["patients created (unknown)"].sum())
    return out


def problems_headline(v: Validation) -> str:
    """``3 problem(s) in 3 row(s)`` / ``1 problem(s) in 1 file refused as a whole (4,404 rows)``.

    The rows named are the ones the *Rejected* count adds up: rows with errors in the files that were
    checked, plus every row of a file refused as a whole (a file-level problem is never "1 row").
    """
    result = v.result
    if result is None:
        return "no problems"
    refused = set(v.refused)
    bad_rows = sum(f.rows_rejected for f in result.files if f.file not in refused)
    refused_rows = sum(f.rows_read for f in result.files if f.file in refused)
    parts = []
    if bad_rows or not refused:
        parts.append(f"{bad_rows:,} row(s)")
    if refused:
        what = "file refused as a whole" if len(refused) == 1 else "files refused as a whole"
        rows = f"{refused_rows:,} rows" if refused_rows else "its rows were not read"
        if len(refused) > 1 and not refused_rows:
            rows = "their rows were not read"
        parts.append(f"{len(refused):,} {what} ({rows})")
    return f"{result.error_count:,} problem(s) in " + " and ".join(parts)


def unknown_patients(v: Validation) -> bool:
    """Whether an error is a patient ID that is in neither the database nor this load (new-patients rule)."""
    return any(p.column == "patient_id" and "new patient" in p.reason.lower() for p in v.errors)


def report_frame(result: ingest.LoadResult | None) -> pd.DataFrame:
    """The validation report: file, row, column, value, reason, severity (errors first, in file order)."""
    problems = result.problems if result else []
    rank = {"error": 0, "warning": 1, "info": 2}
    files = list(dict.fromkeys(p.file for p in problems))
    ordered = sorted(problems, key=lambda p: (rank.get(p.severity, 3), files.index(p.file), p.row or 0))
    return pd.DataFrame(
        [
            [p.file, "" if p.row is None else str(p.row), p.column or "", p.value or "", p.reason, p.severity]
            for p in ordered
        ],
        columns=list(REPORT_COLUMNS),
    )


def report_csv(frame: pd.DataFrame) -> bytes:
    """The validation report as CSV; a cell copied from a file (a value) cannot become a formula."""
    return csvsafe.to_csv_bytes(frame)


def preview_frame(src: ingest.SourceFile, n: int = PREVIEW_ROWS) -> pd.DataFrame:
    """The first ``n`` rows as read (every cell as text), indexed by the row numbers the report uses."""
    suffix = src.path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        batch = next(pq.ParquetFile(src.path).iter_batches(batch_size=n), None)
        frame = batch.to_pandas().astype("string") if batch is not None else pd.DataFrame()
        first = 1
    elif suffix == ".xlsx":
        frame = pd.read_excel(src.path, dtype=str, nrows=n, engine="openpyxl")
        first = 2
    else:
        frame = pd.read_csv(src.path, dtype=str, nrows=n, keep_default_na=False, encoding="utf-8-sig")
        first = 2
    frame.index = pd.RangeIndex(first, first + len(frame), name="row")
    return frame


def commit(v: Validation, path: str, *, quarantine: bool, progress: Callable[[float, str], None]) -> Outcome:
    """Load the staged files for real in one transaction; store and return the outcome."""
    n_rows = sum(f.rows_read for f in v.result.files) if v.result else 0
    progress(0.1, f"Validating and loading {n_rows:,} rows from {len(v.sources)} file(s) in one transaction…")
    from kapui import auth

    auth.principal().require("import", "import data")
    folder = Path(tempfile.mkdtemp(prefix="kap-import-"))
    try:
        sources = _stage(v.uploads, folder, v.mappings)
        result = ingest.load_files(
            sources, path, on_error="quarantine" if quarantine else "reject", **v.options
        )
        rejects = _rejects(result)
        files = [
            {"file": s.name, "kind": f.kind, "batch": f.batch_id, "rows_loaded": f.rows_loaded}
            for s, f in zip(sources, result.files, strict=False)
        ]
        try:
            auth.record(path, "import", ", ".join(s.name for s in sources), {"files": files})
        except auth.AuditRequired:
            logging.getLogger("kapui").error("import saved but not audited")
    except ingest.ImportRejected as exc:
        outcome = Outcome(
            False,
            "Import rejected: the database is unchanged. The files no longer pass (the database changed "
            "since they were checked); see the report.",
            report=report_frame(exc.result),
        )
    except Exception as exc:  # load_files rolled back: nothing of this load is in the database
        logging.getLogger("kapui").exception("import failed")
        outcome = Outcome(False, f"Import failed: the database is unchanged. {db.explain(exc, path)}")
    else:
        progress(0.8, "Refreshing every page…")
        clear_caches()
        outcome = Outcome(True, _committed_message(result), _file_lines(result), rejects)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # the staged uploads and any rejects file
    progress(1.0, "Done")
    if outcome.ok:
        st.session_state[_UPLOADER] = st.session_state.get(_UPLOADER, 0) + 1
        st.session_state[_UNDO_RESET] = True  # the undo list starts again from the newest batch
        st.session_state[OPTIONS_RESET] = True  # "create new patients" is never carried to the next load
        _forget_validation()
    st.session_state[_OUTCOME] = outcome
    return outcome


def _committed_message(result: ingest.LoadResult) -> str:
    loaded = sum(f.rows_loaded for f in result.files)
    batches_made = [f.batch_id for f in result.files if f.batch_id is not None]
    if not batches_made:
        text = "Nothing new was loaded."
    elif len(batches_made) == 1:
        text = f"Loaded {loaded:,} rows as batch {batches_made[0]}."
    else:
        text = f"Loaded {loaded:,} rows as batches {', '.join(str(b) for b in batches_made)}."
    rejected = sum(f.rows_rejected for f in result.files)
    if rejected:
        text += f" {rejected:,} rows were quarantined: download them below, correct them and load them again."
    return text


def _file_lines(result: ingest.LoadResult) -> list[str]:
    lines = []
    for f in result.files:
        if f.identical_to_batch is not None:
            lines.append(
                f"{f.file}: identical to batch {f.identical_to_batch}, already loaded; nothing to do."
            )
            continue
        text = (
            f"{f.file}: taken as {f.kind}; {f.rows_read:,} rows read, {f.rows_loaded:,} loaded, "
            f"{f.rows_already_present:,} already present, {f.rows_rejected:,} quarantined"
        )
        if f.new_patients:
            text += f", {f.new_patients:,} new patients with unknown attributes"
        lines.append(text + (f" (batch {f.batch_id})." if f.batch_id is not None else "."))
    return lines


def _rejects(result: ingest.LoadResult) -> list[tuple[str, bytes]]:
    out = []
    for f in result.files:
        if f.rejects_path is not None and f.rejects_path.exists():
            out.append((f"{Path(f.file).stem}.rejects.csv", f.rejects_path.read_bytes()))
    return out
