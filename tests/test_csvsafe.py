"""Every CSV written neutralises formula cells (=, +, -, @, tab, CR); numbers stay numbers."""

from __future__ import annotations

import csv
from pathlib import Path

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
