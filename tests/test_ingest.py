"""Import: file formats, every validation rule (with its report and an unchanged database), re-import,
quarantine, batches and undo."""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from kapdata import db, ingest, sample
from tests.conftest import (
    PATIENTS_HEADER,
    SCORES_HEADER,
    SESSIONS_HEADER,
    TODAY,
    csv_lines,
    errors_text,
    load,
    query,
    sessions_rows,
    snapshot,
    write_text,
)


def rejected(db_file: Path, *files: Path, today: dt.date = TODAY) -> ingest.LoadResult:
    """Load expecting rejection; asserts the database did not change and returns the result."""
    before = snapshot(db_file)
    with pytest.raises(ingest.ImportRejected) as info:
        load(db_file, *files, today=today)
    assert snapshot(db_file) == before
    return info.value.result


def only_error(result: ingest.LoadResult) -> ingest.Problem:
    assert len(result.errors) == 1, errors_text(result)
    return result.errors[0]


def scores_file(
    tmp_path: Path, rows: list[tuple], name: str = "scores.csv", header: str = SCORES_HEADER
) -> Path:
    return write_text(tmp_path / name, csv_lines(header, rows))


def phq9_items_header() -> str:
    return SCORES_HEADER + "," + ",".join(f"item_{n}" for n in range(1, 10))


# ------------------------------------------------------------------------------------------ formats


def test_bom_crlf_header_case_and_spacing_and_instrument_aliases(tmp_path, db_file):
    text = (
        " Patient_ID , INSTRUMENT,Assessed On ,Total\n"
        "P1,phq9,2025-01-05,12\n"
        "P1,PHQ 9,2025-02-05,8\n"
        "P1,Phq_9,2025-03-05,7\n"
        "P1,gad-7,2025-01-05,10\n"
        "P1,pcl5,2025-01-05,40\n"
    )
    f = write_text(tmp_path / "scores.csv", text, bom=True, crlf=True)
    result = load(db_file, f)
    assert result.committed
    assert result.files[0].kind == "scores"
    assert result.files[0].rows_loaded == 5
    rows = query(
        db_file, "SELECT patient_id, instrument, CAST(assessed_on AS VARCHAR), total FROM scores ORDER BY ALL"
    )
    assert rows == [
        ("P1", "GAD-7", "2025-01-05", 10),
        ("P1", "PCL-5", "2025-01-05", 40),
        ("P1", "PHQ-9", "2025-01-05", 12),
        ("P1", "PHQ-9", "2025-02-05", 8),
        ("P1", "PHQ-9", "2025-03-05", 7),
    ]


def test_crlf_patients_file_with_bom_loads_trimmed_values_and_aliases(tmp_path, db_file):
    text = (
        "PATIENT_ID,Clinic ,Provider,Age_Band,Sex,Primary_Condition,Route\n"
        "P1, North ,Dr A,25-34,F,ptsd,intravenous\n"
    )
    f = write_text(tmp_path / "patients.csv", text, bom=True, crlf=True)
    load(db_file, f)
    assert query(
        db_file,
        "SELECT patient_id, clinic, provider, age_band, sex, primary_condition, route, "
        "attributes_known FROM patients",
    ) == [("P1", "North", "Dr A", "25-34", "female", "PTSD", "IV", True)]


def test_parquet_input_loads_and_reports_rows_from_1(tmp_path, db_file):
    frame = pd.DataFrame(
        {
            "Patient_ID": ["P1", "P1", "P2"],
            "Instrument": ["PHQ-9", "GAD-7", "PHQ-9"],
            "assessed_on": [dt.date(2025, 1, 5), dt.date(2025, 1, 5), dt.date(2025, 1, 6)],
            "total": [12, 9, 11],
        }
    )
    good = tmp_path / "scores.parquet"
    frame.to_parquet(good, index=False)
    result = load(db_file, good)
    assert result.files[0].rows_loaded == 3
    assert query(db_file, "SELECT count(*) FROM scores") == [(3,)]

    bad = frame.assign(total=[12, 30, 11])
    bad_path = tmp_path / "bad.parquet"
    bad.to_parquet(bad_path, index=False)
    res = rejected(db_file, bad_path)
    assert errors_text(res) == [
        "bad.parquet, row 2, column total: value '30': total out of range: GAD-7 totals are 0-21"
    ]


def test_xlsx_input_with_items_and_real_dates(tmp_path, db_file):
    items = {f"item_{n}": [1, 0] for n in range(1, 10)}
    frame = pd.DataFrame(
        {
            "patient_id": ["P1", "P2"],
            "instrument": ["PHQ-9", "PHQ-9"],
            "assessed_on": [pd.Timestamp("2025-01-05"), pd.Timestamp("2025-01-06 14:30")],
            **items,
        }
    )
    path = tmp_path / "scores.xlsx"
    frame.to_excel(path, index=False, engine="openpyxl")
    result = load(db_file, path)
    assert result.files[0].rows_loaded == 2
    rows = query(
        db_file,
        "SELECT patient_id, CAST(assessed_at AS VARCHAR), total, items FROM scores ORDER BY patient_id",
    )
    assert rows == [("P1", "2025-01-05 00:00:00", 9, [1] * 9), ("P2", "2025-01-06 14:30:00", 0, [0] * 9)]


def test_xlsx_rows_are_numbered_like_the_spreadsheet(tmp_path, base_db):
    frame = pd.DataFrame(
        {
            "patient_id": ["P1", "P2"],
            "instrument": ["PHQ-9", "XYZ"],
            "assessed_on": ["2025-01-05"] * 2,
            "total": [3, 4],
        }
    )
    path = tmp_path / "scores.xlsx"
    frame.to_excel(path, index=False, engine="openpyxl")
    problem = only_error(rejected(base_db, path))
    assert (problem.file, problem.row, problem.column, problem.value) == (
        "scores.xlsx",
        3,
        "instrument",
        "XYZ",
    )


def test_items_only_file_computes_the_total(tmp_path, db_file):
    header = "patient_id,instrument,assessed_on," + ",".join(f"item{n}" for n in range(1, 8))
    f = write_text(
        tmp_path / "gad.csv", csv_lines(header, [("P1", "GAD-7", "2025-01-05", 3, 3, 3, 2, 1, 0, 0)])
    )
    load(db_file, f)
    assert query(db_file, "SELECT instrument, total, items FROM scores") == [
        ("GAD-7", 12, [3, 3, 3, 2, 1, 0, 0])
    ]


def test_scores_of_different_lengths_in_one_file(tmp_path, db_file):
    """A PCL-5 row and a GAD-7 row share item columns: the GAD-7 row leaves item_8.. empty."""
    header = "patient_id,instrument,assessed_on,total," + ",".join(f"item_{n}" for n in range(1, 21))
    pcl = ["P1", "PCL-5", "2025-01-05", 40] + [2] * 20
    gad = ["P1", "GAD-7", "2025-01-05", 7] + [1] * 7 + [None] * 13
    f = write_text(tmp_path / "scores.csv", csv_lines(header, [pcl, gad]))
    load(db_file, f)
    assert query(db_file, "SELECT instrument, total, len(items) FROM scores ORDER BY 1") == [
        ("GAD-7", 7, 7),
        ("PCL-5", 40, 20),
    ]


# ------------------------------------------------------------------------------- validation rules


def test_unknown_instrument_is_rejected_with_file_row_column_value(tmp_path, base_db):
    f = scores_file(tmp_path, [("P1", "PHQ-9", "2025-01-05", 10), ("P1", "BDI-II", "2025-01-05", 10)])
    problem = only_error(rejected(base_db, f))
    assert str(problem) == (
        "scores.csv, row 3, column instrument: value 'BDI-II': "
        "unknown instrument; expected one of PHQ-9, GAD-7, PCL-5"
    )


@pytest.mark.parametrize(
    ("instrument", "n_items", "bad_item", "bad_value", "expected_range"),
    [("PHQ-9", 9, 4, 4, "0-3"), ("GAD-7", 7, 7, -1, "0-3"), ("PCL-5", 20, 20, 5, "0-4")],
)
def test_item_out_of_range_is_rejected(
    tmp_path, base_db, instrument, n_items, bad_item, bad_value, expected_range
):
    header = "patient_id,instrument,assessed_on," + ",".join(f"item_{n}" for n in range(1, n_items + 1))
    values = [1] * n_items
    values[bad_item - 1] = bad_value
    f = scores_file(tmp_path, [("P1", instrument, "2025-01-05", *values)], header=header)
    problem = only_error(rejected(base_db, f))
    assert str(problem) == (
        f"scores.csv, row 2, column item_{bad_item}: value '{bad_value}': "
        f"item out of range: {instrument} items are {expected_range}"
    )


