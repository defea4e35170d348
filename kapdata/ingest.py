"""Read, validate and load patients, sessions and scores files (DESIGN §3).

Everything one call loads is one transaction: either every file's good rows are committed, or the
database is left exactly as it was. Files are read with DuckDB's own readers (pandas only for
``.xlsx``), every cell as text; validation is set-based SQL over the staged rows, and every problem
names the file, the row (as a spreadsheet shows it: the header is row 1), the column, the value and
the reason. Each file becomes one batch in ``batches`` and can be undone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import duckdb
import pyarrow as pa

from kapdata import csvsafe, db
from kapdata import instruments as reg

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


@dataclass(frozen=True)
class SourceFile:
    """A file to load; ``name`` is what reports call it (an uploaded file's own name)."""

    path: Path
    name: str

    @classmethod
    def of(cls, item: str | os.PathLike[str] | SourceFile) -> SourceFile:
        if isinstance(item, SourceFile):
            return item
        p = Path(item)
        return cls(p, p.name)


@dataclass(frozen=True)
class Problem:
    file: str
    row: int | None
    column: str | None
    value: str | None
    reason: str
    severity: Literal["error", "warning", "info"] = "error"

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f", row {self.row}"
        if self.column:
            where += f", column {self.column}"
        value = "" if self.value is None else f" value {self.value!r}:"
        return f"{where}:{value} {self.reason}"


@dataclass
class FileResult:
    file: str
    kind: Kind | None
    sha256: str
    rows_read: int = 0
    rows_loaded: int = 0
    rows_already_present: int = 0
    rows_rejected: int = 0
    rows_prorated: int = 0  # rows whose total was prorated from 1-2 missing item answers
    new_patients: int = 0
    batch_id: int | None = None
    identical_to_batch: int | None = None
    rejects_path: Path | None = None
    refused: bool = False  # refused as a whole: unreadable, unknown kind, missing column, identifier column

    def summary(self) -> str:
        if self.identical_to_batch is not None:
            return (
                f"{self.file}: identical to batch {self.identical_to_batch}, already loaded; "
                f"nothing to do ({self.rows_read} rows)"
            )
        text = (
            f"{self.file}: {self.kind}, {self.rows_read} rows read, {self.rows_loaded} loaded, "
            f"{self.rows_already_present} already present, {self.rows_rejected} rejected"
        )
        if self.rows_prorated:
            text += f", {self.rows_prorated} with a prorated total"
        if self.new_patients:
            text += f", {self.new_patients} new patients with unknown attributes"
        if self.batch_id is not None:
            text += f" (batch {self.batch_id})"
        if self.rejects_path is not None:
            text += f"; rejected rows written to {self.rejects_path}"
        return text


@dataclass
class LoadResult:
    files: list[FileResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    committed: bool = False
    unlisted_errors: int = 0  # row errors beyond the first MAX_PROBLEMS_LISTED: counted, not listed
    error_rows: int | None = None  # rows with errors, listed or not (None: count the listed ones)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def headline(self) -> str:
        """``3 problem(s) in 2 row(s) of 1 file(s)``-style summary of the errors."""
        errors = self.errors
        if not errors:
            return "no errors"
        rows = {(p.file, p.row) for p in errors if p.row is not None}
        whole = {p.file for p in errors if p.row is None}
        n_rows = self.error_rows if self.error_rows else len(rows)
        parts = [f"{n_rows} row(s)"] if n_rows else []
        parts += [f"{len(whole)} whole file(s)"] if whole else []
        return f"{self.error_count} problem(s) in " + " and ".join(parts)

    @property
    def error_count(self) -> int:
        """Every error, listed or not."""
        return len(self.errors) + self.unlisted_errors

    def report(self) -> str:
        lines = [self.headline()] + [f"{p.severity}: {p}" for p in self.problems]
        if self.unlisted_errors:
            lines.append(
                f"... and {self.unlisted_errors:,} more error(s) not listed "
                f"(the first {MAX_PROBLEMS_LISTED:,} are listed)"
            )
        return "\n".join(lines)


class ImportRejected(Exception):
    """The batch was rejected: nothing was loaded. ``result.problems`` says why."""

    def __init__(self, result: LoadResult) -> None:
        self.result = result
        errors = result.errors
        super().__init__(
            f"import rejected, the database is unchanged: {len(errors)} error(s); first: {errors[0]}"
            if errors
            else "import rejected"
        )


# --------------------------------------------------------------------------------------------- reading


def fingerprint(path: Path) -> tuple[str, bool]:
    """The file's sha256, and whether it has a blank line (read once, in chunks)."""
    h = hashlib.sha256()
    blank = False
    tail = b""
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            if not blank:
                window = tail + chunk  # a blank line may straddle two chunks
                blank = b"\n\n" in window or b"\n\r\n" in window
                tail = chunk[-2:]
    return h.hexdigest(), blank


def normalize_header(name: str) -> str:
    text = re.sub(r"[\s\-]+", "_", str(name).strip().lower())
    m = ITEM_COLUMN_RE.match(text)
    return f"item_{int(m.group(1))}" if m else text


class FileError(Exception):
    """The file as a whole cannot be read or used (the message is ours, in words; ``row`` if known)."""

    def __init__(self, message: str, row: int | None = None) -> None:
        super().__init__(message)
        self.row = row


_CSV_SUFFIXES = (".csv", ".txt", ".tsv")
_NOT_UTF8 = (
    "the file is not UTF-8 text (the encoding is wrong): in Excel use Save As → 'CSV UTF-8', or re-save "
    "the file as UTF-8"
)


def _delimiter(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def read_header(src: SourceFile) -> list[str]:
    """The header row exactly as the file has it (duplicates kept), read without reading the data.
    Refuses, before anything else is read, a header wider than ``MAX_COLUMNS`` or longer than
    ``MAX_HEADER_BYTES``, an xlsx larger than ``MAX_XLSX_BYTES`` and a header that is not UTF-8."""
    import csv
    import io

    path = src.path
    suffix = path.suffix.lower()
    if not path.exists():
        raise FileError("file not found")
    size = path.stat().st_size
    if size == 0:
        raise FileError("the file is empty")
    names: list[str]
    if suffix in _CSV_SUFFIXES:
        with open(path, "rb") as f:
            head = f.read(MAX_HEADER_BYTES + 1)
        if head.startswith(b"\xef\xbb\xbf"):
            head = head[3:]
        line_end = head.find(b"\n")
        if line_end < 0 and len(head) > MAX_HEADER_BYTES:
            raise FileError(
                f"the header row is longer than {MAX_HEADER_BYTES // 1024} KB: this is not a data file"
            )
        line = head if line_end < 0 else head[:line_end]
        if b"\x00" in line:
            raise FileError("the file holds binary data, not text: save it as CSV (UTF-8)")
        try:
            text = line.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
            raise FileError(_NOT_UTF8, row=1) from None
        try:
            names = next(csv.reader(io.StringIO(text), delimiter=_delimiter(path)), [])
        except csv.Error:
            raise FileError(
                "the header row has a quoting problem (a double quote that never closes)", row=1
            ) from None
        if len(names) == 1 and (";" in text or "\t" in text or "|" in text):
            sep = ";" if ";" in text else ("a tab" if "\t" in text else "|")
            raise FileError(
                f"the header is one column: the file seems to use {sep} between values; save it "
                "comma-separated (CSV)",
                row=1,
            )
    elif suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            meta = pq.read_metadata(path)
            if meta.num_columns > MAX_COLUMNS:
                names = [""] * meta.num_columns
            else:
                names = list(pq.read_schema(path).names)
        except Exception:
            raise FileError("cannot be read as Parquet: the file is damaged or not a Parquet file") from None
    elif suffix == ".xlsx":
        if size > MAX_XLSX_BYTES:
            raise FileError(
                f"the workbook is {size / 1e6:.1f} MB; workbooks up to {MAX_XLSX_BYTES // (1024 * 1024)} MB "
                "are read: save the sheet as CSV (UTF-8) and load that instead"
            )
        try:
            import openpyxl

            book = openpyxl.load_workbook(path, read_only=True, data_only=True)
            try:
                sheet = book.worksheets[0]
                first = next(sheet.iter_rows(min_row=1, max_row=1, values_only=True), ())
                names = ["" if v is None else str(v) for v in first]
            finally:
                book.close()
        except Exception:
            raise FileError(
                "cannot be read as xlsx: the workbook is damaged, protected or not an Excel file"
            ) from None
        while names and names[-1] == "":
            names.pop()  # trailing empty header cells: pandas drops those columns too
    else:
        raise FileError(f"unsupported file type {suffix or '(none)'}: use .csv, .parquet or .xlsx")
    if len(names) > MAX_COLUMNS:
        raise FileError(
            f"the file has {len(names):,} columns; at most {MAX_COLUMNS} are read (the contract has fewer "
            "than 30)",
            row=1 if suffix != ".parquet" else None,
        )
    return names


def _diagnose_csv(path: Path, n_columns: int) -> FileError:
    """Why DuckDB could not read a CSV file, in words (its own message names our temp path and internals)."""
    import codecs
    import csv
    import io

    decoder = codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as f:
        try:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                if b"\x00" in chunk:
                    return FileError("the file holds binary data, not text: save it as CSV (UTF-8)")
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return FileError(_NOT_UTF8)
    text = io.StringIO(path.read_bytes().decode("utf-8-sig"), newline="")
    reader = csv.reader(text, delimiter=_delimiter(path), strict=True)
    row = 0
    try:
        for row, record in enumerate(reader, start=1):
            if record and len(record) != n_columns:
                more = "more" if len(record) > n_columns else "fewer"
                return FileError(
                    f"row {row} has {len(record)} fields, {more} than the {n_columns} columns of the header: "
                    "a value holding a comma must be in double quotes, and every row needs one field per "
                    "column",
                    row=row,
                )
    except csv.Error:
        return FileError(
            f"quoting problem at row {row + 1}: a double quote opens a value that never closes, or a quote "
            'inside a quoted value is not doubled ("")',
            row=row + 1,
        )
    return FileError(
        "cannot be read as CSV: the layout (delimiter, quoting or line endings) is not standard "
        "comma-separated text; save it from a spreadsheet as CSV (UTF-8)"
    )


def _quote_ident(name: str) -> str:
    """A column name from a file as a quoted SQL identifier (identifiers cannot be parameters)."""
    return '"' + name.replace('"', '""') + '"'


def _read_raw(con: duckdb.DuckDBPyConnection, src: SourceFile, table: str, n_columns: int) -> int:
    """Load the file into temp table ``table`` with every cell as text; return the row offset."""
    suffix = src.path.suffix.lower()
    try:
        if suffix in _CSV_SUFFIXES:
            try:
                con.execute(
                    "CREATE TEMP TABLE "
                    + table
                    + " AS SELECT * FROM read_csv(?, all_varchar = true, header = true, "
                    "delim = ?, quote = '\"', escape = '\"', encoding = 'utf-8', null_padding = false)",
                    [str(src.path), _delimiter(src.path)],
                )
            except duckdb.Error:
                raise _diagnose_csv(src.path, n_columns) from None
            return 2
        if suffix in (".parquet", ".pq"):
            import pyarrow.compute as pc
            import pyarrow.parquet as pq

            schema = pq.read_schema(src.path)
            zoned = [f.name for f in schema if pa.types.is_timestamp(f.type) and getattr(f.type, "tz", None)]
            if not zoned:
                con.execute(
                    "CREATE TEMP TABLE " + table + " AS SELECT * FROM read_parquet(?)", [str(src.path)]
                )
                return 1
            # A time-zone-aware timestamp counts on its own local date (as a CSV date-time with an offset
            # does), whatever the server's time zone: take the wall-clock time in the value's zone.
            arrow = pq.read_table(src.path)
            for i, f in enumerate(arrow.schema):
                if f.name in zoned:
                    local = pc.strftime(pc.local_timestamp(arrow.column(i)), format="%Y-%m-%dT%H:%M:%S")
                    arrow = arrow.set_column(i, f.name, local)
            parquet_frame = arrow  # noqa: F841 - read by name below (DuckDB's replacement scan)
            con.execute("CREATE TEMP TABLE " + table + " AS SELECT * FROM parquet_frame")
            return 1
        if suffix == ".xlsx":
            import pandas as pd

            frame = pd.read_excel(src.path, dtype=str, engine="openpyxl")
            xlsx_frame = frame.astype(object).where(frame.notna(), None)  # noqa: F841 - read by name below
            # DuckDB's replacement scan finds the local frame by name; con.register() would fail while
            # an earlier result on this connection is still open ("Resource In Use").
            con.execute("CREATE TEMP TABLE " + table + " AS SELECT * FROM xlsx_frame")
            return 2
    except FileError:
        raise
    except MemoryError:
        raise FileError("the file is too large to read here: split it into smaller files") from None
    except Exception:  # engine and reader messages name temp paths and internals: never shown
        what = {".parquet": "Parquet", ".pq": "Parquet", ".xlsx": "xlsx"}.get(suffix, "a data file")
        raise FileError(f"cannot be read as {what}: the file is damaged or not a {what} file") from None
    raise FileError(f"unsupported file type {suffix or '(none)'}: use .csv, .parquet or .xlsx")


def _spreadsheet_rows(path: Path) -> list[int] | None:
    """Row numbers, as a spreadsheet shows them, of a CSV file's data records (called when the file has
    blank lines: DuckDB skips those, so counting its rows would report every later row too early)."""
    if path.suffix.lower() not in (".csv", ".txt", ".tsv"):
        return None
    data = path.read_bytes()
    import csv
    import io

    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    text = io.StringIO(data.decode("utf-8-sig", errors="replace"), newline="")
    records = enumerate(csv.reader(text, delimiter=delimiter), start=1)
    return [row for row, record in records if record and row > 1]


def _classify(columns: Sequence[str]) -> Kind | None:
    cols = set(columns)
    if "instrument" in cols or any(ITEM_COLUMN_RE.match(c) for c in cols) or "assessed_on" in cols:
        return "scores"
    if "session_date" in cols:
        return "sessions"
    if "patient_id" in cols:
        return "patients"
    return None


# ------------------------------------------------------------------------------------------ validation


@dataclass(frozen=True)
class Check:
    """A row-level rule: rows where ``bad`` (SQL over table ``parsed``) holds are reported."""

    column: str
    bad: str
    reason: str  # an SQL expression giving the reason text
    value: str | None = None  # an SQL expression for the value shown; default: the raw column


def _lit(text: str) -> str:
    """A constant of ours as an SQL string literal (never user input)."""
    return "'" + text.replace("'", "''") + "'"


def _num(col: str) -> str:
    """SQL: the text column parsed as a number, NULL if it is not one. DuckDB's own cast reads ``1_2`` as
    12 (digit separators); a value with an underscore is not a number here."""
    return f"try_cast(replace({col}, '_', 'x') AS DOUBLE)"  # 'x' is never part of a number


def _whole(col: str) -> str:
    """SQL: the text column parsed as a whole number, NULL if it is not one."""
    num = _num(col)
    return f"(CASE WHEN {num} = round({num}) THEN {num} END)"


def _in_list(values: Iterable[str]) -> str:
    return "(" + ", ".join(_lit(v) for v in values) + ")"


def _alias_case(col: str, aliases: dict[str, str]) -> str:
    whens = " ".join(f"WHEN {_lit(k)} THEN {_lit(v)}" for k, v in aliases.items())
    return f"(CASE lower({col}) {whens} END)"


def _common_checks() -> list[Check]:
    return [
        Check("patient_id", "patient_id IS NULL", _lit("patient_id is required")),
        Check(
            "patient_id",
            "patient_id IS NOT NULL AND NOT regexp_full_match(patient_id, " + _lit(PATIENT_ID_RE) + ")",
            _lit("patient_id must be 1-64 characters of letters, digits, '-' or '_'"),
        ),
        Check(
            "patient_id",
            "regexp_full_match(patient_id, '[0-9]{3}-[0-9]{2}-[0-9]{4}')",
            _lit(
                "patient_id looks like a social security number, a direct identifier: use the pseudonymous "
                "code (the value is not shown)"
            ),
            value="NULL",
        ),
    ]


#: Folds an ID to the spelling two look-alike IDs share: letter case, O/0 and I/L/1.
def _fold_id(col: str) -> str:
    return f"translate(upper({col}), 'OIL', '011')"


#: Free-text columns of a patients file: a value that holds an e-mail address or a phone or identity
#: number is refused (the value itself is never repeated in the report).
IDENTIFIER_VALUE_COLUMNS: tuple[str, ...] = ("clinic", "provider")
MIN_IDENTIFIER_DIGITS = 7  # phone numbers, SSNs, NHS and medical record numbers have at least 7 digits


def _identifier_value_checks() -> list[Check]:
    checks = []
    for col in IDENTIFIER_VALUE_COLUMNS:
        checks += [
            Check(
                col,
                f"regexp_matches({col}, '[^[:space:]@]+@[^[:space:]@]+[.][^[:space:]@]+')",
                _lit(
                    "value holds an e-mail address, a direct identifier: the data must arrive anonymized "
                    "(the value is not shown)"
                ),
                value="NULL",
            ),
            Check(
                col,
                f"length(regexp_replace({col}, '[^0-9]', '', 'g')) >= {MIN_IDENTIFIER_DIGITS}",
                _lit(
                    f"value holds {MIN_IDENTIFIER_DIGITS} or more digits, like a phone, social security or "
                    "record number (a direct identifier): the data must arrive anonymized (the value is not "
                    "shown)"
                ),
                value="NULL",
            ),
        ]
    return checks


def _date_checks(column: str) -> list[Check]:
    return [
        Check(column, f"{column} IS NULL", _lit(f"{column} is required")),
        Check(
            column,
            f"{column} IS NOT NULL AND {column}__d IS NULL",
            _lit("not a date: expected YYYY-MM-DD or an ISO date-time such as 2026-06-01T09:30:00+01:00"),
        ),
        Check(
            column,
            f"{column}__d < DATE '{EARLIEST_DATE.isoformat()}'",
            _lit(f"date before {EARLIEST_DATE.year}: check the year"),
        ),
        Check(
            column,
            f"{column}__d > $today",
            "'date is in the future (today is ' || CAST($today AS VARCHAR) || ')'",
        ),
    ]


def _range_check(column: str, low: float, high: float, what: str, whole: bool = True) -> list[Check]:
    parsed = _whole(column) if whole else _num(column)
    kind = "a whole number" if whole else "a number"
    return [
        Check(column, f"{column} IS NOT NULL AND {parsed} IS NULL", _lit(f"not {kind}")),
        Check(
            column,
            f"{parsed} < {low} OR {parsed} > {high}",
            _lit(f"{what} must be between {low:g} and {high:g}"),
        ),
    ]


def _parse_date_sql(column: str) -> str:
    """SQL giving the local timestamp of a date or date-time text (its offset ignored), NULL if bad."""
    time_text = f"regexp_extract({column}, '^.{{10}}[T ]([0-9:.]+)', 1)"
    # A time that is present but invalid (25:00) makes the whole value unparseable, not midnight.
    # Fast path for the common plain date (YYYY-MM-DD); everything else goes through the full pattern.
    return (
        f"CASE WHEN length({column}) = 10 AND substr({column}, 5, 1) = '-' AND substr({column}, 8, 1) = '-' "
        f"AND regexp_full_match({column}, '[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}') "
        f"THEN CAST(try_cast({column} AS DATE) AS TIMESTAMP) "
        f"WHEN regexp_full_match({column}, {_lit(DATE_RE)}) THEN "
        f"try_cast(left({column}, 10) AS DATE) + (CASE WHEN {time_text} = '' THEN TIME '00:00:00' "
        f"ELSE try_cast({time_text} AS TIME) END) END"
    )


def _route_check(column: str = "route") -> Check:
    return Check(
        column,
        f"{column} IS NOT NULL AND {column}__v IS NULL",
        _lit("unknown route; expected one of " + ", ".join(ROUTES)),
    )


# ------------------------------------------------------------------------------------------- the load


@dataclass
class _Staged:
    src: SourceFile
    result: FileResult
    table: str  # parsed rows
    raw: str
    columns: dict[str, int]  # normalized name -> position (1-based) in raw
    item_numbers: list[int]
    row_expr: str = "rowid"  # SQL over the raw table giving each row's number as the reports show it
    index: int = 0  # the file's number in this load: its rows' errors are ``row_errors.file_no``
    clean_ready: bool = False  # the typed ``<table>_clean`` exists (and must be marked too)
    unmarked: bool = False  # errors recorded that are not yet marked not ok in the tables
    n_bad: int = 0  # rows with at least one error
    has_duplicate_keys: bool = True  # rows sharing a key in the file (identical ones collapse on insert)


class Loader:
    """One load call: stage every file, validate, then commit or roll back."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        on_error: OnError = "reject",
        today: dt.date | None = None,
    ) -> None:
        self.con = con
        self.on_error = on_error
        self.today = today or dt.date.today()
        self.result = LoadResult()

    # -- helpers
    def _problem(
        self,
        src: SourceFile,
        reason: str,
        *,
        row: int | None,
        column: str | None,
        value: str | None,
        severity: Literal["error", "warning", "info"] = "error",
    ) -> None:
        self.result.problems.append(Problem(src.name, row, column, value, reason, severity))

    def _stage(self, index: int, src: SourceFile) -> _Staged | None:
        sha, has_blank_line = fingerprint(src.path) if src.path.exists() else ("", False)
        result = FileResult(src.name, None, sha)
        self.result.files.append(result)
        raw = f"raw_{index}"
        try:
            header = read_header(src)
        except FileError as exc:
            self._problem(src, str(exc), row=exc.row, column=None, value=None)
            return None
        header_row = None if src.path.suffix.lower() in (".parquet", ".pq") else 1
        # The header is checked before the data is read: identifiers, duplicates and unknown columns
        # refuse the file whatever its rows hold.
        seen: dict[str, str] = {}
        for original in header:
            name = normalize_header(original)
            what = identifier_kind(original)
            if what is not None:
                self._problem(
                    src,
                    f"column looks like {what}, a direct identifier: the data must arrive anonymized "
                    "(remove the column and load again)",
                    row=header_row,
                    column=original,
                    value=None,
                )
            elif name in seen:
                self._problem(
                    src,
                    f"the same column appears twice (also as {seen[name]!r}): which one to load is not "
                    "clear; keep one",
                    row=header_row,
                    column=original,
                    value=None,
                )
            elif name == "":
                self._problem(
                    src, "a column has no name in the header row", row=header_row, column=None, value=None
                )
            seen.setdefault(name, original)
        kind = _classify(list(seen))
        result.kind = kind
        if kind is None:
            self._problem(
                src,
                "cannot tell what kind of file this is: a patients file has patient_id, a sessions file "
                "session_date, a scores file instrument and assessed_on",
                row=None,
                column=None,
                value=None,
            )
            return None
        items = sorted(int(m.group(1)) for c in seen if (m := ITEM_COLUMN_RE.match(c)))
        known = set(COLUMNS[kind]) | {f"item_{n}" for n in items if kind == "scores"}
        for name, original in seen.items():
            if (
                name
                and name not in known
                and name not in IGNORABLE_COLUMNS
                and identifier_kind(original) is None
            ):
                self._problem(
                    src,
                    f"column is not part of the {kind} file contract: remove it and load again (only the "
                    "contract's columns, and _row and _errors of a rejects file, are accepted)",
                    row=header_row,
                    column=original,
                    value=None,
                )
        if any(p.file == src.name and p.severity == "error" for p in self.result.problems):
            return None
        try:
            offset = _read_raw(self.con, src, raw, len(header))
        except FileError as exc:
            self._problem(src, str(exc), row=exc.row, column=None, value=None)
            return None
        described = self.con.execute("DESCRIBE " + raw).fetchall()
        positions: dict[str, int] = {}
        for pos, row in enumerate(described, start=1):
            name = normalize_header(header[pos - 1] if len(header) == len(described) else str(row[0]))
            positions.setdefault(name, pos)
        count = self.con.execute("SELECT count(*), coalesce(min(rowid), 0) FROM " + raw).fetchone()
        result.rows_read = int(count[0]) if count else 0
        if result.rows_read == 0 and src.path.suffix.lower() in _CSV_SUFFIXES:
            # DuckDB's sniffer can return no rows for a short file with a malformed row: say which row.
            found = _diagnose_csv(src.path, len(header))
            if found.row is not None:
                self._problem(src, str(found), row=found.row, column=None, value=None)
                return None
        if result.rows_read == 0:
            self._problem(
                src,
                "the file has a header but no data rows: nothing to load",
                row=None,
                column=None,
                value=None,
            )
            return None
        # Temp-table row ids start at an arbitrary base: shift them so the first data row gets its
        # spreadsheet number (2 under a header row; 1 in Parquet).
        offset -= int(count[1]) if count else 0
        row_numbers = _spreadsheet_rows(src.path) if has_blank_line else None
        if row_numbers is not None and len(row_numbers) == result.rows_read:
            # Blank lines: number each row from the file itself (the rows keep their order).
            numbers = pa.table({"_idx": range(len(row_numbers)), "_kap_row": row_numbers})  # noqa: F841
            base = int(count[1]) if count else 0
            self.con.execute(
                f"CREATE OR REPLACE TEMP TABLE {raw} AS SELECT r.* EXCLUDE (_idx), n._kap_row FROM "
                f"(SELECT *, rowid - {base} AS _idx FROM {raw}) r JOIN numbers n USING (_idx) ORDER BY _idx"
            )
            mapped = True
        else:
            mapped = False
        missing = [c for c in REQUIRED[kind] if c not in positions]
        if kind == "scores" and "total" not in positions and not items:
            missing.append("total (or item_1 … item_N)")
        for column in missing:
            self._problem(
                src,
                f"missing required column for a {kind} file",
                row=None,
                column=column,
                value=None,
            )
        if any(p.file == src.name and p.severity == "error" for p in self.result.problems):
            return None
        return _Staged(
            src,
            result,
            f"parsed_{index}",
            raw,
            positions,
            items if kind == "scores" else [],
            row_expr="_kap_row" if mapped else f"CAST(rowid + {offset} AS BIGINT)",
            index=index,
        )

    def _select_text(self, st: _Staged, columns: Iterable[str]) -> str:
        """SELECT list projecting the raw table's columns (by position) as trimmed text or NULL."""
        parts = [f"{st.row_expr} AS row_no"]
        for name in columns:
            pos = st.columns.get(name)
            if pos is None:
                parts.append(f"CAST(NULL AS VARCHAR) AS {name}")
            else:
                parts.append(f"nullif(trim(CAST(#{pos} AS VARCHAR)), '') AS {name}")
        return ", ".join(parts)

    def _run_checks(self, st: _Staged, checks: list[Check]) -> None:
        if not checks:
            return
        selects = [
            f"SELECT row_no, {_lit(c.column)} AS col, CAST({c.value or c.column} AS VARCHAR) AS value, "
            f"{c.reason} AS reason FROM {st.table} WHERE coalesce({c.bad}, false)"
            for c in checks
        ]
        sql = " UNION ALL ".join(selects)
        params = {"today": self.today} if "$today" in sql else None
        # One scan answers "is anything wrong?"; the per-rule report runs only when something is.
        probe = (
            "SELECT count(*) FROM "
            + st.table
            + " WHERE "
            + " OR ".join(f"coalesce({c.bad}, false)" for c in checks)
        )
        found = self.con.execute(probe, params).fetchone()
        if not found or found[0] == 0:
            return
        self._record(st, sql, params)

    def _record(self, st: _Staged, select_sql: str, params: object = None) -> None:
        """Store the rows of ``select_sql`` (row_no, column, value, reason) as errors of this file: one
        set-based INSERT, however many rows are bad (only the first ones reach the report)."""
        inserted = self.con.execute(
            f"INSERT INTO row_errors SELECT {int(st.index)}, * FROM ({select_sql})", params
        ).fetchone()
        if inserted and inserted[0]:
            st.unmarked = True

    def _mark_bad(self, st: _Staged) -> None:
        if not st.unmarked:
            return
        st.unmarked = False
        tables = [st.table, st.table + "_clean"] if st.clean_ready else [st.table]
        for table in tables:
            self.con.execute(
                "UPDATE " + table + " SET ok = false WHERE ok AND row_no IN "
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
        probe = self.con.execute(
            f"SELECT count(*) FROM (SELECT {fold} AS k FROM {st.table} WHERE ok GROUP BY k "
            "HAVING count(DISTINCT patient_id) > 1)"
        ).fetchone()
        hint = "only by letter case or look-alike characters (O/0, I/L/1): use one spelling for one patient"
        if probe and probe[0]:
            self._record(
                st,
                f"""WITH f AS (SELECT row_no, patient_id, {fold} AS k FROM {st.table} WHERE ok),
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
            f"""WITH f AS (SELECT DISTINCT patient_id, {fold} AS k FROM {st.table}
                       WHERE ok AND patient_id NOT IN (SELECT patient_id FROM patients)),
            d AS (SELECT {_fold_id("patient_id")} AS k, min(patient_id) AS db_id FROM patients GROUP BY k)
            SELECT t.row_no, 'patient_id', t.patient_id,
                   'patient_id differs from ' || d.db_id || ', already in the database, ' || {_lit(hint)}
            FROM {st.table} t JOIN f USING (patient_id) JOIN d USING (k) WHERE t.ok""",
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
        self.con.execute(
            f"""CREATE TEMP TABLE {st.table} AS
            SELECT *, true AS ok,
                   replace(replace(replace(age_band, ' ', ''), '–', '-'), '—', '-') AS age_band__v,
                   {_alias_case("sex", SEX_ALIASES)} AS sex__v,
                   CASE WHEN upper(primary_condition) IN ('PTSD', 'MDD', 'GAD') THEN upper(primary_condition)
                        WHEN lower(primary_condition) = 'other' THEN 'other' END AS condition__v,
                   {_alias_case("route", ROUTE_ALIASES)} AS route__v
            FROM (SELECT {self._select_text(st, cols)} FROM {st.raw})"""
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
        self._run_checks(st, checks)
        self._mark_bad(st)
        self._lookalike_ids(st)
        self.con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {st.table}_clean AS
            SELECT row_no, ok, patient_id, clinic, provider, age_band__v AS age_band, sex__v AS sex,
                   condition__v AS primary_condition, route__v AS route
            FROM {st.table}"""
        )
        st.clean_ready = True
        value_cols = ["clinic", "provider", "age_band", "sex", "primary_condition", "route"]
        self._key_conflicts(st, ["patient_id"], value_cols, "patient_id", "patient", None)
        # Against the database: a patient with known attributes that differ is a conflict; a patient
        # created earlier with unknown attributes (from a scores/sessions file) gets them filled in.
        diffs = ", ".join(
            f"CASE WHEN c.{v} IS DISTINCT FROM p.{v} THEN '{v} ' || coalesce(p.{v}, '(empty)') END"
            for v in value_cols
        )
        differs = " OR ".join(f"c.{v} IS DISTINCT FROM p.{v}" for v in value_cols)
        rows = f"""SELECT c.row_no, 'patient_id', c.patient_id,
                   'patient already in the database (batch ' || p.batch_id || ') with other attributes ('
                   || concat_ws(', ', {diffs}) || '); undo that batch first to replace it'
            FROM {st.table}_clean c JOIN patients p USING (patient_id)
            WHERE c.ok AND p.attributes_known AND ({differs})"""
        self._record(st, rows)
        self._mark_bad(st)

    def _parse_sessions(self, st: _Staged) -> None:
        cols = COLUMNS["sessions"]
        self.con.execute(
            f"""CREATE TEMP TABLE {st.table} AS
            SELECT *, true AS ok,
                   CAST({_parse_date_sql("session_date")} AS DATE) AS session_date__d,
                   {_alias_case("route", ROUTE_ALIASES)} AS route__v,
                   list_filter(string_split(lower(coalesce(side_effects, '')), ';'), lambda x: trim(x) <> '')
                       AS side_effects__l
            FROM (SELECT {self._select_text(st, cols)} FROM {st.raw})"""
        )
        checks = _common_checks() + _date_checks("session_date") + [_route_check()]
        checks += _range_check("dose_mg", 0, 2000, "dose_mg", whole=False)
        checks += _range_check("dose_mg_per_kg", 0, 10, "dose_mg_per_kg", whole=False)
        for col in ("bp_sys_pre", "bp_sys_post"):
            checks += _range_check(col, 50, 300, "systolic blood pressure (mmHg)")
        for col in ("bp_dia_pre", "bp_dia_post"):
            checks += _range_check(col, 20, 200, "diastolic blood pressure (mmHg)")
        checks += _range_check("dissociation", 0, 24, "dissociation (CADSS-6 total)")
        checks.append(
            Check(
                "side_effects",
                f"len(list_filter(side_effects__l, lambda x: trim(x) NOT IN {_in_list(SIDE_EFFECTS)})) > 0",
                _lit("unknown side effect; use ';' between any of " + ", ".join(SIDE_EFFECTS)),
            )
        )
        self._run_checks(st, checks)
        self._mark_bad(st)
        self._lookalike_ids(st)
        self.con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {st.table}_clean AS
            SELECT row_no, ok, patient_id, session_date__d AS session_date, route__v AS route,
                   {_num("dose_mg")} AS dose_mg,
                   {_num("dose_mg_per_kg")} AS dose_mg_per_kg,
                   try_cast({_whole("bp_sys_pre")} AS SMALLINT) AS bp_sys_pre,
                   try_cast({_whole("bp_dia_pre")} AS SMALLINT) AS bp_dia_pre,
                   try_cast({_whole("bp_sys_post")} AS SMALLINT) AS bp_sys_post,
                   try_cast({_whole("bp_dia_post")} AS SMALLINT) AS bp_dia_post,
                   try_cast({_whole("dissociation")} AS SMALLINT) AS dissociation,
                   nullif(array_to_string(list_transform(side_effects__l, lambda x: trim(x)), ';'), '')
                       AS side_effects
            FROM {st.table}"""
        )
        st.clean_ready = True
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
        # Instrument spellings: the file has only a handful of distinct ones, so normalise those
        # in Python (the registry's own rule) and join, instead of a regex on every row.
        pos = st.columns.get("instrument")
        spellings: list[str] = []
        if pos is not None:
            spellings = [
                r[0]
                for r in self.con.execute(
                    f"SELECT DISTINCT nullif(trim(CAST(#{pos} AS VARCHAR)), '') FROM {st.raw}"
                ).fetchall()
                if r[0] is not None
            ]
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE inst_keys "
            "(spelling VARCHAR, code VARCHAR, n INTEGER, lo INTEGER, hi INTEGER)"
        )
        rows = []
        for spelling in spellings:
            inst = reg.lookup(spelling)
            if inst is not None:
                rows.append([spelling, inst.code, inst.n_items, inst.item_min, inst.item_max])
        if rows:
            self.con.executemany("INSERT INTO inst_keys VALUES (?, ?, ?, ?, ?)", rows)
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
        self.con.execute(
            f"""CREATE TEMP TABLE {st.table} AS {prorate}
            SELECT *, CAST(assessed_on__ts AS DATE) AS assessed_on__d {item_totals}
            FROM (
                SELECT s.*, true AS ok, k.code AS instrument__v, k.n AS n_items, k.lo AS item_lo,
                       k.hi AS item_hi, k.n * k.lo AS total_lo, k.n * k.hi AS total_hi,
                       {_parse_date_sql("assessed_on")} AS assessed_on__ts,
                       {_whole("total")} AS total__n,
                       {_alias_case("phase", PHASE_ALIASES)} AS phase__v
                       {item_parsed}
                FROM (SELECT *{item_float} FROM (SELECT {self._select_text(st, cols)} FROM {st.raw})) s
                LEFT JOIN inst_keys k ON k.spelling = s.instrument){prorate_end}"""
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
                Check(col, f"{col} IS NOT NULL AND {col}__n IS NULL", _lit("not a whole number")),
                Check(
                    col,
                    f"{col}__n IS NOT NULL AND {n} > n_items",
                    f"instrument__v || ' has ' || n_items || ' items: {col} must be empty'",
                ),
                Check(
                    col,
                    f"{n} <= n_items AND ({col}__n < item_lo OR {col}__n > item_hi)",
                    "'item out of range: ' || instrument__v || ' items are ' || item_lo || '-' || item_hi",
                ),
            ]
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
        self._run_checks(st, checks)
        self._mark_bad(st)
        self._lookalike_ids(st)
        if items:
            # Every position up to the longest scale, NULL where the file has no such column, so a prorated
            # row keeps each answer at its item number (and NULL where it was not answered).
            item_list = (
                "["
                + ", ".join(
                    f"try_cast(item_{n}__n AS SMALLINT)" if n in items else "CAST(NULL AS SMALLINT)"
                    for n in range(1, reg.MAX_ITEMS + 1)
                )
                + "]"
            )
            total_expr = "CASE WHEN prorate_ok THEN prorated_total ELSE coalesce(total__n, item_sum) END"
            items_expr = (
                f"CASE WHEN items_given = n_items OR prorate_ok THEN list_slice({item_list}, 1, n_items) END"
            )
            prorated_expr = "prorate_ok"
        else:
            total_expr = "total__n"
            items_expr = "CAST(NULL AS SMALLINT[])"
            prorated_expr = "false"
        self.con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {st.table}_clean AS
            SELECT row_no, ok, patient_id, instrument__v AS instrument, assessed_on__d AS assessed_on,
                   assessed_on__ts AS assessed_at, try_cast({total_expr} AS SMALLINT) AS total,
                   {items_expr} AS items, phase__v AS phase, {prorated_expr} AS prorated
            FROM {st.table}"""
        )
        st.clean_ready = True
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
            SELECT c.row_no, p.{column},
                   {_lit("duplicate " + what + " with different values; see row(s) ")}
                   || array_to_string(list_slice(list_filter(g.rows, lambda r: r <> c.row_no), 1, 10), ', ')
                   || CASE WHEN len(g.rows) > 11 THEN ' and ' || (len(g.rows) - 11) || ' more' ELSE '' END
            FROM {st.table}_clean c JOIN g USING ({key}) JOIN {st.table} p ON p.row_no = c.row_no
            WHERE c.ok"""
        else:
            differs = " OR ".join(f"c.{v} IS DISTINCT FROM t.{v}" for v in values)
            sql = f"""SELECT c.row_no, p.{column},
                   {_lit("a " + what + " is already in the database (batch ")} || t.batch_id
                   || ') with different values; undo that batch first to replace it'
            FROM {st.table}_clean c JOIN {table} t USING ({key}) JOIN {st.table} p ON p.row_no = c.row_no
            WHERE c.ok AND ({differs})"""
        self._record(
            st,
            f"SELECT row_no, {_lit(column)}, CAST(v AS VARCHAR), reason FROM ({sql}) AS x(row_no, v, reason)",
        )
        self._mark_bad(st)

    # -- commit
    def _next_batch_id(self) -> int:
        row = self.con.execute("SELECT coalesce(max(batch_id), 0) + 1 FROM batches").fetchone()
        return int(row[0]) if row else 1

    def _insert(self, st: _Staged) -> None:
        res = st.result
        kind = res.kind
        assert kind is not None
        batch_id = self._next_batch_id()
        clean = f"{st.table}_clean"
        # One row per key (identical duplicates within the file collapse), minus what is already there.
        if kind == "patients":
            keys = ["patient_id"]
        elif kind == "sessions":
            keys = ["patient_id", "session_date"]
        else:
            keys = ["patient_id", "instrument", "assessed_at"]
        key = ", ".join(keys)
        if st.has_duplicate_keys:
            source = (
                f"(SELECT *, row_number() OVER (PARTITION BY {key} ORDER BY row_no) AS dup_rank "
                f"FROM {clean} WHERE ok) WHERE dup_rank = 1"
            )
            dropped = "row_no, ok, dup_rank"
        else:
            source, dropped = f"{clean} WHERE ok", "row_no, ok"
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE new_rows AS SELECT * EXCLUDE ({dropped}) FROM {source}"
        )
        count_sql = f"SELECT count(*) FROM {clean} WHERE ok"
        ok_row = self.con.execute(count_sql).fetchone()
        ok_rows = int(ok_row[0]) if ok_row else 0
        if kind == "patients":
            fill = self.con.execute(
                """SELECT count(*) FROM new_rows n JOIN patients p USING (patient_id)
                   WHERE NOT p.attributes_known"""
            ).fetchone()
            filled = int(fill[0]) if fill else 0
            self.con.execute(
                """UPDATE patients AS p SET clinic = n.clinic, provider = n.provider, age_band = n.age_band,
                       sex = n.sex, primary_condition = n.primary_condition, route = n.route,
                       attributes_known = true, attributes_batch_id = ?
                   FROM new_rows n WHERE p.patient_id = n.patient_id AND NOT p.attributes_known""",
                [batch_id],
            )
            inserted = self.con.execute(
                """INSERT INTO patients
                   SELECT patient_id, clinic, provider, age_band, sex, primary_condition, route, true, ?, ?
                   FROM new_rows WHERE patient_id NOT IN (SELECT patient_id FROM patients)""",
                [batch_id, batch_id],
            ).fetchone()
            loaded = (int(inserted[0]) if inserted else 0) + filled
        else:
            # key and kind are our own identifiers (the contract's key columns and table name)
            already = f"DELETE FROM new_rows WHERE ({key}) IN (SELECT ({key}) FROM {kind})"
            self.con.execute(already)
            new_patients = self.con.execute(
                """SELECT DISTINCT patient_id FROM new_rows
                   WHERE patient_id NOT IN (SELECT patient_id FROM patients) ORDER BY patient_id"""
            ).fetchall()
            if new_patients:
                res.new_patients = len(new_patients)
                shown = ", ".join(r[0] for r in new_patients[:20])
                more = f" and {len(new_patients) - 20} more" if len(new_patients) > 20 else ""
                self._problem(
                    st.src,
                    f"{len(new_patients)} patient(s) are in no patients file; "
                    f"created with unknown attributes: {shown}{more}",
                    row=None,
                    column="patient_id",
                    value=None,
                    severity="info",
                )
                self.con.execute(
                    """INSERT INTO patients (patient_id, attributes_known, batch_id)
                       SELECT DISTINCT patient_id, false, ? FROM new_rows
                       WHERE patient_id NOT IN (SELECT patient_id FROM patients)""",
                    [batch_id],
                )
            if kind == "sessions":
                sql = """INSERT INTO sessions SELECT patient_id, session_date, route, dose_mg, dose_mg_per_kg,
                       bp_sys_pre, bp_dia_pre, bp_sys_post, bp_dia_post, dissociation, side_effects, ?
                       FROM new_rows"""
            else:
                sql = """INSERT INTO scores (patient_id, instrument, assessed_on, assessed_at, total, items,
                       phase, batch_id, prorated)
                       SELECT patient_id, instrument, assessed_on, assessed_at, total, items, phase, ?,
                              prorated
                       FROM new_rows"""
            inserted = self.con.execute(sql, [batch_id]).fetchone()
            loaded = int(inserted[0]) if inserted else 0
        res.rows_loaded = loaded
        res.rows_rejected = st.n_bad
        res.rows_already_present = ok_rows - loaded
        if kind == "patients":
            res.rows_already_present = ok_rows - loaded
        self.con.execute(
            "INSERT INTO batches (batch_id, file_name, sha256, kind, rows_read, rows_loaded, "
            "rows_already_present, rows_rejected, new_patients, on_error, loaded_at, undone_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, current_localtimestamp(), NULL)",
            [
                batch_id,
                st.src.name,
                res.sha256,
                kind,
                res.rows_read,
                res.rows_loaded,
                res.rows_already_present,
                res.rows_rejected,
                res.new_patients,
                self.on_error,
            ],
        )
        res.batch_id = batch_id

    def _write_rejects(self, st: _Staged, target: Path) -> None:
        self.con.execute(
            "CREATE OR REPLACE TEMP TABLE reject_reasons AS SELECT row_no, "
            "CASE WHEN col IS NULL THEN reason ELSE col || ': ' || reason END AS reason "
            "FROM row_errors WHERE file_no = ?",
            [st.index],
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        frame = self.con.execute(
            f"""SELECT r.* EXCLUDE (_rn{", _kap_row" if st.row_expr == "_kap_row" else ""}),
                       e.row_no AS _row, e.reasons AS _errors
                FROM (SELECT *, {st.row_expr} AS _rn FROM {st.raw}) r
                JOIN (SELECT row_no, string_agg(reason, '; ' ORDER BY reason) AS reasons
                      FROM reject_reasons GROUP BY row_no) e ON e.row_no = r._rn
                ORDER BY e.row_no"""
        ).df()
        csvsafe.write_csv(frame, target)
        st.result.rejects_path = target


def _rejects_target(rejects: Path | None, src: SourceFile, n_with_rejects: int) -> Path:
    if rejects is None:
        return src.path.with_name(src.path.stem + ".rejects.csv")
    if n_with_rejects <= 1:
        return rejects
    return rejects.with_name(f"{rejects.stem}-{Path(src.name).stem}{rejects.suffix or '.csv'}")


def load_files(
    files: Sequence[str | os.PathLike[str] | SourceFile],
    db_path: str | os.PathLike[str] | None = None,
    *,
    on_error: OnError = "reject",
    rejects: str | os.PathLike[str] | None = None,
    dry_run: bool = False,
    today: dt.date | None = None,
) -> LoadResult:
    """Validate and load files in one transaction.

    ``on_error="reject"`` (default): any error rejects everything, raising :class:`ImportRejected`; the
    database is unchanged. ``"quarantine"``: good rows load, rejected rows (with reasons) go to a rejects
    CSV. File-level errors (unreadable file, missing column, identifier column) always reject.
    ``dry_run`` validates and reports without changing anything.

    The files are read and checked in a private in-memory database holding a copy of what they are checked
    against (:func:`_staging`), so checking holds no lock on the database file: other people's pages and
    commands keep working however long a large file takes. Only the rows that pass are then written, in one
    short transaction (:func:`_publish`); if the database changed meanwhile (another import, an undo, a
    settings change) the check is run again on the new state.
    """
    target = db.db_path(db_path)
    if not dry_run and not target.exists():
        with db.session(target):  # a first load creates the database
            pass
    for _attempt in range(STALE_RETRIES):
        with _staging(target) as (stage, version):
            publish = None if dry_run else (lambda result: _publish(stage, target, version, result))
            try:
                return load_with_connection(
                    stage,
                    files,
                    on_error=on_error,
                    rejects=rejects,
                    dry_run=dry_run,
                    today=today,
                    refresh=False,
                    publish=publish,
                )
            except _StaleSnapshot:
                continue
    raise db.DatabaseBusy(
        f"{target}: the database kept changing while these files were checked; try again in a moment"
    )


#: How many times an import is checked again when the database changed while it was being checked.
STALE_RETRIES = 3
#: The tables an import is checked against; copied into the staging database.
_SNAPSHOT_TABLES = ("batches", "patients", "sessions", "scores")


class _StaleSnapshot(Exception):
    """The database changed between the staging copy and the write: check again."""


def _data_version(con: duckdb.DuckDBPyConnection) -> int:
    rows = con.execute("SELECT value FROM meta WHERE key = 'data_version'").fetchall()
    return int(rows[0][0]) if rows else 0


@contextlib.contextmanager
def _staging(target: Path) -> Iterator[tuple[duckdb.DuckDBPyConnection, int]]:
    """A private in-memory database with the schema and a copy of the tables an import is checked against,
    taken in one short read of ``target`` (none if it does not exist yet); yields it and the data version
    the copy was taken at."""
    stage = duckdb.connect()
    try:
        db.ensure_schema(stage)
        version = 0
        if target.exists():
            with db.reader(target) as live:
                version = _data_version(live)
                with live.cursor() as cur:  # a fresh cursor: the reader's own checks may leave results open
                    copies = {t: cur.sql("SELECT * FROM " + t).to_arrow_table() for t in _SNAPSHOT_TABLES}
            for table, rows in copies.items():
                if rows.num_rows:
                    stage.register("kap_copy", rows)
                    stage.execute("INSERT INTO " + table + " BY NAME SELECT * FROM kap_copy")
                    stage.unregister("kap_copy")
        yield stage, version
    finally:
        stage.close()


def _publish(stage: duckdb.DuckDBPyConnection, target: Path, version: int, result: LoadResult) -> None:
    """Write what a staged load added (its batches, their rows, the patients they created or filled in)
    into ``target`` in one transaction, if ``target`` is still at the ``version`` the stage was copied at."""
    ids = [f.batch_id for f in result.files if f.batch_id is not None]
    where = {
        "batches": "list_contains($ids, batch_id)",
        "patients": "list_contains($ids, batch_id) OR list_contains($ids, attributes_batch_id)",
        "sessions": "list_contains($ids, batch_id)",
        "scores": "list_contains($ids, batch_id)",
    }
    with stage.cursor() as cur:
        delta = {
            t: cur.sql("SELECT * FROM " + t + " WHERE " + cond, params={"ids": ids}).to_arrow_table()
            for t, cond in where.items()
        }
    with db.session(target) as live:
        live.execute("BEGIN TRANSACTION")
        try:
            if _data_version(live) != version:
                raise _StaleSnapshot
            for table, rows in delta.items():
                if not rows.num_rows:
                    continue
                live.register("kap_delta", rows)
                if table == "patients":  # a filled-in patient replaces its unknown row
                    live.execute(
                        "DELETE FROM patients WHERE patient_id IN (SELECT patient_id FROM kap_delta)"
                    )
                live.execute("INSERT INTO " + table + " BY NAME SELECT * FROM kap_delta")
                live.unregister("kap_delta")
            db.bump_data_version(live)
            live.execute("COMMIT")
        except Exception:
            with contextlib.suppress(duckdb.Error):
                live.execute("ROLLBACK")
            raise


def load_with_connection(
    con: duckdb.DuckDBPyConnection,
    files: Sequence[str | os.PathLike[str] | SourceFile],
    *,
    on_error: OnError = "reject",
    rejects: str | os.PathLike[str] | None = None,
    dry_run: bool = False,
    today: dt.date | None = None,
    refresh: bool = True,
    publish: Callable[[LoadResult], None] | None = None,
) -> LoadResult:
    """Load into ``con`` itself. ``refresh=False`` skips recomputing the stored outcomes (a staging copy
    needs none); ``publish``, when given, is called with the result once ``con`` has committed and before
    any rejects file is written (:func:`load_files` uses it to write a staging copy's new rows into the real
    database; if it fails, the load has failed)."""
    if on_error not in ("reject", "quarantine"):
        raise ValueError(f"on_error must be 'reject' or 'quarantine', not {on_error!r}")
    sources = [SourceFile.of(f) for f in files]
    loader = Loader(con, on_error=on_error, today=today)
    result = loader.result
    try:
        # Files are read into temporary tables before the transaction starts: reading touches no table of
        # the database, and a file the engine cannot read must not abort the transaction.
        con.execute(
            "CREATE OR REPLACE TEMP TABLE row_errors "
            "(file_no INTEGER, row_no BIGINT, col VARCHAR, value VARCHAR, reason VARCHAR)"
        )
        staged: list[_Staged] = []
        for index, src in enumerate(sources):
            st = loader._stage(index, src)
            if st is None:
                result.files[-1].refused = True
            else:
                staged.append(st)
        con.execute("BEGIN TRANSACTION")
        file_errors = any(p.severity == "error" for p in result.problems)
        # Identical re-import of a whole file is a no-op, and so is the same file given twice in one call.
        first_of: dict[str, _Staged] = {}
        repeats: list[tuple[_Staged, _Staged]] = []
        for st in list(staged):
            row = con.execute(
                "SELECT batch_id FROM batches WHERE sha256 = ? AND undone_at IS NULL "
                "ORDER BY batch_id LIMIT 1",
                [st.result.sha256],
            ).fetchone()
            if row:
                st.result.identical_to_batch = int(row[0])
                st.result.rows_already_present = st.result.rows_read
                staged.remove(st)
            elif st.result.sha256 in first_of:
                repeats.append((st, first_of[st.result.sha256]))
                staged.remove(st)
            else:
                first_of[st.result.sha256] = st
        staged.sort(key=lambda s: KIND_ORDER.index(s.result.kind or "scores"))
        for st in staged:
            parse = {"patients": loader._parse_patients, "sessions": loader._parse_sessions}
            parse.get(st.result.kind or "scores", loader._parse_scores)(st)
            if not file_errors:
                # Insert as we go so later files (scores) see this call's patients and sessions.
                if on_error == "reject" and loader.has_row_errors():
                    continue
                loader._insert(st)
        for repeat, first in repeats:
            repeat.result.identical_to_batch = first.result.batch_id
            repeat.result.rows_already_present = repeat.result.rows_read
        loader.collect_row_errors(staged)
        order = {src.name: i for i, src in enumerate(sources)}
        result.problems.sort(key=lambda p: (order.get(p.file, 0), p.row or 0))
        errors = result.errors
        if file_errors or (errors and on_error == "reject") or dry_run:
            con.execute("ROLLBACK")
            for st in staged:
                st.result.rows_rejected = st.n_bad
                st.result.batch_id = None  # rolled back: no batch was recorded
            if (file_errors or (errors and on_error == "reject")) and not dry_run:
                raise ImportRejected(result)
            return result
        loaded = any(st.result.batch_id is not None for st in staged)
        if loaded and refresh:
            db.bump_data_version(con)
        con.execute("COMMIT")
        if loaded and publish is not None:
            publish(result)
        with_rejects = [st for st in staged if st.n_bad]
        if with_rejects:
            target_base = Path(rejects) if rejects else None
            for st in with_rejects:
                loader._write_rejects(st, _rejects_target(target_base, st.src, len(with_rejects)))
        result.committed = True
        return result
    except ImportRejected:
        raise
    except Exception:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise
    finally:
        # A committed load leaves its work tables behind; drop them so the connection can load again.
        _drop_work_tables(con)


_WORK_TABLE_RE = re.compile(
    r"^((raw|parsed)_\d+(_clean)?|row_errors|inst_keys|new_rows|reject_reasons|still_used)$"
)


def _drop_work_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Drop this module's temporary work tables (names matched against our own fixed patterns)."""
    with contextlib.suppress(duckdb.Error):
        names = con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()
        for (name,) in names:
            if _WORK_TABLE_RE.match(name):
                con.execute("DROP TABLE IF EXISTS temp.main." + name)


# ------------------------------------------------------------------------------------------- batches


def list_batches(con: duckdb.DuckDBPyConnection) -> list[dict[str, object]]:
    cur = con.execute("SELECT * FROM batches ORDER BY batch_id")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


class UndoError(Exception):
    pass


def undo_batch(batch_id: int, db_path: str | os.PathLike[str] | None = None) -> dict[str, int]:
    """Remove one batch's rows in one transaction; returns counts of what was removed."""
    with db.session(db_path) as con:
        return undo_with_connection(con, batch_id)


def undo_with_connection(con: duckdb.DuckDBPyConnection, batch_id: int) -> dict[str, int]:
    row = con.execute("SELECT kind, undone_at FROM batches WHERE batch_id = ?", [batch_id]).fetchone()
    if row is None:
        raise UndoError(f"no batch {batch_id}")
    if row[1] is not None:
        raise UndoError(f"batch {batch_id} was already undone at {row[1]}")
    counts: dict[str, int] = {}
    con.execute("BEGIN TRANSACTION")
    try:
        for table in ("scores", "sessions"):
            r = con.execute("DELETE FROM " + table + " WHERE batch_id = ?", [batch_id]).fetchone()
            counts[table] = int(r[0]) if r else 0
        # Attributes this batch filled in on patients created earlier go back to unknown.
        r = con.execute(
            """UPDATE patients SET clinic = NULL, provider = NULL, age_band = NULL, sex = NULL,
                   primary_condition = NULL, route = NULL, attributes_known = false,
                   attributes_batch_id = NULL
               WHERE attributes_batch_id = ? AND batch_id <> ?""",
            [batch_id, batch_id],
        ).fetchone()
        counts["patients_reset"] = int(r[0]) if r else 0
        # Patients this batch created (unknown) whose attributes a patients file gave later now belong
        # to that patients batch: they stay.
        con.execute(
            """UPDATE patients SET batch_id = attributes_batch_id
               WHERE batch_id = ? AND attributes_batch_id IS NOT NULL AND attributes_batch_id <> ?""",
            [batch_id, batch_id],
        )
        # Patients this batch created: kept (attributes unknown) while other batches still refer to them.
        con.execute(
            """CREATE OR REPLACE TEMP TABLE still_used AS
               SELECT patient_id, min(batch_id) AS batch_id FROM (
                   SELECT patient_id, batch_id FROM scores
                   UNION ALL SELECT patient_id, batch_id FROM sessions)
               GROUP BY patient_id"""
        )
        r = con.execute(
            """UPDATE patients AS p SET clinic = NULL, provider = NULL, age_band = NULL, sex = NULL,
                   primary_condition = NULL, route = NULL, attributes_known = false,
                   attributes_batch_id = NULL,
                   batch_id = u.batch_id
               FROM still_used u WHERE p.patient_id = u.patient_id AND p.batch_id = ?""",
            [batch_id],
        ).fetchone()
        counts["patients_kept"] = int(r[0]) if r else 0
        r = con.execute("DELETE FROM patients WHERE batch_id = ?", [batch_id]).fetchone()
        counts["patients"] = int(r[0]) if r else 0
        con.execute("UPDATE batches SET undone_at = current_localtimestamp() WHERE batch_id = ?", [batch_id])
        db.bump_data_version(con)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        _drop_work_tables(con)
    return counts
