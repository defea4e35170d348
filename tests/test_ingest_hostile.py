"""Hostile and odd input files (issue 11): identifiers never get in, odd files are refused in words naming
file, row and column, no engine message or temp path reaches the report, and rejection is set-based and
bounded. Every rejection leaves the database exactly as it was (``rejected`` checks)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kapdata import ingest
from tests.conftest import (
    PATIENTS_HEADER,
    SCORES_HEADER,
    TODAY,
    csv_lines,
    errors_text,
    load,
    query,
    snapshot,
    write_text,
)


def rejected(db_file: Path, *files: Path, on_error: ingest.OnError = "reject") -> ingest.LoadResult:
    before = snapshot(db_file)
    with pytest.raises(ingest.ImportRejected) as info:
        load(db_file, *files, on_error=on_error)
    assert snapshot(db_file) == before
    return info.value.result


def only_error(result: ingest.LoadResult) -> ingest.Problem:
    assert len(result.errors) == 1, errors_text(result)
    return result.errors[0]


# ------------------------------------------------------------------------------ 4. identifiers


IDENTIFIER_HEADERS = [
    ("pt_name", "a name"),
    ("fname", "a name"),
    ("Patient's Name", "a name"),
    ("guardian_name", "a name"),
    ("initials", "a name"),
    ("emailaddress", "an e-mail address"),
    ("DateOfBirth", "a birth date"),
    ("birth_dt", "a birth date"),
    ("Phone #", "a phone number"),
    ("cell_phone", "a phone number"),
    ("addr", "an address"),
    ("SSN#", "a national identity number"),
    ("NHS No", "a national identity number"),
    ("mrn_id", "a medical record number"),
    ("medicare_number", "an insurance number"),
    ("insurance_id", "an insurance number"),
    ("emergency_contact", "a contact person"),
]


@pytest.mark.parametrize(("header", "what"), IDENTIFIER_HEADERS)
def test_identifier_like_headers_are_refused_not_warned(tmp_path, base_db, header, what):
    f = write_text(tmp_path / "p.csv", f'patient_id,clinic,"{header}"\nP1,North,x\n'.replace("'", "'"))
    problem = only_error(rejected(base_db, f, on_error="quarantine"))
    assert (problem.row, problem.column) == (1, header)
    assert problem.reason.startswith(f"column looks like {what}, a direct identifier")


def test_contract_columns_are_not_taken_for_identifiers():
    for cols in ingest.COLUMNS.values():
        assert [c for c in cols if ingest.identifier_kind(c)] == []
    assert ingest.identifier_kind("item_9") is None


@pytest.mark.parametrize("header", ["_note", "comments", "weight_kg"])
def test_unknown_and_underscore_columns_are_refused(tmp_path, base_db, header):
    f = write_text(tmp_path / "p.csv", f"patient_id,clinic,{header}\nP1,North,x\n")
    problem = only_error(rejected(base_db, f))
    assert (problem.row, problem.column) == (1, header)
    assert problem.reason.startswith("column is not part of the patients file contract: remove it")


def test_a_rejects_file_with_row_and_errors_columns_loads_again(tmp_path, db_file):
    f = write_text(tmp_path / "p.csv", "patient_id,clinic,_row,_errors\nP1,North,2,age_band: bad\n")
    load(db_file, f)
    assert query(db_file, "SELECT patient_id, clinic FROM patients") == [("P1", "North")]


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("clinic", "jane.doe@example.org"),
        ("provider", "Dr Smith 555-123-4567"),
        ("clinic", "123-45-6789"),
    ],
)
def test_identifier_values_in_clinic_or_provider_are_refused_and_not_repeated(
    tmp_path, base_db, column, value
):
    row = {"patient_id": "P1", "clinic": "North", "provider": "DR1"} | {column: value}
    f = write_text(tmp_path / "p.csv", csv_lines("patient_id,clinic,provider", [tuple(row.values())]))
    problem = only_error(rejected(base_db, f))
    assert (problem.row, problem.column, problem.value) == (2, column, None)
    assert "direct identifier" in problem.reason
    assert value not in rejected(base_db, f).report()


def test_an_ssn_as_patient_id_is_refused(tmp_path, base_db):
    f = write_text(tmp_path / "s.csv", csv_lines(SCORES_HEADER, [("123-45-6789", "PHQ-9", "2025-01-05", 4)]))
    problem = only_error(rejected(base_db, f))
    assert (problem.row, problem.column, problem.value) == (2, "patient_id", None)
    assert "social security number" in problem.reason


# ------------------------------------------------------------------------------ 5. odd data


def test_duplicate_headers_are_refused(tmp_path, base_db):
    f = write_text(
        tmp_path / "s.csv", "patient_id,instrument,assessed_on,total,total\nP1,PHQ-9,2025-01-05,3,4\n"
    )
    problem = only_error(rejected(base_db, f))
    assert (problem.file, problem.row, problem.column) == ("s.csv", 1, "total")
    assert problem.reason.startswith("the same column appears twice")


@pytest.mark.parametrize("day", ["0001-01-01", "1899-12-31"])
def test_dates_before_1900_are_rejected(tmp_path, base_db, day):
    f = write_text(tmp_path / "s.csv", csv_lines(SCORES_HEADER, [("P1", "PHQ-9", day, 4)]))
    problem = only_error(rejected(base_db, f))
    assert (problem.row, problem.column, problem.value) == (2, "assessed_on", day)
    assert problem.reason == "date before 1900: check the year"


def test_time_zone_aware_parquet_counts_on_its_own_local_date(tmp_path, db_file):
    # 2025-06-02 03:30 UTC is 1 June 23:30 in New York: the score belongs to 1 June wherever the server is.
    instant = dt.datetime(2025, 6, 2, 3, 30, tzinfo=dt.UTC)
    table = pa.table(
        {
            "patient_id": ["P1"],
            "instrument": ["PHQ-9"],
            "assessed_on": pa.array([instant], pa.timestamp("us", tz="America/New_York")),
            "total": ["7"],
        }
    )
    f = tmp_path / "s.parquet"
    pq.write_table(table, f)
    env = os.environ | {"TZ": "Asia/Tokyo", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    code = (
        "import datetime as dt, sys; from kapdata import ingest; "
        "ingest.load_files([sys.argv[1]], sys.argv[2], today=dt.date(2026, 1, 15), new_patients=True)"
    )
    subprocess.run([sys.executable, "-c", code, str(f), str(db_file)], check=True, env=env)
    assert query(db_file, "SELECT assessed_on, assessed_at FROM scores") == [
        (dt.date(2025, 6, 1), dt.datetime(2025, 6, 1, 23, 30))
    ]


def test_ids_differing_only_by_case_or_look_alikes_are_rejected_in_the_file(tmp_path, base_db):
    rows = [
        ("K00001", "PHQ-9", "2025-01-05", 4),
        ("k00001", "PHQ-9", "2025-01-06", 5),
        ("KOOOO1", "PHQ-9", "2025-01-07", 5),
    ]
    result = rejected(base_db, write_text(tmp_path / "s.csv", csv_lines(SCORES_HEADER, rows)))
    assert [(p.row, p.column, p.value) for p in result.errors] == [
        (3, "patient_id", "k00001"),
        (4, "patient_id", "KOOOO1"),
    ]
    assert result.errors[0].reason.startswith("patient_id differs from K00001 (row 2) only by letter case")


def test_ids_differing_only_by_case_from_the_database_are_rejected(tmp_path, base_db):
    f = write_text(tmp_path / "s.csv", csv_lines(SCORES_HEADER, [("b1", "PHQ-9", "2025-05-05", 4)]))
    problem = only_error(rejected(base_db, f))
    assert (problem.row, problem.column, problem.value) == (2, "patient_id", "b1")
    assert problem.reason.startswith(
        "patient_id differs from B1, already in the database, only by letter case"
    )


@pytest.mark.parametrize(("column", "value"), [("total", "1_2"), ("item_1", "1_0")])
def test_underscores_in_numbers_are_not_numbers(tmp_path, base_db, column, value):
    if column == "total":
        f = write_text(tmp_path / "s.csv", csv_lines(SCORES_HEADER, [("P1", "PHQ-9", "2025-01-05", value)]))
    else:
        header = "patient_id,instrument,assessed_on," + ",".join(f"item_{n}" for n in range(1, 8))
        f = write_text(
            tmp_path / "s.csv", csv_lines(header, [("P1", "GAD-7", "2025-01-05", value, 1, 1, 1, 1, 1, 1)])
        )
    problem = only_error(rejected(base_db, f))
    assert (problem.row, problem.column, problem.value, problem.reason) == (
        2,
        column,
        value,
        "not a whole number",
    )


def test_a_dose_with_an_underscore_is_not_a_number(tmp_path, base_db):
    f = write_text(tmp_path / "x.csv", "patient_id,session_date,dose_mg\nB1,2025-05-01,3_5\n")
    problem = only_error(rejected(base_db, f))
    assert (problem.row, problem.column, problem.reason) == (2, "dose_mg", "not a number")


def test_a_header_only_file_is_refused_and_records_no_batch(tmp_path, base_db):
    f = write_text(tmp_path / "s.csv", SCORES_HEADER + "\n")
    problem = only_error(rejected(base_db, f))
    assert (problem.file, problem.row) == ("s.csv", None)
    assert problem.reason == "the file has a header but no data rows: nothing to load"


def test_a_row_with_an_extra_field_is_named(tmp_path, base_db):
    text = SCORES_HEADER + "\nP1,PHQ-9,2025-01-05,3\nP2,PHQ-9,2025-01-05,3,9\nP3,PHQ-9,2025-01-05,3\n"
    problem = only_error(rejected(base_db, write_text(tmp_path / "s.csv", text)))
    assert (problem.file, problem.row) == ("s.csv", 3)
    assert problem.reason.startswith("row 3 has 5 fields, more than the 4 columns of the header")


# ------------------------------------------------------------------------------ 9. words, not engine text


@pytest.mark.parametrize(
    ("content", "start"),
    [
        (b"patient_id,clinic\nP1,caf\xe9\n", "the file is not UTF-8 text"),
        (b'patient_id,clinic\nP1,"North\nP2,South\n', "quoting problem at row"),
        (b"patient_id;clinic\nP1;North\n", "the header is one column: the file seems to use ;"),
        (b"patient_id,clinic\xff\nP1,North\n", "the file is not UTF-8 text"),
    ],
)
def test_unreadable_csv_is_explained_in_words_without_engine_text_or_path(tmp_path, base_db, content, start):
    f = tmp_path / "upload.csv"
    f.write_bytes(content)
    result = rejected(base_db, f)
    problem = only_error(result)
    assert problem.reason.startswith(start), problem.reason
    report = result.report()
    for leak in (str(tmp_path), "Invalid Input Error", "sniffing", "Error when", "duckdb"):
        assert leak not in report


@pytest.mark.parametrize(
    ("tail", "utf8"),
    [
        ("é".encode(), True),  # a two-byte character split across the 1 MB read chunks
        (b"\xc3", False),  # a sequence left open, then a plain-ASCII chunk
        (b"\x00", False),
    ],
)
def test_text_check_across_read_chunks(tmp_path, tail, utf8):
    from kapdata.ingest.readers import scan

    f = tmp_path / "big.csv"
    f.write_bytes(b"a" * ((1 << 20) - 1) + tail + b"a" * 100)
    assert scan(f)[2] is utf8


def test_damaged_parquet_and_xlsx_are_explained_in_words(tmp_path, base_db):
    for name in ("bad.parquet", "bad.xlsx"):
        f = tmp_path / name
        f.write_bytes(b"PAR1 not really" * 10)
        problem = only_error(rejected(base_db, f))
        assert "damaged" in problem.reason and str(tmp_path) not in problem.reason


# ------------------------------------------------------------------------------ 6. bounded cost


def test_too_many_columns_are_refused_before_reading(tmp_path, base_db):
    f = write_text(tmp_path / "wide.csv", ",".join(f"c{i}" for i in range(5000)) + "\n1\n")
    problem = only_error(rejected(base_db, f))
    assert problem.reason.startswith(f"the file has 5,000 columns; at most {ingest.MAX_COLUMNS} are read")


def test_a_huge_header_line_is_refused_before_reading(tmp_path, base_db):
    f = write_text(tmp_path / "long.csv", "x" * (ingest.MAX_HEADER_BYTES + 10))
    assert only_error(rejected(base_db, f)).reason.startswith("the header row is longer than 64 KB")


def test_a_large_xlsx_is_refused_by_size_before_reading(tmp_path, base_db, monkeypatch):
    f = tmp_path / "big.xlsx"
    pd.DataFrame({"patient_id": ["P1"], "clinic": ["North"]}).to_excel(f, index=False)
    monkeypatch.setattr(ingest.readers, "MAX_XLSX_BYTES", 100)
    problem = only_error(rejected(base_db, f))
    assert "save the sheet as CSV" in problem.reason


def test_many_bad_rows_are_rejected_set_based_and_the_report_is_capped(tmp_path, base_db):
    n = 5000
    rows = [(f"P{i}", "PHQ-9", "2025-01-05", 99) for i in range(n)]
    f = write_text(tmp_path / "bad.csv", csv_lines(SCORES_HEADER, rows))
    result = rejected(base_db, f)
    assert len(result.errors) == ingest.MAX_PROBLEMS_LISTED
    assert result.unlisted_errors == n - ingest.MAX_PROBLEMS_LISTED
    assert result.headline() == f"{n} problem(s) in {n} row(s)"
    assert result.errors[0].row == 2 and result.errors[-1].row == ingest.MAX_PROBLEMS_LISTED + 1
    assert f"and {n - ingest.MAX_PROBLEMS_LISTED:,} more error(s) not listed" in result.report()


def test_quarantine_of_many_bad_rows_writes_every_row_with_formulas_neutralised(tmp_path, base_db):
    rows = [("B1", "PHQ-9", f"2025-01-{d:02d}", 99) for d in range(1, 29)] + [("B1", "=cmd", "2025-01-30", 3)]
    rows.append(("B1", "PHQ-9", "2025-01-31", 5))
    f = write_text(tmp_path / "s.csv", csv_lines(SCORES_HEADER, rows))
    result = load(base_db, f, on_error="quarantine", rejects=tmp_path / "r.csv")
    assert result.files[0].rows_loaded == 1 and result.files[0].rows_rejected == 29
    written = pd.read_csv(tmp_path / "r.csv", dtype=str)
    assert len(written) == 29
    assert written.loc[written["_row"] == "30", "instrument"].tolist() == ["'=cmd"]


def test_rejection_is_no_slower_than_a_clean_load(tmp_path, db_file):
    """Bounded, not timed: the bad rows are handled by SQL, so the number of statements the engine runs
    does not grow with the number of bad rows."""
    counts = []
    for n in (50, 2000):
        rows = [(f"P{i}", "PHQ-9", "2025-01-05", 99) for i in range(n)]
        f = write_text(tmp_path / f"bad{n}.csv", csv_lines(SCORES_HEADER, rows))
        calls = 0
        real = ingest.Loader._record

        def counting(self, *args, _real=real, **kwargs):
            nonlocal calls
            calls += 1
            return _real(self, *args, **kwargs)

        ingest.Loader._record = counting  # type: ignore[method-assign]
        try:
            load(db_file, f, on_error="quarantine")
        finally:
            ingest.Loader._record = real  # type: ignore[method-assign]
        counts.append(calls)
    assert counts[0] == counts[1]


def test_today_fixture_is_used():
    assert TODAY.year == 2026 and PATIENTS_HEADER.startswith("patient_id")


def test_a_short_file_whose_last_row_has_an_extra_field_is_named_not_taken_as_empty(tmp_path, base_db):
    text = SCORES_HEADER + "\nP1,PHQ-9,2025-01-05,3\nP2,PHQ-9,2025-01-05,3,9\n"
    problem = only_error(rejected(base_db, write_text(tmp_path / "s.csv", text)))
    assert problem.row == 3 and problem.reason.startswith("row 3 has 5 fields")


# ------------------------------------------------------------- clinic formats: refusals change nothing

FHIR_FIXTURES = Path(__file__).parent / "fixtures" / "fhir"


def test_a_refused_fhir_file_or_a_mapping_that_does_not_fit_leaves_the_database_as_it_was(tmp_path, base_db):
    from kapdata.ingest import mapping as mp

    result = rejected(base_db, FHIR_FIXTURES / "stu3_bundle.json")
    assert "STU3" in only_error(result).reason
    odd = tmp_path / "visits.csv"
    odd.write_text("Pseudonym,When,Score\nB1,2025-05-01,4\n")
    columns = {"patient_id": "Pseudonym", "assessed_on": "When", "instrument": "Measure", "total": "Nope"}
    mapping = mp.Mapping.from_dict({"kind": "scores", "layout": "long", "columns": columns})
    before = snapshot(base_db)
    with pytest.raises(ingest.ImportRejected) as info:
        ingest.load_files([ingest.SourceFile(odd, odd.name, mapping=mapping)], base_db)
    assert snapshot(base_db) == before
    assert "which is not in the file" in str(info.value.result.errors[0])


def test_a_staged_copy_is_only_ever_made_of_our_own_work_tables() -> None:
    """Table names cannot be query parameters: the one statement that copies a staged file by name refuses
    any name that is not ``raw_<n>`` / ``raw_<n>_csv``, before anything reaches DuckDB."""
    import types

    import duckdb

    from kapdata.ingest.staging import Stager

    con = duckdb.connect()
    con.execute("CREATE TABLE patients (patient_id VARCHAR)")
    stager = Stager(con)
    for name in ("patients; DROP TABLE patients; --_csv", "raw_1 AS SELECT 1; --_csv", "scores_csv"):
        with pytest.raises(ValueError, match="not a staging work table"):
            stager._text_table(types.SimpleNamespace(direct=True, raw=name))  # type: ignore[arg-type]
    assert con.execute("SELECT count(*) FROM patients").fetchone() == (0,)  # nothing ran