@pytest.mark.parametrize(
    ("instrument", "total", "expected"),
    [("PHQ-9", 28, "0-27"), ("GAD-7", 22, "0-21"), ("PCL-5", 81, "0-80"), ("PHQ-9", -1, "0-27")],
)
def test_total_out_of_range_is_rejected(tmp_path, base_db, instrument, total, expected):
    f = scores_file(tmp_path, [("P1", instrument, "2025-01-05", total)])
    problem = only_error(rejected(base_db, f))
    assert str(problem) == (
        f"scores.csv, row 2, column total: value '{total}': "
        f"total out of range: {instrument} totals are {expected}"
    )


def test_huge_numbers_are_reported_not_crashed_on(tmp_path, base_db):
    """Values beyond SMALLINT used to raise a DuckDB conversion error instead of a report."""
    f = scores_file(tmp_path, [("P1", "PHQ-9", "2025-01-05", 99999)])
    problem = only_error(rejected(base_db, f))
    assert problem.reason == "total out of range: PHQ-9 totals are 0-27"
    header = SESSIONS_HEADER + ",bp_sys_pre,dissociation"
    s = write_text(
        tmp_path / "sessions.csv", csv_lines(header, [("B1", "2025-03-08", "IV", 35, 99999, 1e12)])
    )
    res = rejected(base_db, s)
    assert [(p.row, p.column, p.value) for p in res.errors] == [
        (2, "bp_sys_pre", "99999"),
        (2, "dissociation", "1000000000000.0"),
    ]
    items = scores_file(
        tmp_path,
        [("P1", "PHQ-9", "2025-01-05", 5, 99999, 0, 0, 0, 0, 0, 0, 0, 0)],
        header=phq9_items_header(),
    )
    res = rejected(base_db, items)
    assert [(p.column, p.reason) for p in res.errors] == [
        ("item_1", "item out of range: PHQ-9 items are 0-3"),
        ("total", "total 5 is not the sum of the items (99999)"),
    ]


def test_each_item_rule_alone_refuses_its_row(tmp_path, base_db):
    # The checking pass tests every item answer at once; each rule must still refuse a row it alone
    # breaks, and be named for that row only (rows 2-4 and 6 break one item rule each; row 5 is clean).
    header = phq9_items_header() + ",item_10"
    f = scores_file(
        tmp_path,
        [
            ("P1", "PHQ-9", "2025-01-05", 8, 1, 1, "1.5", 1, 1, 1, 1, 1, 1, ""),
            ("P1", "GAD-7", "2025-01-05", 7, 1, 1, 1, 1, 1, 1, 1, 0, "", ""),
            ("P1", "PHQ-9", "2025-01-06", 12, 4, 1, 1, 1, 1, 1, 1, 1, 1, ""),
            ("P1", "PHQ-9", "2025-01-07", 9, 1, 1, 1, 1, 1, 1, 1, 1, 1, ""),
            ("P1", "PHQ-9", "2025-01-08", 9, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0),
        ],
        header=header,
    )
    assert errors_text(rejected(base_db, f)) == [
        "scores.csv, row 2, column item_3: value '1.5': not a whole number",
        "scores.csv, row 3, column item_8: value '0': GAD-7 has 7 items: item_8 must be empty",
        "scores.csv, row 4, column item_1: value '4': item out of range: PHQ-9 items are 0-3",
        "scores.csv, row 6, column item_10: value '0': PHQ-9 has 9 items: item_10 must be empty",
    ]


def test_not_a_whole_number(tmp_path, base_db):
    f = scores_file(tmp_path, [("P1", "PHQ-9", "2025-01-05", "10.5"), ("P1", "GAD-7", "2025-01-05", "ten")])
    res = rejected(base_db, f)
    assert errors_text(res) == [
        "scores.csv, row 2, column total: value '10.5': not a whole number",
        "scores.csv, row 3, column total: value 'ten': not a whole number",
    ]


def test_total_not_the_sum_of_items_is_rejected(tmp_path, base_db):
    f = scores_file(
        tmp_path, [("P1", "PHQ-9", "2025-01-05", 12, 1, 1, 1, 1, 1, 1, 1, 1, 3)], header=phq9_items_header()
    )
    problem = only_error(rejected(base_db, f))
    assert (
        str(problem)
        == "scores.csv, row 2, column total: value '12': total 12 is not the sum of the items (11)"
    )


def test_total_equal_to_the_sum_of_items_is_accepted(tmp_path, base_db):
    f = scores_file(
        tmp_path, [("P1", "PHQ-9", "2025-01-05", 11, 1, 1, 1, 1, 1, 1, 1, 1, 3)], header=phq9_items_header()
    )
    load(base_db, f)
    assert query(base_db, "SELECT total, items FROM scores WHERE patient_id = 'P1'") == [(11, [1] * 8 + [3])]


def items_header(n_items: int, total: bool = True) -> str:
    return (SCORES_HEADER if total else "patient_id,instrument,assessed_on") + "".join(
        f",item_{n}" for n in range(1, n_items + 1)
    )


def test_phq9_with_item_9_missing_is_prorated_and_the_safety_flag_stays_unknown(tmp_path, base_db):
    """Items 1-8 sum to 14: total = 14 / 8 x 9 = 15.75, rounded to 16; item 9 is never prorated."""
    f = scores_file(
        tmp_path,
        [("B1", "PHQ-9", "2025-02-25", None, 2, 2, 2, 2, 2, 2, 1, 1, None)],
        header=phq9_items_header(),
    )
    result = load(base_db, f)
    assert result.committed and result.errors == []
    assert query(
        base_db, "SELECT total, items, prorated FROM scores WHERE assessed_on = DATE '2025-02-25'"
    ) == [(16, [2, 2, 2, 2, 2, 2, 1, 1, None], True)]
    assert query(
        base_db, "SELECT safety_flag, prorated FROM scores_phased WHERE assessed_on = DATE '2025-02-25'"
    ) == [(None, True)]
    # The earlier scores keep prorated = false.
    assert query(base_db, "SELECT count(*) FROM scores WHERE NOT prorated") == [(2,)]
    info = [p for p in result.problems if p.severity == "info" and p.column == "items"]
    assert len(info) == 1 and info[0].file == "scores.csv" and info[0].row is None
    assert info[0].reason.startswith("1 row(s) with 1-2 missing item answers: the total is prorated")
    assert info[0].reason.endswith("Rows 2")
    assert result.files[0].rows_prorated == 1
    assert ", 1 with a prorated total" in result.files[0].summary()


def test_gad7_with_one_item_missing_is_prorated(tmp_path, db_file):
    """Six answers sum to 3: 3 / 6 x 7 = 3.5, a half, rounds up to 4; the total given agrees."""
    f = scores_file(
        tmp_path, [("P1", "GAD-7", "2025-01-05", 4, 1, 1, 1, 0, 0, None, 0)], header=items_header(7)
    )
    load(db_file, f)
    assert query(db_file, "SELECT total, items, prorated FROM scores") == [
        (4, [1, 1, 1, 0, 0, None, 0], True)
    ]
    assert query(db_file, "SELECT safety_flag FROM scores_phased") == [(False,)]  # GAD-7 has no safety item


def test_item_answers_are_trimmed_and_a_blank_answer_is_missing(tmp_path, base_db):
    """Padded answers (spaces, a no-break space) are read as their number, a blank cell as no answer;
    a one-character answer that is not a number is refused, as a longer one is."""
    header = "patient_id,instrument,assessed_on" + "".join(f",item_{n}" for n in range(1, 8))
    good = "P1,GAD-7,2025-02-25, 3,3 ,\u00a02,2, ,1,0"  # item 5 is one space
    f = write_text(tmp_path / "gad.csv", f"{header}\n{good}\n")
    assert load(base_db, f).committed
    # Six answers sum to 11: 11 / 6 x 7 = 12.8, rounded to 13.
    assert query(
        base_db, "SELECT total, items, prorated FROM scores WHERE assessed_on = DATE '2025-02-25'"
    ) == [(13, [3, 3, 2, 2, None, 1, 0], True)]
    bad = write_text(tmp_path / "bad.csv", f"{header}\nP1,GAD-7,2025-02-26,x,3,3,3,3,3,3\n")
    assert [str(p) for p in rejected(base_db, bad).errors] == [
        "bad.csv, row 2, column item_1: value 'x': not a whole number"
    ]


