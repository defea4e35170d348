"""Staging: a source becomes a temp table of text cells with a row number per row (``raw_<n>``)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import duckdb

from kapdata.ingest.contract import (
    COLUMNS,
    IGNORABLE_COLUMNS,
    ITEM_COLUMN_RE,
    REQUIRED,
    Kind,
    OnError,
    SourceFile,
    identifier_kind,
    normalize_header,
)
from kapdata.ingest.readers import (
    _CSV_SUFFIXES,
    FileError,
    ScanAhead,
    _classify,
    _diagnose_csv,
    _read_raw,
    _spreadsheet_rows,
    _view_csv,
    read_header,
    scan,
)
from kapdata.ingest.report import FileResult, LoadResult, Problem

if TYPE_CHECKING:
    import pyarrow as pa

#: The name of a file's staged copy (``raw_<n>``), the only table names built into SQL here.
_WORK_TABLE = re.compile(r"raw_\d{1,6}")

# ------------------------------------------------------------------------------------------- the load


@dataclass
class _Staged:
    src: SourceFile
    result: FileResult
    table: str  # the parsed rows: a view over ``raw`` (``<table>_clean``: the typed rows and ``ok``)
    raw: str
    columns: dict[str, int]  # normalized name -> position (1-based) in raw
    item_numbers: list[int]
    row_expr: str = "rowid"  # SQL over the raw table giving each row's number as the reports show it
    index: int = 0  # the file's number in this load: its rows' errors are ``row_errors.file_no``
    clean_ready: bool = False  # the typed ``<table>_clean`` exists (and must be marked too)
    unmarked: bool = False  # errors recorded that are not yet marked not ok in the tables
    n_bad: int = 0  # rows with at least one error
    has_duplicate_keys: bool = True  # rows sharing a key in the file (identical ones collapse on insert)
    has_kap_error: bool = False  # a converted source: ``_kap_error`` holds a row's refusal by its converter
    label: str | None = None  # a converted part: "" or the scale it holds (None: a native file)
    #: ``raw`` is a view over the CSV file itself (nothing copied): the row numbers are those of the
    #: ``<table>_clean`` rows (kept in file order); ``Stager._text_table`` makes the copy if it is needed.
    direct: bool = False
    define_parsed: Callable[[], str] | None = None  # the SQL creating the parsed view (re-run on a copy)
    #: Set for a direct file: ``<table>_clean`` is a view numbering the rows of the table
    #: ``<table>_clean_rows`` (written in the file's order): row_no = rowid + clean_base.
    clean_base: int | None = None
    #: A direct file's size and modification time when staged (it must not change while it is read), and
    #: whether ``result.rows_read`` is its count yet (known once its rows are checked, or counted).
    file_stat: tuple[int, int] | None = None
    counted: bool = True


class Stager:
    """A load's first step: read each source into a staged table (the base of :class:`Loader`)."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        on_error: OnError = "reject",
        today: dt.date | None = None,
        new_patients: bool = False,
        scans: ScanAhead | None = None,
    ) -> None:
        self.con = con
        self.scans = scans  # the files' scans, started ahead (None: each is scanned in its turn)
        self.on_error = on_error
        self.new_patients = new_patients
        self.today = today or dt.date.today()
        self.result = LoadResult()
        #: A file read where it is (``_Staged.direct``) was refused when its rows were read: a malformed row
        #: further down, or it changed since it was staged.
        self.refused_late = False

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
        stat = os.stat(src.path) if src.path.exists() else None
        sha, has_blank_line, plain_text = ("", False, False)
        if src.path.exists():
            sha, has_blank_line, plain_text = self.scans.get(src.path) if self.scans else scan(src.path)
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
        # A plain UTF-8 CSV file without blank lines is read where it is (a view), not copied: one copy of a
        # large file less to write and to hold in memory. Anything else is copied as text first.
        direct = src.path.suffix.lower() in _CSV_SUFFIXES and plain_text and not has_blank_line
        try:
            if direct:
                raw += "_csv"
                count: tuple[int, int] | None = (_view_csv(self.con, src, raw, len(header)), 0)
                offset = 2
            else:
                offset = _read_raw(self.con, src, raw, len(header))
        except FileError as exc:
            self._problem(src, str(exc), row=exc.row, column=None, value=None)
            return None
        described = self.con.execute("DESCRIBE " + raw).fetchall()
        positions: dict[str, int] = {}
        for pos, row in enumerate(described, start=1):
            name = normalize_header(header[pos - 1] if len(header) == len(described) else str(row[0]))
            positions.setdefault(name, pos)
        if not direct:
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
            import pyarrow as pa

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
            if direct:  # refused as a whole: the report says how many rows that is
                with contextlib.suppress(duckdb.Error):  # a malformed row: no count, as a copy gives none
                    row = self.con.execute("SELECT count(*) FROM " + raw).fetchone()
                    result.rows_read = int(row[0]) if row else 0
                self.con.execute("DROP VIEW IF EXISTS " + raw)
            return None
        if direct:
            result.rows_read = 0  # it has rows: counted as they are checked (``_same_rows``)
        return _Staged(
            src,
            result,
            f"parsed_{index}",
            raw,
            positions,
            items if kind == "scores" else [],
            row_expr=(
                "CAST(NULL AS BIGINT)"  # numbered in <table>_clean, from its rows' order
                if direct
                else "_kap_row"
                if mapped
                else f"CAST(rowid + {offset} AS BIGINT)"
            ),
            index=index,
            direct=direct,
            file_stat=(stat.st_size, stat.st_mtime_ns) if direct and stat else None,
            counted=not direct,
        )

    def _stage_table(
        self, index: int, src: SourceFile, kind: Kind, table: pa.Table, sha: str, label: str = ""
    ) -> _Staged | None:
        """Stage rows a converter made (FHIR, REDCap, a column mapping): the contract's columns as text,
        ``_kap_row`` (the source's own row, line or entry number) and optionally ``_kap_error`` (non-empty:
        the converter refuses that row, for that reason). They then go through the same validation as a
        native file's rows."""
        import pyarrow as pa
        import pyarrow.compute  # noqa: F401 - pa.compute

        result = FileResult(src.name, kind, sha)
        self.result.files.append(result)
        raw = f"raw_{index}"
        names = [normalize_header(n) if not n.startswith("_kap_") else n for n in table.column_names]
        keep = [
            i
            for i, n in enumerate(names)
            if n in COLUMNS[kind]
            or n in ("_kap_row", "_kap_error")
            or (kind == "scores" and ITEM_COLUMN_RE.match(n))
        ]
        arrays = []
        for i in keep:
            column = table.column(i)
            if names[i] == "_kap_row":
                arrays.append(pa.compute.cast(column, pa.int64()))
            else:
                arrays.append(pa.compute.cast(column, pa.string()))
        converted_rows = pa.table(arrays, names=[names[i] for i in keep])  # noqa: F841 - read by name below
        # DuckDB's replacement scan finds the local table by name (register() fails while a result is open).
        self.con.execute("CREATE OR REPLACE TEMP TABLE " + raw + " AS SELECT * FROM converted_rows")
        positions = {names[i]: pos for pos, i in enumerate(keep, start=1)}
        result.rows_read = table.num_rows
        items = sorted(int(m.group(1)) for n in positions if (m := ITEM_COLUMN_RE.match(n)))
        missing = [c for c in REQUIRED[kind] if c not in positions]
        if "_kap_row" not in positions:
            missing.append("_kap_row")
        for column in missing:
            self._problem(
                src, "the converted rows lack a required column", row=None, column=column, value=None
            )
        if missing:
            return None
        return _Staged(
            src,
            result,
            f"parsed_{index}",
            raw,
            positions,
            items if kind == "scores" else [],
            row_expr="_kap_row",
            index=index,
            has_kap_error="_kap_error" in positions,
            label=label,
        )

    def _create_parsed(self, st: _Staged, build: Callable[[], str]) -> None:
        """Create the parsed view; ``build`` gives its SQL from ``st`` as it is then (run again by
        :meth:`_text_table` once the cells are copied)."""
        st.define_parsed = build
        self.con.execute(build())

    def count_rows(self, st: _Staged) -> None:
        """A direct file's number of rows, if it is not known yet (a file not checked: a repeat)."""
        if not st.counted:
            row = self.con.execute("SELECT count(*) FROM " + st.raw).fetchone()
            st.result.rows_read, st.counted = (int(row[0]) if row else 0), True

    def _same_rows(self, st: _Staged, table: str) -> int | None:
        """The first rowid of ``table``, a read of a direct file (its count becomes the file's rows read),
        if the file is still as it was when staged and the read has as many rows as an earlier one; else
        (another program wrote to the file between the reads) the file is refused and None."""
        row = self.con.execute("SELECT count(*), coalesce(min(rowid), 0) FROM " + table).fetchone()
        n = int(row[0]) if row else 0
        stat = os.stat(st.src.path) if st.src.path.exists() else None
        same = stat is not None and (stat.st_size, stat.st_mtime_ns) == st.file_stat
        if same and (not st.counted or n == st.result.rows_read):
            st.result.rows_read, st.counted = n, True
            return int(row[1]) if row else 0
        self.refused_late = True
        self._problem(
            st.src,
            "the file changed while it was being loaded (another program wrote to it): nothing from it was "
            "loaded; load it again once it is saved",
            row=None,
            column=None,
            value=None,
        )
        return None

    def _number_clean(self, st: _Staged) -> None:
        """A direct file's checked rows (``<table>_clean_rows``, written in the file's order) get their row
        numbers from that order, the first data row 2 (under the header): ``<table>_clean`` is the view
        giving each its number (nothing rewritten)."""
        clean = st.table + "_clean"
        base = self._same_rows(st, clean + "_rows")
        if base is None:
            self.con.execute("UPDATE " + clean + "_rows SET ok = false")
            base = 0
        st.clean_base = 2 - base
        self.con.execute(
            f"CREATE OR REPLACE TEMP VIEW {clean} AS "
            f"SELECT CAST(rowid + {st.clean_base} AS BIGINT) AS row_no, * FROM {clean}_rows"
        )

    def _text_table(self, st: _Staged) -> None:
        """A direct file's cells copied as text into ``raw_<n>``, numbered as its ``<table>_clean`` rows are,
        and the parsed view re-created over the copy: only a file with bad rows needs it (to show their
        values and write its rejects file)."""
        if not st.direct:
            return
        view, table = st.raw, st.raw.removesuffix("_csv")
        # Table names cannot be query parameters: these are our own work tables (raw_<n>, raw_<n>_csv), never
        # a name a file supplied.
        if not (_WORK_TABLE.fullmatch(table) and view in (table, table + "_csv")):
            raise ValueError(f"not a staging work table: {view!r}")
        self.con.execute("CREATE OR REPLACE TEMP TABLE " + table + " AS SELECT * FROM " + view)
        base = self._same_rows(st, table)
        st.raw, st.direct = table, False
        self.con.execute("DROP VIEW IF EXISTS " + view)
        st.row_expr = f"CAST(rowid + {2 - (base or 0)} AS BIGINT)"
        if st.define_parsed is not None:
            self.con.execute(st.define_parsed())

    def _select_text(self, st: _Staged, columns: Iterable[str]) -> str:
        """SELECT list projecting the raw table's columns (by position) as trimmed text or NULL."""
        parts = [f"{st.row_expr} AS row_no"]
        if st.has_kap_error:
            parts.append(f"{_text_cell(st.columns['_kap_error'])} AS kap_error")
        for name in columns:
            pos = st.columns.get(name)
            if pos is None:
                parts.append(f"CAST(NULL AS VARCHAR) AS {name}")
            else:
                parts.append(f"{_text_cell(pos, one_char=name.startswith('item_'))} AS {name}")
        return ", ".join(parts)


def _text_cell(pos: int, *, one_char: bool = False) -> str:
    """The raw cell at ``pos`` as trimmed text, NULL where it is empty or blank. ``one_char`` for columns
    whose cells are mostly one character or empty (item answers): such a cell that is one printable
    ASCII character other than a space is already trimmed, and passes untouched (trimming 20 item
    columns was a seventh of the scores checking pass)."""
    cell = f"CAST(#{pos} AS VARCHAR)"
    trimmed = f"nullif(trim({cell}), '')"
    if not one_char:
        return trimmed
    plain = f"{cell} IS NULL OR (strlen({cell}) = 1 AND {cell} BETWEEN '!' AND '~')"
    return f"CASE WHEN {plain} THEN {cell} ELSE {trimmed} END"
