"""The data contract: the three files' columns, their allowed values and aliases, the limits, and
what a header that names a direct identifier looks like (README, "Data contract")."""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from kapdata.ingest.mapping import Mapping

Kind = Literal["patients", "sessions", "scores"]
OnError = Literal["reject", "quarantine"]
KIND_ORDER: tuple[Kind, ...] = ("patients", "sessions", "scores")

PATIENT_ID_RE = r"^[A-Za-z0-9_-]{1,64}$"
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
SEXES = ("female", "male", "other", "unknown")
CONDITIONS = ("PTSD", "MDD", "GAD", "other")
ROUTES = ("IV", "IM", "SL", "IN", "oral")
SIDE_EFFECTS = ("nausea", "vomiting", "dizziness", "headache", "hypertension", "anxiety", "sedation", "other")
ROUTE_ALIASES = {
    "iv": "IV",
    "intravenous": "IV",
    "im": "IM",
    "intramuscular": "IM",
    "sl": "SL",
    "sublingual": "SL",
    "in": "IN",
    "intranasal": "IN",
    "nasal": "IN",
    "oral": "oral",
    "po": "oral",
}
SEX_ALIASES = {"female": "female", "f": "female", "male": "male", "m": "male", "other": "other"}
SEX_ALIASES |= {"unknown": "unknown", "u": "unknown"}
PHASE_ALIASES = {
    "preparation": "preparation",
    "prep": "preparation",
    "dosing": "dosing",
    "integration": "integration",
    "follow-up": "follow-up",
    "followup": "follow-up",
    "follow_up": "follow-up",
    "follow up": "follow-up",
}

COLUMNS: dict[Kind, tuple[str, ...]] = {
    "patients": ("patient_id", "clinic", "provider", "age_band", "sex", "primary_condition", "route"),
    "sessions": (
        "patient_id",
        "session_date",
        "route",
        "dose_mg",
        "dose_mg_per_kg",
        "bp_sys_pre",
        "bp_dia_pre",
        "bp_sys_post",
        "bp_dia_post",
        "dissociation",
        "side_effects",
    ),
    "scores": ("patient_id", "instrument", "assessed_on", "total", "phase"),
}
REQUIRED: dict[Kind, tuple[str, ...]] = {
    "patients": ("patient_id",),
    "sessions": ("patient_id", "session_date"),
    "scores": ("patient_id", "instrument", "assessed_on"),
}
ITEM_COLUMN_RE = re.compile(r"^item_?(\d{1,3})$")
_CONTRACT_NAMES = frozenset(c for cols in COLUMNS.values() for c in cols)

#: Missing item answers, PHQ-9 and GAD-7 (the NHS Data Dictionary / NHS Talking Therapies rule; the same
#: rule in Arrieta J, et al. J Clin Psychol 2017, doi:10.1002/jclp.22390: at most two missing answers,
#: each replaced by the mean of the answered items): with at most this many items unanswered, the total
#: is the mean of the answered items times the number of items, rounded to the nearest whole number.
#: Halves round up: the sources searched do not quote the NHS wording on rounding, so halves-up is our
#: reading (README, "Missing item answers"). The score is stored with ``prorated = true`` and NULL in the
#: unanswered positions of ``items``, so a missing PHQ-9 item 9 leaves the safety flag unknown (item 9 is
#: never prorated). PCL-5: the National Center for PTSD's PCL-5 guidance gives no prorating rule, so an
#: incomplete PCL-5 item set is refused; a total alone is accepted as always.
PRORATED_SCALES: tuple[str, ...] = ("PHQ-9", "GAD-7")
PRORATE_MAX_MISSING = 2

#: Limits checked before a file is read (README, "Reliability: limits and guarantees").
MAX_COLUMNS = 100  # the widest contract file has 5 + 20 (PCL-5 items) columns
MAX_HEADER_BYTES = 64 * 1024
MAX_XLSX_BYTES = 10 * 1024 * 1024  # larger workbooks: save the sheet as CSV (read in seconds)
#: The report lists at most this many errors; the rest are counted.
MAX_PROBLEMS_LISTED = 1000
#: Columns that may be present and are not loaded: the two a rejects file adds (so it can be reloaded).
IGNORABLE_COLUMNS: tuple[str, ...] = ("_row", "_errors")
EARLIEST_DATE = dt.date(1900, 1, 1)