def test_phq9_with_two_items_missing_and_no_item_columns_beyond_8_is_prorated(tmp_path, db_file):
    """A file without an item_9 column: item 9 counts as missing. Items 1-7 sum to 7: 7 / 7 x 9 = 9."""
    f = scores_file(
        tmp_path,
        [("P1", "PHQ-9", "2025-01-05", 1, 1, 1, 1, 1, 1, 1, None)],
        header=items_header(8, total=False),
    )
    load(db_file, f)
    assert query(db_file, "SELECT total, items, prorated FROM scores") == [
        (9, [1, 1, 1, 1, 1, 1, 1, None, None], True)
    ]


def test_total_that_differs_from_the_prorated_total_is_rejected(tmp_path, base_db):
    f = scores_file(
        tmp_path,
        [("B1", "PHQ-9", "2025-02-25", 14, 2, 2, 2, 2, 2, 2, 1, 1, None)],
        header=phq9_items_header(),
    )
    problem = only_error(rejected(base_db, f))
    assert str(problem) == (
        "scores.csv, row 2, column total: value '14': total 14 is not the prorated total of the items "
        "(16: the mean of the 8 answered items times 9, rounded; missing: item_9)"
    )


def test_three_missing_phq9_items_are_rejected_with_the_rule(tmp_path, base_db):
    f = scores_file(
        tmp_path,
        [
            ("B1", "PHQ-9", "2025-02-25", None, 1, 1, 1, None, 1, 1, None, 1, None),
            ("B1", "PHQ-9", "2025-02-26", 12, 1, 1, 1, None, 1, 1, None, 1, None),  # a total does not help
        ],
        header=phq9_items_header(),
    )
    result = rejected(base_db, f)
    expected = (
        "column items: value '6': too many missing item answers: 3 of 9 PHQ-9 items missing "
        "(item_4, item_7, item_9); a total is prorated only when at most 2 are missing "
        "(NHS Data Dictionary rule): give the missing answers, or only a total"
    )
    assert errors_text(result) == [f"scores.csv, row 2, {expected}", f"scores.csv, row 3, {expected}"]


def test_incomplete_pcl5_items_are_refused_not_prorated(tmp_path, base_db):
    values = [2] * 20
    values[3] = None
    f = scores_file(tmp_path, [("B1", "PCL-5", "2025-02-25", *values)], header=items_header(20, total=False))
    problem = only_error(rejected(base_db, f))
    assert str(problem) == (
        "scores.csv, row 2, column items: value '19': PCL-5 totals are not prorated: give all 20 items "
        "or only a total (19 of 20 items given; missing: item_4)"
    )


def test_reimporting_a_prorated_row_is_a_no_op_and_a_different_answer_conflicts(tmp_path, base_db):
    rows = [("B1", "PHQ-9", "2025-02-25", None, 2, 2, 2, 2, 2, 2, 1, 1, None)]
    load(base_db, scores_file(tmp_path, rows, header=phq9_items_header()))
    before = snapshot(base_db)
    # The same row in another file (another sha256): already present, nothing changes.
    again = scores_file(
        tmp_path, rows + [("B1", "PHQ-9", "2025-02-20", 18, *[None] * 9)], "again.csv", phq9_items_header()
    )
    res = load(base_db, again)
    assert (res.files[0].rows_loaded, res.files[0].rows_already_present) == (0, 2)
    assert snapshot(base_db)["scores"] == before["scores"]
    # The same key with item 9 answered is a different score: a conflict, not a silent replace.
    answered = [("B1", "PHQ-9", "2025-02-25", None, 2, 2, 2, 2, 2, 2, 1, 1, 2)]
    problem = only_error(rejected(base_db, scores_file(tmp_path, answered, "other.csv", phq9_items_header())))
    assert (problem.row, problem.column) == (2, "assessed_on")
    assert "is already in the database (batch 4) with different values" in problem.reason


def test_items_beyond_the_instrument_must_be_empty(tmp_path, base_db):
    header = "patient_id,instrument,assessed_on," + ",".join(f"item_{n}" for n in range(1, 9))
    f = scores_file(tmp_path, [("P1", "GAD-7", "2025-01-05", 1, 1, 1, 1, 1, 1, 1, 2)], header=header)
    problem = only_error(rejected(base_db, f))
    assert (
        str(problem) == "scores.csv, row 2, column item_8: value '2': GAD-7 has 7 items: item_8 must be empty"
    )


@pytest.mark.parametrize(
    ("name", "header", "row", "missing"),
    [
        ("scores.csv", "patient_id,instrument,total", ("P1", "PHQ-9", 10), "assessed_on"),
        ("scores.csv", "patient_id,assessed_on,total", ("P1", "2025-01-05", 10), "instrument"),
        ("scores.csv", "instrument,assessed_on,total", ("PHQ-9", "2025-01-05", 10), "patient_id"),
        (
            "scores.csv",
            "patient_id,instrument,assessed_on",
            ("P1", "PHQ-9", "2025-01-05"),
            "total (or item_1 … item_N)",
        ),
        ("sessions.csv", "session_date,dose_mg", ("2025-01-05", 35), "patient_id"),
    ],
)
def test_missing_required_column_is_rejected(tmp_path, base_db, name, header, row, missing):
    f = write_text(tmp_path / name, csv_lines(header, [row]))
    problem = only_error(rejected(base_db, f))
    kind = "scores" if name == "scores.csv" else "sessions"
    assert str(problem) == f"{name}, column {missing}: missing required column for a {kind} file"
    assert problem.row is None and problem.value is None


def test_file_of_unknown_kind_is_rejected(tmp_path, base_db):
    f = write_text(tmp_path / "other.csv", "a,b\n1,2\n")
    problem = only_error(rejected(base_db, f))
    assert problem.file == "other.csv" and "cannot tell what kind of file this is" in problem.reason


@pytest.mark.parametrize(
    "value",
    [
        "2025-13-01",
        "2025-02-30",
        "05/01/2025",
        "2025/01/05",
        "2025-1-05",
        "yesterday",
        "2025-01-05T25:00",
        "2025-01-05-05",
    ],
)
def test_unparseable_score_date_is_rejected(tmp_path, base_db, value):
    f = scores_file(tmp_path, [("P1", "PHQ-9", value, 10)])
    problem = only_error(rejected(base_db, f))
    assert str(problem) == (
        f"scores.csv, row 2, column assessed_on: value '{value}': not a date: expected YYYY-MM-DD or an ISO "
        "date-time such as 2026-06-01T09:30:00+01:00"
    )


def test_missing_score_date_is_rejected(tmp_path, base_db):
    f = scores_file(tmp_path, [("P1", "PHQ-9", "", 10)])
    problem = only_error(rejected(base_db, f))
    assert (problem.row, problem.column, problem.value, problem.reason) == (
        2,
        "assessed_on",
        None,
        "assessed_on is required",
    )


def test_future_dates_are_rejected(tmp_path, base_db):
    f = scores_file(
        tmp_path, [("P1", "PHQ-9", "2025-06-02T08:00:00+02:00", 10), ("P1", "GAD-7", "2025-06-01", 5)]
    )
    problem = only_error(rejected(base_db, f, today=dt.date(2025, 6, 1)))
    assert str(problem) == (
        "scores.csv, row 2, column assessed_on: value '2025-06-02T08:00:00+02:00': "
        "date is in the future (today is 2025-06-01)"
    )
    s = write_text(tmp_path / "sessions.csv", csv_lines(SESSIONS_HEADER, sessions_rows("B1", ["2025-06-02"])))
    problem = only_error(rejected(base_db, s, today=dt.date(2025, 6, 1)))
    assert str(problem) == (
        "sessions.csv, row 2, column session_date: value '2025-06-02': "
        "date is in the future (today is 2025-06-01)"
    )


def test_real_today_is_the_default_for_future_dates(tmp_path, base_db):
    tomorrow = (dt.date.today() + dt.timedelta(days=1)).isoformat()
    f = scores_file(tmp_path, [("P1", "PHQ-9", tomorrow, 10)])
    before = snapshot(base_db)
    with pytest.raises(ingest.ImportRejected) as info:
        ingest.load_files([f], base_db)
    assert snapshot(base_db) == before
    assert "date is in the future" in only_error(info.value.result).reason


def test_unparseable_session_date_is_rejected(tmp_path, base_db):
    s = write_text(
        tmp_path / "sessions.csv", csv_lines(SESSIONS_HEADER, sessions_rows("B1", ["2025-03-08", "March 9"]))
    )
    problem = only_error(rejected(base_db, s))
    assert (problem.file, problem.row, problem.column, problem.value) == (
        "sessions.csv",
        3,
        "session_date",
        "March 9",
    )
    assert problem.reason.startswith("not a date")


