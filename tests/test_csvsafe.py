"""Every CSV written neutralises formula cells (=, +, -, @, tab, CR); numbers stay numbers."""

from __future__ import annotations

import csv
from pathlib import Path

import duckdb
import pandas as pd

from kapdata import csvsafe


def test_text_cells_that_start_like_a_formula_get_an_apostrophe(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "clinic": ['=HYPERLINK("http://x")', "+1", "-2+3", "@SUM(A1)", "\tx", "\ry", "North", None],
            "change": [-5, 3, -1, 0, 2, 1, -7, 4],
        }
    )
    out = tmp_path / "t.csv"
    csvsafe.write_csv(frame, out)
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["clinic"] for r in rows] == [
        '\'=HYPERLINK("http://x")',
        "'+1",
        "'-2+3",
        "'@SUM(A1)",
        "'\tx",
        "'\ry",
        "North",
        "",
    ]
    assert [r["change"] for r in rows] == ["-5", "3", "-1", "0", "2", "1", "-7", "4"]
    assert csvsafe.to_csv_bytes(frame).decode().splitlines()[1].startswith("\"'=HYPERLINK")
    assert frame["clinic"].iloc[0].startswith("=")  # the caller's frame is not changed


def test_duckdb_copy_neutralises_exactly_as_the_python_writer(tmp_path: Path) -> None:
    # Files DuckDB writes itself (COPY: outcomes --out, the research export's data.csv) neutralise text in
    # the SQL; it must agree with ``neutralise`` cell for cell, quoting and line breaks included.
    values = [
        '=HYPERLINK("http://x")',
        "+1",
        "-2+3",
        "@SUM(A1)",
        "\tx",
        "\ry",
        "a=b",
        "a,b",
        'say "hi"',
        "two\nlines",
        "",
        "North",
    ]
    con = duckdb.connect()
    con.execute("CREATE TABLE t (i INTEGER, clinic VARCHAR, change INTEGER)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?)", [(i, v, -i) for i, v in enumerate(values)])
    con.execute("INSERT INTO t VALUES (99, NULL, -1)")
    out = tmp_path / "t.csv"
    sql = f"SELECT {csvsafe.sql_neutralised('clinic')} AS clinic, change FROM t ORDER BY i"
    assert csvsafe.write_query_csv(con, sql, None, out) == len(values) + 1
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["clinic"] for r in rows] == [csvsafe.neutralise(v) for v in values] + [""]
    assert [r["change"] for r in rows] == [str(-i) for i in range(len(values))] + ["-1"]
