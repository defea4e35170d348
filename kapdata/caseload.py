"""What a clinician records on the caseload: acknowledging a flag, discharging (and re-admitting) a patient.

- **Acknowledge** a flag raised by a questionnaire (``safety``: PHQ-9 item 9 above 0; ``deterioration``:
  reliable deterioration at the latest score): who (the signed-in account or a staff code), when, and a
  note. The row keeps ``flag_on``, the date of the questionnaire that raised the flag. The patient keeps the
  flag, marked acknowledged, and ranks after the unacknowledged flags of the same kind; a newer
  questionnaire that raises the flag again (its date is after ``flag_on``) un-acknowledges it, while one
  that does not answer the safety item leaves both the flag and the acknowledgement standing.
- **Discharge** a patient: who, when, a note. Discharged patients leave the caseload (the page shows them on
  request, last) and stay in every outcome, report and export. **Re-admit** undoes it.

Neither is import data: undoing an import batch never touches them. Each write is one short read-write
transaction (:func:`kapdata.db.session`), so the page's caches, keyed on the database file's fingerprint,
see it on the next rerun.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import re
from dataclasses import dataclass

import duckdb

from kapdata import db, export
from kapdata import patient as pt

#: A staff code: letters, digits and . _ - (up to 32). Not a patient identifier, not a name on its own.
STAFF_CODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
NOTE_MAX = 500
FLAG_LABELS: dict[str, str] = {"safety": "safety", "deterioration": "reliable deterioration"}


class CaseloadError(ValueError):
    """A request that cannot be recorded; the message is safe to show to the user."""


@dataclass(frozen=True)
class Acknowledgement:
    patient_id: str
    flag: str
    flag_on: dt.date
    acknowledged_by: str
    acknowledged_at: dt.datetime
    note: str | None


def check_staff_code(code: str | None) -> str:
    text = (code or "").strip()
    if not STAFF_CODE_RE.fullmatch(text):
        raise CaseloadError(
            "give your staff code: 1 to 32 letters, digits, dots, hyphens or underscores (no spaces)"
        )
    return text


def _note(note: str | None) -> str | None:
    text = (note or "").strip()
    if len(text) > NOTE_MAX:
        raise CaseloadError(f"the note is longer than {NOTE_MAX} characters")
    return text or None


def _exists(path: str | os.PathLike[str] | None) -> None:
    if not db.db_path(path).exists():
        raise CaseloadError(f"no database at {db.db_path(path)}")


def acknowledge(
    path: str | os.PathLike[str] | None,
    patient_id: str,
    flag: str,
    by: str,
    note: str | None = None,
    *,
    today: dt.date | None = None,
    now: dt.datetime | None = None,
) -> Acknowledgement:
    """Acknowledge a patient's standing ``safety`` or ``deterioration`` flag (as of ``today``)."""
    if flag not in pt.ACK_FLAGS:
        raise CaseloadError(f"unknown flag {flag!r}: one of {', '.join(pt.ACK_FLAGS)}")
    who, text = check_staff_code(by), _note(note)
    _exists(path)
    with db.session(path) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            row = pt.status(con, patient_id, today)
            if row is None:
                raise CaseloadError(f"no patient with the ID {patient_id!r}")
            flag_on = row["safety_on"] if flag == "safety" else row["deterioration_on"]
            raised = row["flag_safety"] if flag == "safety" else row["flag_deterioration"]
            if not raised or flag_on is None:
                raise CaseloadError(f"patient {patient_id} has no {FLAG_LABELS[flag]} flag to acknowledge")
            stamp = (now or dt.datetime.now()).replace(microsecond=0)
            con.execute(
                "INSERT INTO acknowledgements VALUES (?, ?, ?, ?, ?, ?)",
                [patient_id, flag, flag_on, who, stamp, text],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return Acknowledgement(patient_id, flag, flag_on, who, stamp, text)


def discharge(
    path: str | os.PathLike[str] | None,
    patient_id: str,
    by: str,
    note: str | None = None,
    *,
    now: dt.datetime | None = None,
) -> None:
    """Mark a patient discharged (again: the new who / when / note replace the old)."""
    who, text = check_staff_code(by), _note(note)
    _exists(path)
    with db.session(path) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            known = con.execute("SELECT count(*) FROM patients WHERE patient_id = ?", [patient_id]).fetchone()
            if not known or not known[0]:
                raise CaseloadError(f"no patient with the ID {patient_id!r}")
            stamp = (now or dt.datetime.now()).replace(microsecond=0)
            con.execute(
                "INSERT OR REPLACE INTO discharges VALUES (?, ?, ?, ?)", [patient_id, who, stamp, text]
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise


def readmit(path: str | os.PathLike[str] | None, patient_id: str) -> bool:
    """Undo a discharge: the patient is back on the caseload. False if they were not discharged."""
    _exists(path)
    with db.session(path) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            row = con.execute(
                "DELETE FROM discharges WHERE patient_id = ? RETURNING patient_id", [patient_id]
            ).fetchall()
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return bool(row)


# --- the caseload as a file ------------------------------------------------------------------------------

#: The ``caseload`` command's file: these columns, in this order (caseload order; discharged patients last).
CSV_COLUMNS: dict[str, str] = {
    "patient_id": "patient_id",
    "current_phase": "phase",
    "priority": "priority",
    "safety": "flag_safety",
    "safety_item9": "safety_item9",
    "safety_on": "safety_on",
    "reliable_deterioration": "flag_deterioration",
    "deteriorated_scales": "deteriorated_scales",
    "overdue": "flag_overdue",
    "no_baseline": "flag_no_baseline",
    "acknowledged": "acknowledged",
    "acknowledged_flag": "ack_flag",
    "acknowledged_by": "acknowledged_by",
    "acknowledged_at": "acknowledged_at",
    "acknowledged_note": "acknowledged_note",
    "discharged": "discharged",
    "discharged_by": "discharged_by",
    "discharged_at": "discharged_at",
    "discharge_note": "discharge_note",
    "days_in_phase": "days_in_phase",
    "n_sessions": "n_sessions",
    "days_since_score": "days_since_score",
    **{c: c for key in pt.SCALE_KEYS.values() for c in (key, f"{key}_change")},
    "clinic": "clinic",
    "provider": "provider",
    "route": "route",
}
_BOOLEAN = ("safety", "reliable_deterioration", "overdue", "no_baseline", "acknowledged", "discharged")
_DATES = ("safety_on",)
_STAMPS = ("acknowledged_at", "discharged_at")


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value) or str(value) in ("NaT", "<NA>")


def _cell(column: str, value: object) -> str:
    if _missing(value):
        return ""
    if column in _BOOLEAN:
        return "true" if bool(value) else "false"
    if column in _DATES:
        return f"{value:%Y-%m-%d}"  # type: ignore[str-format]
    if column in _STAMPS:
        return f"{value:%Y-%m-%d %H:%M:%S}"  # type: ignore[str-format]
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value)
    # Formula injection: text a spreadsheet would run (= + - @, tab, CR) gets a leading apostrophe.
    return "'" + text if text.startswith(export.FORMULA_PREFIXES) else text


def write_caseload_csv(
    con: duckdb.DuckDBPyConnection, out: str | os.PathLike[str], today: dt.date | None = None
) -> int:
    """Write every patient's caseload row (discharged included, after the others) as CSV; the row count."""
    frame = pt.caseload(con, None, today)
    rows = [
        [_cell(name, record[source]) for name, source in CSV_COLUMNS.items()]
        for record in frame.to_dict(orient="records")
    ]
    with open(out, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(list(CSV_COLUMNS))
        writer.writerows(rows)
    return len(rows)