def test_duplicate_score_with_different_value_in_file_is_rejected(tmp_path, base_db):
    f = scores_file(
        tmp_path,
        [
            ("P1", "PHQ-9", "2025-01-05", 10),
            ("P1", "GAD-7", "2025-01-05", 8),
            ("P1", "phq9", "2025-01-05", 11),
        ],
    )
    res = rejected(base_db, f)
    assert errors_text(res) == [
        "scores.csv, row 2, column assessed_on: value '2025-01-05': duplicate score for the same patient, "
        "instrument and time with different values; see row(s) 4",
        "scores.csv, row 4, column assessed_on: value '2025-01-05': duplicate score for the same patient, "
        "instrument and time with different values; see row(s) 2",
    ]


def test_duplicate_score_identical_in_file_loads_once(tmp_path, db_file):
    f = scores_file(tmp_path, [("P1", "PHQ-9", "2025-01-05", 10), ("P1", "PHQ 9", "2025-01-05", 10)])
    res = load(db_file, f)
    assert (res.files[0].rows_loaded, res.files[0].rows_already_present) == (1, 1)
    assert query(db_file, "SELECT count(*) FROM scores") == [(1,)]


def test_duplicate_score_with_different_value_against_database_is_rejected(tmp_path, base_db):
    f = scores_file(tmp_path, [("B1", "PHQ-9", "2025-02-20", 17)])
    problem = only_error(rejected(base_db, f))
    assert str(problem) == (
        "scores.csv, row 2, column assessed_on: value '2025-02-20': a score for the same patient, "
        "instrument and time is already in the database (batch 3) with different values; "
        "undo that batch first to replace it"
    )


def test_same_day_different_time_is_not_a_duplicate(tmp_path, base_db):
    f = scores_file(tmp_path, [("B1", "PHQ-9", "2025-02-20T18:00", 17)])
    load(base_db, f)
    assert query(base_db, "SELECT count(*) FROM scores WHERE assessed_on = DATE '2025-02-20'") == [(2,)]


def test_duplicate_session_with_different_values_is_rejected(tmp_path, base_db):
    s = write_text(tmp_path / "sessions.csv", csv_lines(SESSIONS_HEADER, [("B1", "2025-03-01", "IM", 35)]))
    problem = only_error(rejected(base_db, s))
    assert (problem.row, problem.column, problem.value) == (2, "session_date", "2025-03-01")
    assert "already in the database (batch 2)" in problem.reason


def test_patient_with_other_attributes_than_in_database_is_rejected(tmp_path, base_db):
    p = write_text(
        tmp_path / "patients.csv",
        csv_lines(PATIENTS_HEADER, [("B1", "South", "Dr A", "25-34", "female", "MDD", "IV")]),
    )
    problem = only_error(rejected(base_db, p))
    assert str(problem) == (
        "patients.csv, row 2, column patient_id: value 'B1': patient already in the database (batch 1) with "
        "other attributes (clinic North); undo that batch first to replace it"
    )


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("age_band", "30-39", "unknown age band; expected one of 18-24, 25-34, 35-44, 45-54, 55-64, 65+"),
        ("sex", "x", "unknown sex; expected one of female, male, other, unknown"),
        ("primary_condition", "OCD", "unknown condition; expected one of PTSD, MDD, GAD, other"),
        ("route", "rectal", "unknown route; expected one of IV, IM, SL, IN, oral"),
        ("patient_id", "has space", "patient_id must be 1-64 characters of letters, digits, '-' or '_'"),
    ],
)
def test_patient_attribute_values_are_validated(tmp_path, base_db, column, value, reason):
    row = {
        "patient_id": "P9",
        "clinic": "North",
        "provider": "Dr A",
        "age_band": "35-44",
        "sex": "male",
        "primary_condition": "GAD",
        "route": "IM",
    }
    row[column] = value
    p = write_text(tmp_path / "patients.csv", csv_lines(PATIENTS_HEADER, [tuple(row.values())]))
    problem = only_error(rejected(base_db, p))
    assert str(problem) == f"patients.csv, row 2, column {column}: value '{value}': {reason}"


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("dissociation", "25", "dissociation (CADSS-6 total) must be between 0 and 24"),
        (
            "side_effects",
            "nausea;itching",
            "unknown side effect; use ';' between any of nausea, vomiting, "
            "dizziness, headache, hypertension, anxiety, sedation, other",
        ),
        ("route", "rectal", "unknown route; expected one of IV, IM, SL, IN, oral"),
        ("dose_mg", "-1", "dose_mg must be between 0 and 2000"),
        ("dose_mg_per_kg", "1_0", "not a number"),
        ("dose_mg_per_kg", "10.5", "dose_mg_per_kg must be between 0 and 10"),
        ("bp_sys_pre", "120.5", "not a whole number"),
        ("bp_sys_post", "301", "systolic blood pressure (mmHg) must be between 50 and 300"),
        ("bp_dia_pre", "high", "not a whole number"),
        ("bp_dia_post", "19", "diastolic blood pressure (mmHg) must be between 20 and 200"),
    ],
)
def test_session_values_are_validated(tmp_path, base_db, column, value, reason):
    row = {
        "patient_id": "B1",
        "session_date": "2025-03-08",
        "route": "IV",
        "dose_mg": "35",
        "dose_mg_per_kg": "0.5",
        "bp_sys_pre": "120",
        "bp_dia_pre": "80",
        "bp_sys_post": "130.0",
        "bp_dia_post": "85",
        "dissociation": "7",
        "side_effects": "nausea; Dizziness",
    }
    row[column] = value
    s = write_text(tmp_path / "sessions.csv", csv_lines(",".join(row), [tuple(row.values())]))
    problem = only_error(rejected(base_db, s))
    assert str(problem) == f"sessions.csv, row 2, column {column}: value '{value}': {reason}"


def test_session_values_are_stored_normalised(tmp_path, db_file):
    header = (
        "patient_id,session_date,route,dose_mg,dose_mg_per_kg,bp_sys_pre,bp_dia_pre,bp_sys_post,bp_dia_post,"
        "dissociation,side_effects"
    )
    s = write_text(
        tmp_path / "sessions.csv",
        csv_lines(
            header,
            [("P1", "2025-03-08", "sublingual", 200, 2.5, 130, 85, 150, "95.0", 12, "Nausea; dizziness;")],
        ),
    )
    load(db_file, s)
    assert query(db_file, "SELECT * EXCLUDE (batch_id) FROM sessions") == [
        ("P1", dt.date(2025, 3, 8), "SL", 200.0, 2.5, 130, 85, 150, 95, 12, "nausea;dizziness")
    ]


def test_unknown_patient_is_created_with_unknown_attributes_and_reported_as_info(tmp_path, db_file):
    f = scores_file(tmp_path, [("P2", "PHQ-9", "2025-01-05", 10), ("P1", "PHQ-9", "2025-01-05", 10)])
    res = load(db_file, f)
    assert res.errors == []
    infos = [p for p in res.problems if p.severity == "info"]
    assert [str(p) for p in infos] == [
        "scores.csv, column patient_id: 2 patient(s) are in no patients file; "
        "created with unknown attributes: P1, P2"
    ]
    assert res.files[0].new_patients == 2
    assert query(db_file, "SELECT * FROM patients ORDER BY patient_id") == [
        ("P1", None, None, None, None, None, None, False, 1, None),
        ("P2", None, None, None, None, None, None, False, 1, None),
    ]
    # A later patients file fills the attributes in.
    p = write_text(
        tmp_path / "patients.csv",
        csv_lines(PATIENTS_HEADER, [("P1", "North", "Dr A", "25-34", "female", "MDD", "IV")]),
    )
    res = load(db_file, p)
    assert res.files[0].rows_loaded == 1
    assert query(db_file, "SELECT * FROM patients WHERE patient_id = 'P1'") == [
        ("P1", "North", "Dr A", "25-34", "female", "MDD", "IV", True, 1, 2)
    ]


def test_patients_named_in_the_same_call_are_not_unknown(tmp_path, db_file):
    """Files load patients → sessions → scores whatever order they are given in."""
    sc = scores_file(tmp_path, [("P1", "PHQ-9", "2025-01-05", 10)])
    p = write_text(
        tmp_path / "patients.csv",
        csv_lines(PATIENTS_HEADER, [("P1", "North", "Dr A", "25-34", "female", "MDD", "IV")]),
    )
    res = load(db_file, sc, p)
    assert [p.severity for p in res.problems] == []
    assert query(db_file, "SELECT patient_id, attributes_known FROM patients") == [("P1", True)]


