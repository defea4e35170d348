"""CSV files that a spreadsheet cannot turn into formulas (OWASP "CSV injection").

Every CSV the app or the command line writes goes through here: a text cell that begins with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return gets a leading apostrophe, so Excel, LibreOffice and Google Sheets
show it as text instead of running it. Numbers are left alone (a negative change stays a number); only text
cells are touched.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported where a frame is written, not by DuckDB-only callers
    import duckdb
    import pandas as pd

#: Text cells starting with one of these are neutralised (tab and CR too: some spreadsheets strip them first).
FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")


def neutralise(text: str) -> str:
    """``=HYPERLINK(...)`` → ``'=HYPERLINK(...)``; other text unchanged."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def neutralise_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells are neutralised (vectorised per text column)."""
    import pandas as pd

    out = frame.copy()
    for col in out.columns:
        series = out[col]
        if not (pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series)):
            continue
        text = series.map(lambda v: isinstance(v, str))
        if not text.any():
            continue
        risky = text & series.where(text, "").astype(str).str.startswith(FORMULA_PREFIXES)
        if risky.any():
            out[col] = series.where(~risky, "'" + series.where(risky, "").astype(str))
    return out


def _prepare(frame: pd.DataFrame, kwargs: dict[str, object]) -> pd.DataFrame:
    """Neutralise, and quote a cell holding a carriage return (Python's csv writer quotes only the
    characters of its line terminator, so with ``\n`` alone a lone CR would split the row)."""
    import pandas as pd

    safe = neutralise_frame(frame)
    kwargs.setdefault("index", False)
    has_cr = any(
        safe[c].map(lambda v: isinstance(v, str) and "\r" in v).any()
        for c in safe.columns
        if pd.api.types.is_object_dtype(safe[c]) or pd.api.types.is_string_dtype(safe[c])
    )
    if has_cr:
        kwargs.setdefault("lineterminator", "\r\n")
    return safe


def to_csv_bytes(frame: pd.DataFrame, **kwargs: object) -> bytes:
    """The frame as UTF-8 CSV bytes (no index), formulas neutralised: for download buttons."""
    text = _prepare(frame, kwargs).to_csv(**kwargs)  # type: ignore[call-overload]
    return str(text).encode("utf-8")


def write_csv(frame: pd.DataFrame, target: str | os.PathLike[str], **kwargs: object) -> None:
    """Write the frame as CSV (no index), formulas neutralised."""
    _prepare(frame, kwargs).to_csv(Path(target), **kwargs)  # type: ignore[call-overload]


def sql_neutralised(expr: str) -> str:
    """SQL for one text expression neutralised as :func:`neutralise` does (``expr`` is our own column name or
    expression, never user input): for files written by DuckDB itself."""
    prefixes = "'=', '+', '-', '@', chr(9), chr(13)"
    return f"CASE WHEN left({expr}, 1) IN ({prefixes}) THEN chr(39) || {expr} ELSE {expr} END"


def write_query_csv(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    params: Sequence[object] | dict[str, object] | None,
    target: str | os.PathLike[str],
) -> int:
    """Write a query's rows as CSV with DuckDB's own writer (no pandas): a header, cells quoted only when they
    must be, empty for NULL, booleans ``true``/``false``, dates ``YYYY-MM-DD``. The query must already
    neutralise its text columns (:func:`sql_neutralised`). Returns the number of rows written.

    One ``COPY (query) TO file``: the query runs once and COPY reports the rows it wrote. The file name is a
    parameter too (``$kap_copy_target``, or the last ``?``), never text in the SQL."""
    if isinstance(params, dict):
        args: Sequence[object] | dict[str, object] = {**params, "kap_copy_target": str(target)}
        copy = "COPY (" + sql + ") TO $kap_copy_target (HEADER)"
    else:
        args = [*(params or ()), str(target)]
        copy = "COPY (" + sql + ") TO ? (HEADER)"
    with con.cursor() as cur:  # a fresh cursor: the caller's connection may hold an unfinished result
        rows = cur.execute(copy, args).fetchall()
    return int(rows[0][0]) if rows else 0
