"""Readers per format: CSV/TSV, Parquet and xlsx read with every cell as text, each row numbered as the
source shows it."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from kapdata.ingest.contract import (
    ITEM_COLUMN_RE,
    MAX_COLUMNS,
    MAX_HEADER_BYTES,
    MAX_XLSX_BYTES,
    Kind,
    SourceFile,
)

if TYPE_CHECKING:
    from concurrent.futures import Future

# --------------------------------------------------------------------------------------------- reading


#: A blank line, in a file with LF or CRLF line endings.
_BLANK_LINE = re.compile(rb"\n\r?\n")


def fingerprint(path: Path) -> tuple[str, bool]:
    """The file's sha256, and whether it has a blank line (read once, in chunks)."""
    sha, blank, _text = scan(path)
    return sha, blank


def scan(path: Path) -> tuple[str, bool, bool]:
    """The file's sha256, whether it has a blank line, and whether it is plain UTF-8 text (no NUL byte),
    in one read, in chunks."""
    import codecs

    h = hashlib.sha256()
    blank = False
    text = True
    decoder = codecs.getincrementaldecoder("utf-8")()
    tail = b""
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            if not blank:
                # A blank line may straddle two chunks. One regular expression finds either line ending's
                # blank line at about twice the speed of two substring searches.
                blank = _BLANK_LINE.search(tail + chunk) is not None
                tail = chunk[-2:]
            if text:
                # A plain-ASCII chunk is valid UTF-8 unless a multi-byte sequence was left open before it.
                if not chunk.isascii() or decoder.getstate()[0]:
                    try:
                        decoder.decode(chunk)
                    except UnicodeDecodeError:
                        text = False
                text = text and b"\x00" not in chunk
    if text:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            text = False
    return h.hexdigest(), blank, text


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class ScanAhead:
    """The scans (:func:`scan`) of a load's files, started at once in a background thread: reading a large
    file for its fingerprint then overlaps the database work done before its turn (hashing releases the
    interpreter lock). :meth:`get` gives a file's scan, scanned again if the file changed since."""

    def __init__(self, paths: Iterable[Path]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kap-scan")
        self._jobs: dict[Path, tuple[tuple[int, int, int] | None, Future[tuple[str, bool, bool]]]] = {}
        for path in paths:
            if path not in self._jobs and path.is_file():
                self._jobs[path] = (_stamp(path), self._pool.submit(scan, path))

    def get(self, path: Path) -> tuple[str, bool, bool]:
        job = self._jobs.pop(path, None)
        if job is not None:
            stamp, future = job
            result = future.result()
            if stamp is not None and _stamp(path) == stamp:
                return result
        return scan(path)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


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


#: How every CSV file is read: each cell as text, RFC 4180 quoting, UTF-8.
_CSV_OPTIONS = (
    "all_varchar = true, header = true, quote = '\"', escape = '\"', encoding = 'utf-8', null_padding = false"
)


def _view_csv(con: duckdb.DuckDBPyConnection, src: SourceFile, view: str, n_columns: int) -> bool:
    """A CSV file of plain UTF-8 text (:func:`scan`) as temp view ``view`` over the file itself, with every
    cell as text: nothing is copied; the rows are read where they are used (a malformed row further down
    is found by that read: :func:`_diagnose_csv` then names it). Returns whether the file has a data row."""
    # The path and delimiter are values, not SQL: session variables the view reads (a view holds no
    # parameters).
    con.execute("SET VARIABLE " + view + "_path = ?", [str(src.path)])
    con.execute("SET VARIABLE " + view + "_delim = ?", [_delimiter(src.path)])
    try:
        con.execute(
            "CREATE OR REPLACE TEMP VIEW "
            + view
            + " AS SELECT * FROM read_csv(getvariable('"
            + view
            + "_path'), "
            "delim = getvariable('" + view + "_delim'), " + _CSV_OPTIONS + ")"
        )
        row = con.execute("SELECT count(*) FROM (SELECT 1 FROM " + view + " LIMIT 1)").fetchone()
    except duckdb.Error:
        con.execute("DROP VIEW IF EXISTS " + view)
        raise _diagnose_csv(src.path, n_columns) from None
    return bool(row and row[0])


def _read_raw(con: duckdb.DuckDBPyConnection, src: SourceFile, table: str, n_columns: int) -> int:
    """Load the file into temp table ``table`` with every cell as text; return the row offset."""
    suffix = src.path.suffix.lower()
    try:
        if suffix in _CSV_SUFFIXES:
            try:
                con.execute(
                    "CREATE TEMP TABLE "
                    + table
                    + " AS SELECT * FROM read_csv(?, delim = ?, "
                    + _CSV_OPTIONS
                    + ")",
                    [str(src.path), _delimiter(src.path)],
                )
            except duckdb.Error:
                raise _diagnose_csv(src.path, n_columns) from None
            return 2
        if suffix in (".parquet", ".pq"):
            import pyarrow as pa
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