@pytest.mark.parametrize(
    ("column", "what"),
    [
        ("Name", "a name"),
        ("first name", "a name"),
        ("Patient_Name", "a name"),
        ("DOB", "a birth date"),
        ("Date of Birth", "a birth date"),
        ("birth_date", "a birth date"),
        ("Address", "an address"),
        ("zip code", "an address"),
        ("Phone", "a phone number"),
        ("mobile_number", "a phone number"),
        ("Email", "an e-mail address"),
        ("e-mail", "an e-mail address"),
        ("SSN", "a national identity number"),
        ("MRN", "a medical record number"),
        ("medical record number", "a medical record number"),
    ],
)
def test_identifier_columns_are_refused(tmp_path, base_db, column, what):
    f = write_text(
        tmp_path / "scores.csv",
        f"patient_id,instrument,assessed_on,total,{column}\nP1,PHQ-9,2025-01-05,10,x\n",
    )
    problem = only_error(rejected(base_db, f))
    assert str(problem) == (
        f"scores.csv, row 1, column {column}: column looks like {what}, a direct identifier: the data must "
        "arrive anonymized (remove the column and load again)"
    )


def test_identifier_column_is_refused_even_when_empty_and_in_quarantine_mode(tmp_path, base_db):
    f = write_text(tmp_path / "patients.csv", "patient_id,clinic,email\nP5,North,\n")
    before = snapshot(base_db)
    with pytest.raises(ingest.ImportRejected):
        load(base_db, f, on_error="quarantine")
    assert snapshot(base_db) == before


def test_one_bad_row_rejects_every_file_of_the_call(tmp_path, base_db):
    p = write_text(
        tmp_path / "patients.csv",
        csv_lines(PATIENTS_HEADER, [("P1", "North", "Dr A", "25-34", "female", "MDD", "IV")]),
    )
    s = write_text(tmp_path / "sessions.csv", csv_lines(SESSIONS_HEADER, sessions_rows("P1", ["2025-03-01"])))
    sc = scores_file(tmp_path, [("P1", "PHQ-9", "2025-01-05", 10), ("P1", "PHQ-9", "2025-02-05", 30)])
    res = rejected(base_db, p, s, sc)
    assert errors_text(res) == [
        "scores.csv, row 3, column total: value '30': total out of range: PHQ-9 totals are 0-27"
    ]
    assert not res.committed


def test_reject_into_a_new_database_leaves_no_data(tmp_path, db_file):
    sc = scores_file(tmp_path, [("P1", "PHQ-9", "2025-01-05", 30)])
    with pytest.raises(ingest.ImportRejected) as info:
        load(db_file, sc)
    assert "import rejected, the database is unchanged" in str(info.value)
    snap = snapshot(db_file)
    assert all(snap[t] == [] for t in ("patients", "sessions", "scores", "batches"))


def test_unreadable_and_missing_files_are_rejected(tmp_path, base_db):
    empty = write_text(tmp_path / "empty.csv", "")
    problem = only_error(rejected(base_db, empty))
    assert (problem.file, problem.reason) == ("empty.csv", "the file is empty")
    problem = only_error(rejected(base_db, tmp_path / "nope.csv"))
    assert (problem.file, problem.reason) == ("nope.csv", "file not found")
    other = write_text(tmp_path / "scores.doc", "{}")
    assert "unsupported file type" in only_error(rejected(base_db, other)).reason
    not_fhir = write_text(tmp_path / "scores.json", "{}")  # .json is read as FHIR R4
    assert "not a FHIR resource" in only_error(rejected(base_db, not_fhir)).reason
    broken = write_text(tmp_path / "broken.xlsx", "not a workbook")
    assert only_error(rejected(base_db, broken)).reason.startswith("cannot be read as xlsx")


def test_dry_run_reports_and_changes_nothing(tmp_path, base_db):
    sc = scores_file(tmp_path, [("P1", "PHQ-9", "2025-01-05", 10), ("P1", "PHQ-9", "2025-02-05", 30)])
    before = snapshot(base_db)
    res = ingest.load_files([sc], base_db, dry_run=True, today=TODAY, new_patients=True)
    assert len(res.errors) == 1 and not res.committed
    assert snapshot(base_db) == before


# ------------------------------------------------------------------------- files read where they are


def _many_scores(n: int, bad: dict[int, str]) -> str:
    """``n`` PHQ-9 rows (each its own patient), a total of 99 (out of range) on the given data rows (1-based)
    with that row's text in the total cell instead."""
    lines = [SCORES_HEADER]
    for i in range(1, n + 1):
        lines.append(f"Q{i:06d},PHQ-9,2025-01-05,{bad.get(i, str(i % 28))}")
    return "\n".join(lines) + "\n"


def test_a_large_csv_is_read_in_place_and_its_bad_rows_keep_their_numbers_and_text(
    tmp_path, base_db, monkeypatch
):
    # Large enough for several chunks read in parallel: the row numbers come from the rows' order.
    from kapdata.ingest import staging

    calls: list[str] = []
    real = staging._view_csv
    monkeypatch.setattr(staging, "_view_csv", lambda *a: calls.append(a[2]) or real(*a))
    bad = {7: "99", 12_345: "x1", 59_999: "7.5"}
    f = write_text(tmp_path / "many.csv", _many_scores(60_000, bad))
    rejects = tmp_path / "rejects.csv"
    res = load(base_db, f, on_error="quarantine", rejects=rejects)
    assert calls == ["raw_0_csv"]  # read where it is, not copied first
    got = res.files[0]
    assert (got.rows_read, got.rows_loaded, got.rows_rejected) == (60_000, 59_997, 3)
    out = pd.read_csv(rejects, dtype=str, keep_default_na=False)
    # Data row i is spreadsheet row i + 1 (under the header); the values are the file's own text.
    assert out[["patient_id", "total", "_row"]].values.tolist() == [
        ["Q000007", "99", "8"],
        ["Q012345", "x1", "12346"],
        ["Q059999", "7.5", "60000"],
    ]
    assert query(base_db, "SELECT count(*), sum(total) FROM scores WHERE patient_id LIKE 'Q%'") == [
        (59_997, sum(i % 28 for i in range(1, 60_001) if i not in bad))
    ]


def test_a_file_that_changes_while_it_is_loaded_is_refused_whole(tmp_path, base_db, monkeypatch):
    from kapdata.ingest.staging import Stager

    f = write_text(tmp_path / "s.csv", _many_scores(50, {}))
    real = Stager._stage

    def stage_then_append(self, index, src):  # another program writes to the file after it was staged
        staged = real(self, index, src)
        with open(src.path, "a", encoding="utf-8") as out:
            out.write("Q999999,PHQ-9,2025-01-06,4\n")
        return staged

    monkeypatch.setattr(Stager, "_stage", stage_then_append)
    problem = only_error(rejected(base_db, f))
    assert (problem.file, problem.row) == ("s.csv", None)
    assert problem.reason.startswith("the file changed while it was being loaded")


def test_a_malformed_row_far_down_a_large_file_is_named(tmp_path, base_db):
    # Beyond what the CSV reader samples when it opens the file: found when the rows are read.
    text = _many_scores(40_000, {}).split("\n")
    text[30_000] += ",extra"  # data row 30,000 is spreadsheet row 30,001
    f = write_text(tmp_path / "s.csv", "\n".join(text))
    problem = only_error(rejected(base_db, f))
    assert (problem.file, problem.row) == ("s.csv", 30_001)
    assert problem.reason.startswith("row 30001 has 5 fields, more than the 4 columns of the header")


def test_a_bad_byte_far_down_an_ignored_column_still_refuses_the_file(tmp_path, base_db):
    # Beyond what the CSV reader samples, in a column the contract ignores (a rejects file's _errors).
    rows = [f"Q{i:06d},PHQ-9,2025-01-05,3,".encode() for i in range(1, 40_001)]
    rows[35_000] += b"caf\xe9"
    f = tmp_path / "s.csv"
    f.write_bytes(b"\n".join([(SCORES_HEADER + ",_errors").encode(), *rows]) + b"\n")
    problem = only_error(rejected(base_db, f))
    assert problem.reason.startswith("the file is not UTF-8 text"), problem.reason


# --------------------------------------------------------------------------------------- re-import


def test_identical_reimport_of_a_whole_file_is_a_no_op(tmp_path, base_db):
    before = snapshot(base_db)
    res = load(base_db, tmp_path / "base_scores.csv")
    assert res.files[0].identical_to_batch == 3
    assert res.files[0].batch_id is None
    assert (
        res.files[0].summary()
        == "base_scores.csv: identical to batch 3, already loaded; nothing to do (2 rows)"
    )
    assert snapshot(base_db) == before