#: What a header that looks like a direct identifier holds, by the words in it. A header is split into
#: words (``DateOfBirth`` → date, of, birth; ``pt_name`` → pt, name) and also squashed to its letters and
#: digits (``Patient's Name`` → patientsname); either matching refuses the file.
_IDENTIFIER_WORDS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    # (what, words that must equal a whole word, fragments found anywhere in the squashed header)
    ("a name", ("initials", "initial", "alias", "nickname"), ("name",)),
    ("a birth date", ("dob", "born", "bday"), ("birth", "dob")),
    ("an e-mail address", ("mail",), ("email",)),
    ("a phone number", ("tel", "cell", "fax", "mobile", "phone", "sms", "whatsapp"), ("phone", "mobile")),
    (
        "an address",
        ("addr", "address", "street", "city", "town", "zip", "postcode", "county", "ip"),
        ("address", "street", "postcode", "zipcode", "postal"),
    ),
    (
        "a national identity number",
        ("ssn", "sin", "nhs", "nino", "passport", "licence", "license", "chi"),
        ("ssn", "socialsecurity", "nhsno", "nhsnum", "nationalid", "nationalinsurance", "passport"),
    ),
    (
        "a medical record number",
        ("mrn",),
        ("mrn", "medicalrecord", "hospitalnumber", "hospitalno", "chartnumber", "chartno"),
    ),
    (
        "an insurance number",
        ("medicare", "medicaid", "insurance", "insurer", "policy", "member"),
        ("medicare", "medicaid", "insurance"),
    ),
    (
        "a contact person",
        ("guardian", "kin", "spouse", "parent", "caregiver", "carer", "relative"),
        ("guardian", "emergency", "contact", "nextofkin"),
    ),
)


def identifier_kind(header: str) -> str | None:
    """What a column header looks like if it names a direct identifier (``"a name"``), else None.
    The contract's own columns never do."""
    if normalize_header(header) in _CONTRACT_NAMES:
        return None
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", str(header).strip()).lower()
    words = set(re.findall(r"[a-z]+", spaced))
    squashed = "".join(re.findall(r"[a-z0-9]", spaced))
    for what, whole_words, fragments in _IDENTIFIER_WORDS:
        if words & set(whole_words) or any(f in squashed for f in fragments):
            return what
    return None


DATE_RE = r"^\d{4}-\d{2}-\d{2}([T ]([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?)?$"


def normalize_header(name: str) -> str:
    text = re.sub(r"[\s\-]+", "_", str(name).strip().lower())
    m = ITEM_COLUMN_RE.match(text)
    return f"item_{int(m.group(1))}" if m else text


@dataclass(frozen=True)
class SourceFile:
    """A file to load; ``name`` is what reports call it (an uploaded file's own name). ``mapping``: read it
    through this column mapping (:class:`kapdata.ingest.mapping.Mapping`) instead of as a native file."""

    path: Path
    name: str
    mapping: Mapping | None = field(default=None, compare=False)

    @classmethod
    def of(cls, item: str | os.PathLike[str] | SourceFile) -> SourceFile:
        if isinstance(item, SourceFile):
            return item
        p = Path(item)
        return cls(p, p.name)


#: Example rows of the three native files' templates: synthetic, no identifiers (README, "Data contract").
_TEMPLATE_ROWS: dict[Kind, tuple[tuple[str, ...], ...]] = {
    "patients": (
        ("K00001", "North", "P01", "35-44", "female", "MDD", "IV"),
        ("K00002", "North", "P02", "25-34", "male", "PTSD", "IM"),
    ),
    "sessions": (
        ("K00001", "2026-03-02", "IV", "35", "0.5", "128", "82", "134", "85", "6", "nausea"),
        ("K00001", "2026-03-09", "IV", "35", "0.5", "126", "80", "131", "84", "4", ""),
    ),
    "scores": (
        ("K00001", "PHQ-9", "2026-02-23", "18", "preparation"),
        ("K00001", "PHQ-9", "2026-04-06", "9", "integration"),
    ),
}


def templates() -> dict[str, bytes]:
    """``patients.csv``, ``sessions.csv`` and ``scores.csv``: the contract's header and two synthetic example
    rows each, UTF-8 CSV written through :mod:`kapdata.csvsafe` (formula-safe)."""
    import pandas as pd

    from kapdata import csvsafe

    return {
        f"{kind}.csv": csvsafe.to_csv_bytes(
            pd.DataFrame(list(rows), columns=list(COLUMNS[kind])), index=False
        )
        for kind, rows in _TEMPLATE_ROWS.items()
    }