def test_identical_reimport_of_rows_is_a_no_op(tmp_path, base_db):
    sc = scores_file(tmp_path, [("B1", "PHQ-9", "2025-02-20", 18), ("B1", "PHQ-9", "2025-05-10", 7)])
    p = write_text(
        tmp_path / "patients.csv",
        csv_lines(PATIENTS_HEADER, [("B1", "North", "Dr A", "25-34", "female", "MDD", "IV")]),
    )
    s = write_text(
        tmp_path / "sessions.csv",
        csv_lines(SESSIONS_HEADER, sessions_rows("B1", ["2025-03-01", "2025-03-15"])),
    )
    res = load(base_db, sc, p, s)
    counts = {
        f.file: (f.rows_read, f.rows_loaded, f.rows_already_present, f.rows_rejected) for f in res.files
    }
    assert counts == {"scores.csv": (2, 1, 1, 0), "patients.csv": (1, 0, 1, 0), "sessions.csv": (2, 1, 1, 0)}
    assert query(base_db, "SELECT count(*) FROM scores") == [(3,)]
    assert query(base_db, "SELECT count(*) FROM sessions") == [(3,)]
    assert query(base_db, "SELECT count(*) FROM patients") == [(1,)]


# -------------------------------------------------------------------------------------- quarantine


def test_quarantine_loads_good_rows_and_writes_rejects_with_reasons(tmp_path, base_db):
    sc = scores_file(
        tmp_path,
        [
            ("P1", "PHQ-9", "2025-01-05", 10),
            ("P1", "XYZ", "2025-01-05", 10),
            ("P1", "GAD-7", "2025-01-05", 10),
            ("P2", "PHQ-9", "2025-13-01", 99),
        ],
    )
    rejects = tmp_path / "out" / "rejects.csv"
    res = load(base_db, sc, on_error="quarantine", rejects=rejects)
    assert res.committed
    f = res.files[0]
    assert (f.rows_read, f.rows_loaded, f.rows_rejected) == (4, 2, 2)
    assert f.rejects_path == rejects
    assert query(
        base_db, "SELECT patient_id, instrument FROM scores WHERE batch_id = ? ORDER BY 2", [f.batch_id]
    ) == [
        ("P1", "GAD-7"),
        ("P1", "PHQ-9"),
    ]
    out = pd.read_csv(rejects, dtype=str, keep_default_na=False)
    assert list(out.columns) == ["patient_id", "instrument", "assessed_on", "total", "_row", "_errors"]
    assert out.to_dict(orient="records") == [
        {
            "patient_id": "P1",
            "instrument": "XYZ",
            "assessed_on": "2025-01-05",
            "total": "10",
            "_row": "3",
            "_errors": "instrument: unknown instrument; expected one of PHQ-9, GAD-7, PCL-5",
        },
        {
            "patient_id": "P2",
            "instrument": "PHQ-9",
            "assessed_on": "2025-13-01",
            "total": "99",
            "_row": "5",
            "_errors": "assessed_on: not a date: expected YYYY-MM-DD or an ISO date-time such as "
            "2026-06-01T09:30:00+01:00; total: total out of range: PHQ-9 totals are 0-27",
        },
    ]
    assert query(
        base_db,
        "SELECT rows_read, rows_loaded, rows_rejected, on_error FROM batches WHERE batch_id = ?",
        [f.batch_id],
    ) == [(4, 2, 2, "quarantine")]


def test_quarantine_default_rejects_file_sits_beside_the_input(tmp_path, base_db):
    sc = scores_file(tmp_path, [("P1", "PHQ-9", "2025-01-05", 10), ("P1", "PHQ-9", "2025-01-06", 28)])
    res = load(base_db, sc, on_error="quarantine")
    assert res.files[0].rejects_path == tmp_path / "scores.rejects.csv"
    assert (tmp_path / "scores.rejects.csv").exists()


def test_quarantine_with_only_good_rows_writes_no_rejects(tmp_path, base_db):
    sc = scores_file(tmp_path, [("P1", "PHQ-9", "2025-01-05", 10)])
    res = load(base_db, sc, on_error="quarantine")
    assert res.files[0].rejects_path is None
    assert not (tmp_path / "scores.rejects.csv").exists()


def test_on_error_must_be_known(tmp_path, db_file):
    with pytest.raises(ValueError):
        ingest.load_files([], db_file, on_error="ignore")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ batches, undo


def test_every_file_is_one_batch_with_counts_and_hash(tmp_path, base_db):
    with db.reader(base_db) as con:
        batches = ingest.list_batches(con)
    assert [
        (b["batch_id"], b["file_name"], b["kind"], b["rows_read"], b["rows_loaded"], b["rows_rejected"])
        for b in batches
    ] == [
        (1, "base_patients.csv", "patients", 1, 1, 0),
        (2, "base_sessions.csv", "sessions", 2, 2, 0),
        (3, "base_scores.csv", "scores", 2, 2, 0),
    ]
    assert batches[2]["sha256"] == ingest.fingerprint(tmp_path / "base_scores.csv")[0]
    assert all(isinstance(b["loaded_at"], dt.datetime) and b["undone_at"] is None for b in batches)


def test_undo_removes_exactly_that_batch(tmp_path, base_db):
    sc1 = scores_file(
        tmp_path, [("B1", "GAD-7", "2025-02-20", 12), ("B1", "PHQ-9", "2025-05-01", 6)], name="one.csv"
    )
    sc2 = scores_file(
        tmp_path, [("B1", "PHQ-9", "2025-05-01", 6), ("B1", "PCL-5", "2025-02-20", 50)], name="two.csv"
    )
    load(base_db, sc1)
    before = snapshot(base_db)
    load(base_db, sc2)
    counts = ingest.undo_batch(5, base_db)
    assert counts["scores"] == 1  # the PHQ-9 row of two.csv was already present: it belongs to batch 4
    after = snapshot(base_db)
    assert after["scores"] == before["scores"]
    assert after["patients"] == before["patients"] and after["sessions"] == before["sessions"]
    undone_at = 11  # batches: batch_id, ..., loaded_at, undone_at (then later columns such as demo)
    assert [b[0] for b in after["batches"] if b[undone_at] is not None] == [5]
    with pytest.raises(ingest.UndoError, match="already undone"):
        ingest.undo_batch(5, base_db)
    with pytest.raises(ingest.UndoError, match="no batch 99"):
        ingest.undo_batch(99, base_db)
    assert snapshot(base_db) == after  # a refused undo changes nothing


def test_undone_file_can_be_loaded_again(tmp_path, base_db):
    ingest.undo_batch(3, base_db)
    assert query(base_db, "SELECT count(*) FROM scores") == [(0,)]
    res = load(base_db, tmp_path / "base_scores.csv")
    assert res.files[0].identical_to_batch is None and res.files[0].rows_loaded == 2


def test_undo_patients_batch_still_referenced_keeps_patients_with_unknown_attributes(tmp_path, base_db):
    before_scores = snapshot(base_db)["scores"]
    counts = ingest.undo_batch(1, base_db)
    assert counts["patients_kept"] == 1 and counts["patients"] == 0
    assert query(
        base_db,
        "SELECT patient_id, clinic, provider, age_band, sex, primary_condition, route, "
        "attributes_known, attributes_batch_id FROM patients",
    ) == [("B1", None, None, None, None, None, None, False, None)]
    assert snapshot(base_db)["scores"] == before_scores
    # Undoing what still used the patient removes the patient too.
    ingest.undo_batch(2, base_db)
    assert query(base_db, "SELECT count(*) FROM patients") == [(1,)]
    ingest.undo_batch(3, base_db)
    assert query(base_db, "SELECT count(*) FROM patients") == [(0,)]


def test_undo_patients_batch_not_referenced_removes_patients(tmp_path, db_file):
    p = write_text(
        tmp_path / "patients.csv",
        csv_lines(PATIENTS_HEADER, [("P1", "North", "Dr A", "25-34", "female", "MDD", "IV")]),
    )
    load(db_file, p)
    counts = ingest.undo_batch(1, db_file)
    assert counts["patients"] == 1
    assert query(db_file, "SELECT count(*) FROM patients") == [(0,)]


def test_undo_scores_batch_keeps_patient_whose_attributes_came_from_a_patients_file(tmp_path, db_file):
    """Scores first (patient created unknown), then the patients file: undoing the scores keeps them."""
    sc = scores_file(tmp_path, [("P1", "PHQ-9", "2025-01-05", 10)])
    p = write_text(
        tmp_path / "patients.csv",
        csv_lines(PATIENTS_HEADER, [("P1", "North", "Dr A", "25-34", "female", "MDD", "IV")]),
    )
    load(db_file, sc)
    load(db_file, p)
    ingest.undo_batch(1, db_file)
    assert query(
        db_file, "SELECT patient_id, clinic, attributes_known, batch_id, attributes_batch_id FROM patients"
    ) == [("P1", "North", True, 2, 2)]
    ingest.undo_batch(2, db_file)
    assert query(db_file, "SELECT count(*) FROM patients") == [(0,)]


def test_undo_patients_batch_that_filled_in_attributes_resets_them(tmp_path, db_file):
    sc = scores_file(tmp_path, [("P1", "PHQ-9", "2025-01-05", 10)])
    p = write_text(
        tmp_path / "patients.csv",
        csv_lines(PATIENTS_HEADER, [("P1", "North", "Dr A", "25-34", "female", "MDD", "IV")]),
    )
    load(db_file, sc)
    load(db_file, p)
    counts = ingest.undo_batch(2, db_file)
    assert counts["patients_reset"] == 1
    assert query(db_file, "SELECT * FROM patients") == [
        ("P1", None, None, None, None, None, None, False, 1, None)
    ]


def test_load_bumps_data_version_and_undo_too(tmp_path, base_db):
    v0 = snapshot(base_db)["data_version"]
    ingest.undo_batch(3, base_db)
    assert int(snapshot(base_db)["data_version"]) == int(v0) + 1


def test_one_connection_can_load_and_undo_several_times(tmp_path, db_file):
    a = scores_file(tmp_path, [("P1", "PHQ-9", "2025-01-05", 10)], name="a.csv")
    b = scores_file(tmp_path, [("P1", "PHQ-9", "2025-01-06", 9)], name="b.csv")
    c = scores_file(tmp_path, [("P1", "PHQ-9", "2025-01-07", 30)], name="c.csv")
    with db.session(db_file) as con:
        assert ingest.load_with_connection(con, [a], today=TODAY, new_patients=True).committed
        with pytest.raises(ingest.ImportRejected):
            ingest.load_with_connection(con, [c], today=TODAY, new_patients=True)
        assert ingest.load_with_connection(con, [b], today=TODAY, new_patients=True).committed
        ingest.undo_with_connection(con, 1)
        assert ingest.load_with_connection(con, [a], today=TODAY, new_patients=True).committed
        assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchone() == (0,)
        assert con.execute("SELECT CAST(assessed_on AS VARCHAR) FROM scores ORDER BY 1").fetchall() == [
            ("2025-01-05",),
            ("2025-01-06",),
        ]


def test_the_same_file_twice_in_one_call_loads_once(tmp_path, db_file):
    sc = scores_file(tmp_path, [("P1", "PHQ-9", "2025-01-05", 10)])
    copy = write_text(tmp_path / "copy.csv", sc.read_text())
    res = load(db_file, sc, copy)
    assert [f.batch_id for f in res.files] == [1, None]
    assert res.files[1].identical_to_batch == 1
    assert res.files[1].summary() == "copy.csv: identical to batch 1, already loaded; nothing to do (1 rows)"
    assert query(db_file, "SELECT count(*) FROM batches") == [(1,)]


def test_quarantine_of_several_files_names_one_rejects_file_each(tmp_path, base_db):
    a = scores_file(
        tmp_path, [("P1", "PHQ-9", "2025-01-05", 10), ("P1", "PHQ-9", "2025-01-06", 28)], name="a.csv"
    )
    s = write_text(
        tmp_path / "s.csv",
        csv_lines(SESSIONS_HEADER, [("B1", "2025-03-08", "IV", 35), ("B1", "2025-03-09", "XX", 1)]),
    )
    res = load(base_db, a, s, on_error="quarantine", rejects=tmp_path / "rej.csv")
    assert {f.file: f.rejects_path for f in res.files} == {
        "a.csv": tmp_path / "rej-a.csv",
        "s.csv": tmp_path / "rej-s.csv",
    }
    assert pd.read_csv(tmp_path / "rej-s.csv")["_row"].tolist() == [3]
    assert {f.file: (f.rows_loaded, f.rows_rejected) for f in res.files} == {"a.csv": (1, 1), "s.csv": (1, 1)}


def test_rows_after_blank_lines_keep_their_spreadsheet_numbers(tmp_path, base_db):
    # DuckDB skips blank lines; a spreadsheet shows them as rows. Reports follow the spreadsheet.
    f = write_text(
        tmp_path / "scores.csv",
        "patient_id,instrument,assessed_on,total\r\nP1,PHQ-9,2025-02-20,5\r\n\r\n"
        "P1,PHQ-9,2025-02-21,50\r\n\r\n\r\nP1,GAD-7,2025-02-22,99\r\n",
    )
    before = snapshot(base_db)
    result = rejected(base_db, f)
    assert [(p.row, p.column, p.value) for p in result.errors] == [(4, "total", "50"), (7, "total", "99")]
    assert snapshot(base_db) == before
    out = tmp_path / "rejects.csv"
    ingest.load_files([f], base_db, on_error="quarantine", rejects=out, today=TODAY, new_patients=True)
    rejects = pd.read_csv(out)
    assert rejects["_row"].tolist() == [4, 7]
    assert "_kap_row" not in rejects.columns


def test_a_file_refused_as_a_whole_is_marked_refused(tmp_path, base_db):
    good = scores_file(tmp_path, [("P1", "PHQ-9", "2025-02-20", 5)])
    bad = write_text(
        tmp_path / "named.csv", "patient_id,name,instrument,assessed_on,total\nP1,x,PHQ-9,2025-02-20,5\n"
    )
    result = rejected(base_db, good, bad)
    assert [(f.file, f.refused) for f in result.files] == [("scores.csv", False), ("named.csv", True)]


def test_fingerprint_finds_a_blank_line_across_read_chunks(tmp_path):
    import hashlib

    chunk = 1 << 20
    straddling = tmp_path / "a.csv"
    data = b"x" * (chunk - 1) + b"\n" + b"\n" + b"y\n"  # the blank line begins at the chunk's last byte
    straddling.write_bytes(data)
    assert ingest.fingerprint(straddling) == (hashlib.sha256(data).hexdigest(), True)
    crlf = tmp_path / "c.csv"
    data = b"x" * (chunk - 2) + b"\r\n" + b"\r\n" + b"y\r\n"  # the chunk ends in "\n", the next begins "\r\n"
    crlf.write_bytes(data)
    assert ingest.fingerprint(crlf) == (hashlib.sha256(data).hexdigest(), True)
    plain = tmp_path / "b.csv"
    plain.write_bytes(b"a,b\r\n1,2\r\n")
    assert ingest.fingerprint(plain)[1] is False


def test_scans_started_ahead_are_those_of_the_file_as_it_is_when_used(tmp_path):
    """A file scanned ahead (its fingerprint read while the database is opened) and changed before its
    turn is scanned again: the load never records the sha256 of a version it did not read."""
    import hashlib
    import os

    from kapdata.ingest.readers import ScanAhead, scan

    same = write_text(tmp_path / "same.csv", "a,b\n1,2\n")
    changed = write_text(tmp_path / "changed.csv", "a,b\n1,2\n")
    ahead = ScanAhead([same, changed, tmp_path / "missing.csv"])
    try:
        first = ahead.get(same)  # waits for its scan
        data = b"a,b\n\n3,4\n"  # a blank line now, and other bytes
        changed.write_bytes(data)
        os.utime(changed, ns=(1, 1))  # a different modification time, whatever the clock's resolution
        assert first == scan(same)
        assert ahead.get(changed) == (hashlib.sha256(data).hexdigest(), True, True)
        assert ahead.get(same) == scan(same)  # asked again: scanned again, not an error
    finally:
        ahead.close()


def test_a_first_load_is_checked_in_a_copy_whose_checkpoint_does_not_rewrite_row_groups(tmp_path):
    """The whole copy's settings (``pipeline._COPY_CONFIG``): no vacuum at its checkpoint, which would
    compress again the row groups a parallel insert leaves part-filled."""
    from kapdata.ingest import pipeline

    target = tmp_path / "kap.duckdb"
    with db.session(target):
        pass
    with pipeline._staging(target, whole=True, memory_limit="1GB") as stage:
        assert stage.copy is not None
        settings = stage.con.execute(
            "SELECT current_setting('max_vacuum_tasks'), current_setting('memory_limit')"
        ).fetchone()
    assert settings is not None and settings[0] == 0 and settings[1] == "953.6 MiB"  # 1 GB


# ----------------------------------------------------------------------------------- new patients


def test_a_score_for_a_patient_in_no_patients_file_is_an_error_naming_the_row(tmp_path, base_db):
    # K0O173 is a typo (letter O) of nothing in the database: by default it is refused, not created.
    sc = scores_file(tmp_path, [("B1", "PHQ-9", "2025-05-01", 7), ("K0O173", "PHQ-9", "2025-05-01", 12)])
    before = snapshot(base_db)
    with pytest.raises(ingest.ImportRejected) as info:
        ingest.load_files([sc], base_db, today=TODAY)
    assert snapshot(base_db) == before
    problem = only_error(info.value.result)
    assert (problem.file, problem.row, problem.column, problem.value) == (
        "scores.csv",
        3,
        "patient_id",
        "K0O173",
    )
    assert problem.reason == (
        "patient K0O173 is not in the database and no patients file in this load names it; check the ID, "
        "load a patients file, or allow new patients"
    )
    # A session too.
    se = write_text(
        tmp_path / "sessions.csv", csv_lines(SESSIONS_HEADER, sessions_rows("K9", ["2025-05-02"]))
    )
    with pytest.raises(ingest.ImportRejected) as info:
        ingest.load_files([se], base_db, today=TODAY)
    assert [(p.row, p.value) for p in info.value.result.errors] == [(2, "K9")]


def test_new_patients_are_allowed_when_asked_and_reported(tmp_path, base_db):
    sc = scores_file(tmp_path, [("K0O173", "PHQ-9", "2025-05-01", 12)])
    result = ingest.load_files([sc], base_db, today=TODAY, new_patients=True)
    assert result.committed and result.files[0].new_patients == 1
    assert [p.reason for p in result.problems if p.severity == "info"] == [
        "1 patient(s) are in no patients file; created with unknown attributes: K0O173"
    ]
    assert query(base_db, "SELECT attributes_known FROM patients WHERE patient_id = 'K0O173'") == [(False,)]


def test_a_patients_file_in_the_same_load_names_the_patient(tmp_path, base_db):
    pa_ = write_text(
        tmp_path / "p.csv",
        csv_lines(PATIENTS_HEADER, [("N1", "North", "Dr A", "25-34", "male", "GAD", "IM")]),
    )
    sc = scores_file(tmp_path, [("N1", "GAD-7", "2025-05-01", 12)])
    # The scores file first: files are loaded patients first whatever their order.
    result = ingest.load_files([sc, pa_], base_db, today=TODAY)
    assert result.committed and [f.new_patients for f in result.files] == [0, 0]
    # In quarantine, a patients row rejected for another reason still names the patient: the score loads
    # and the patient is created with unknown attributes (filled in when the corrected row is loaded).
    bad = write_text(
        tmp_path / "p2.csv",
        csv_lines(PATIENTS_HEADER, [("N2", "North", "Dr A", "9-99", "male", "GAD", "IM")]),
    )
    sc2 = scores_file(tmp_path, [("N2", "GAD-7", "2025-05-01", 12)], name="s2.csv")
    result = ingest.load_files(
        [bad, sc2], base_db, today=TODAY, on_error="quarantine", rejects=tmp_path / "r.csv"
    )
    assert [(f.rows_loaded, f.rows_rejected) for f in result.files] == [(0, 1), (1, 0)]
    assert [(p.file, p.row, p.column) for p in result.errors] == [("p2.csv", 2, "age_band")]


def test_the_headline_counts_the_same_rows_as_the_rejected_count(tmp_path, base_db):
    # Two bad rows of a good file, and a file refused as a whole at a row: "Rejected" and the headline agree.
    sc = scores_file(tmp_path, [("B1", "PHQ-9", "2025-05-01", 70), ("B1", "PHQ-9", "2025-05-02", 80)])
    broken = write_text(
        tmp_path / "broken.csv", "patient_id,instrument,assessed_on,total\nB1,PHQ-9,2025-05-03,4,9\n"
    )
    result = rejected(base_db, sc, broken)
    by_file = {f.file: f for f in result.files}
    assert by_file["broken.csv"].refused
    assert result.headline() == "3 problem(s) in 2 row(s) and 1 whole file(s)"
    assert by_file["scores.csv"].rows_rejected == 2 == result.error_rows
    assert by_file["broken.csv"].rows_rejected == by_file["broken.csv"].rows_read


def test_templates_are_loadable_native_files(tmp_path, db_file):
    files = []
    for name, content in ingest.templates().items():
        files.append(tmp_path / name)
        files[-1].write_bytes(content)
        assert content.decode().count("\n") == 3  # header and two example rows
    result = ingest.load_files(files, db_file, today=dt.date(2026, 6, 1))
    assert [(f.file, f.rows_loaded) for f in result.files] == [
        ("patients.csv", 2),
        ("sessions.csv", 2),
        ("scores.csv", 2),
    ]


# ------------------------------------------------------------------------------ FHIR in the pipeline


def _bundle(path: Path, total: int = 14) -> Path:
    import json

    obs = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "44261-6"}]},
        "subject": {"reference": "Patient/pat-1"},
        "effectiveDateTime": "2012-05-30T21:34:39+12:00",
        "valueQuantity": {"value": total},
    }
    other = {**obs, "id": "o2", "code": {"coding": [{"system": "http://loinc.org", "code": "55757-9"}]}}
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": "pat-1"}},
            {"resource": obs},
            {"resource": other},
        ],
    }
    path.write_text(json.dumps(bundle))
    return path


def test_a_fhir_bundle_goes_through_the_same_pipeline(tmp_path, db_file):
    from kapdata.ingest import sources

    f = _bundle(tmp_path / "export.json")
    result = ingest.load_files([f], db_file, today=TODAY)  # the Patient is in the load: no flag needed
    assert [(x.file, x.kind, x.rows_loaded) for x in result.files] == [
        ("export.json", "patients", 1),
        ("export.json", "scores", 1),
    ]
    assert any(p.severity == "info" and "skipped" in p.reason for p in result.problems)
    with db.reader(db_file) as con:
        key = sources.read_key(con)
    assert key is not None
    from kapdata import fhir

    pid = fhir.pseudonym("pat-1", key)
    assert query(db_file, "SELECT patient_id, assessed_on, total FROM scores") == [
        (pid, dt.date(2012, 5, 30), 14)
    ]
    assert query(db_file, "SELECT DISTINCT file_name, sha256 FROM batches") == [
        ("export.json", ingest.fingerprint(f)[0])
    ]
    again = ingest.load_files([f], db_file, today=TODAY)
    assert [x.identical_to_batch for x in again.files] == [1, 2]
    # Impossible totals are rejected by row (the Bundle entry number).
    bad = _bundle(tmp_path / "bad.json", total=31)
    with pytest.raises(ingest.ImportRejected) as info:
        ingest.load_files([bad], db_file, today=TODAY)
    assert [(p.file, p.row, p.column) for p in info.value.result.errors] == [("bad.json", 2, "total")]


def test_fhir_ids_said_to_be_pseudonymous_are_kept(tmp_path, db_file):
    f = _bundle(tmp_path / "export.json")
    ingest.load_files([f], db_file, today=TODAY, fhir_ids_are_pseudonymous=True)
    assert query(db_file, "SELECT patient_id FROM patients") == [("pat-1",)]
    with db.reader(db_file) as con:
        assert con.execute("SELECT count(*) FROM meta WHERE key = 'pseudonym_key'").fetchone() == (0,)


def test_records_a_source_holds_but_this_product_does_not_load_are_one_report_line() -> None:
    from kapdata.ingest.sources import skipped_line

    skipped = {f"Observation LOINC {n}-1": n for n in range(1, 11)} | {"Encounter": 3}
    line = skipped_line(skipped, shown=3)
    assert line == (
        "58 record(s) skipped (not loaded, not an error): Observation LOINC 10-1 ×10, "
        "Observation LOINC 9-1 ×9, Observation LOINC 8-1 ×8, and 8 more kinds"
    )


def test_a_first_load_that_cannot_work_within_the_memory_limit_runs_again_without_it(tmp_path, monkeypatch):
    """A first load works in a whole copy with a DuckDB memory limit (work spills beyond it); work that
    cannot spill within it is done once more without the limit instead of failing."""
    from kapdata.ingest import pipeline

    monkeypatch.setattr(pipeline, "STAGE_MEMORY_LIMIT", "1MB")
    limits: list[str | None] = []
    real = pipeline._staging

    @contextlib.contextmanager
    def spy(target, **kwargs):
        limits.append(kwargs.get("memory_limit"))
        with real(target, **kwargs) as stage:
            yield stage

    monkeypatch.setattr(pipeline, "_staging", spy)
    files = sample.write_sample(100, tmp_path / "files", seed=2)
    db_file = tmp_path / "kap.duckdb"
    assert ingest.load_files(files, db_file).committed
    assert limits == ["1MB", None]
    assert query(db_file, "SELECT count(*) FROM patients") == [(100,)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["files", "kap.duckdb"]
