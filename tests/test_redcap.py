"""REDCap longitudinal exports through a ``"layout": "redcap"`` mapping: events become phases, record ids a
keyed pseudonym that stays the same in this database, repeating instruments and missing totals handled."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from kapdata import db, ingest
from kapdata.ingest import mapping as mp
from kapdata.ingest import redcap, sources
from tests.conftest import query, write_text

FIXTURES = Path(__file__).parent / "fixtures" / "mapping"
TODAY = dt.date(2026, 6, 1)


def export(spec: mp.Mapping | None = None, path: Path = FIXTURES / "redcap_export.csv") -> ingest.SourceFile:
    return ingest.SourceFile(path, path.name, spec or mp.load_mapping_file(FIXTURES / "redcap.json"))


def test_the_export_loads_per_instrument_with_events_as_phases(db_file):
    result = ingest.load_files(
        [export()],
        db_file,
        today=TODAY,
        on_error="quarantine",
        new_patients=True,
        rejects=db_file.parent / "r.csv",
    )
    assert [(f.file, f.rows_read, f.rows_loaded, f.rows_rejected) for f in result.files] == [
        ("redcap_export.csv (PHQ-9)", 5, 4, 1),
        ("redcap_export.csv (GAD-7)", 2, 2, 0),
    ]
    (problem,) = result.errors
    assert (problem.row, problem.reason) == (
        6,
        "event unscheduled_arm_1 is not in the mapping’s events (event → phase)",
    )
    with db.reader(db_file) as con:
        key = sources.read_key(con)
    assert key is not None and len(key) == 32
    r101, r102 = redcap.pseudonym("101", key), redcap.pseudonym("102", key)
    assert r101.startswith("R") and len(r101) == 11 and r101 != r102
    rows = query(
        db_file, "SELECT patient_id, instrument, assessed_on, total, phase, items FROM scores ORDER BY 3, 2"
    )
    assert rows == [
        (r101, "GAD-7", dt.date(2026, 1, 5), 11, "preparation", [2, 2, 2, 2, 1, 1, 1]),
        (r101, "PHQ-9", dt.date(2026, 1, 5), 18, "preparation", [2] * 9),
        (r102, "GAD-7", dt.date(2026, 1, 7), 21, "preparation", [3] * 7),  # no total field: the items' sum
        (r102, "PHQ-9", dt.date(2026, 1, 7), 27, "preparation", [3] * 9),
        (r102, "PHQ-9", dt.date(2026, 1, 21), 17, "dosing", [2] * 8 + [1]),  # a repeating instrument's row
        (r101, "PHQ-9", dt.date(2026, 2, 2), 8, "follow-up", [1] * 8 + [0]),
    ]
    # Next month's export: the same records land on the same patients (the key is the database's own).
    later = write_text(
        db_file.parent / "redcap_next.csv",
        (FIXTURES / "redcap_export.csv").read_text().splitlines()[0]
        + "\n101,month_3_arm_1,,,2026-04-06,0,0,0,0,0,0,0,0,0,0,2,,,,,,,,,\n",
    )
    spec = mp.load_mapping_file(FIXTURES / "redcap.json")
    spec.events["month_3_arm_1"] = "follow-up"
    result = ingest.load_files([export(spec, later)], db_file, today=TODAY)  # no new patient: no flag needed
    assert result.committed and result.files[0].new_patients == 0
    assert query(db_file, "SELECT patient_id FROM scores WHERE assessed_on = '2026-04-06'") == [(r101,)]


def test_a_total_that_contradicts_the_items_is_rejected_by_row(tmp_path, db_file):
    text = (
        (FIXTURES / "redcap_export.csv")
        .read_text()
        .replace(",2,2,2,2,2,2,2,2,2,18,", ",2,2,2,2,2,2,2,2,2,19,")
    )
    f = write_text(tmp_path / "rc.csv", text)
    with pytest.raises(ingest.ImportRejected) as info:
        ingest.load_files([export(path=f)], db_file, today=TODAY, new_patients=True)
    assert [(p.row, p.column, p.reason) for p in info.value.result.errors] == [
        (2, "total", "total 19 is not the sum of the items (18)"),
        (6, None, "event unscheduled_arm_1 is not in the mapping’s events (event → phase)"),
    ]


def test_ids_said_to_be_pseudonymous_are_kept(tmp_path, db_file):
    spec = mp.Mapping.from_dict(
        {"layout": "redcap", "ids_are_pseudonymous": True, "events": {"baseline_arm_1": "preparation"}}
    )
    f = write_text(
        tmp_path / "rc.csv",
        "record_id,redcap_event_name,gad7_date,gad7_1,gad7_2,gad7_3,gad7_4,gad7_5,gad7_6,gad7_7\n"
        "S-07,baseline_arm_1,2026-02-01,1,1,1,1,1,1,1\n",
    )
    result = ingest.load_files([export(spec, f)], db_file, today=TODAY, new_patients=True)
    assert result.committed
    assert query(db_file, "SELECT patient_id, instrument, total, phase FROM scores") == [
        ("S-07", "GAD-7", 7, "preparation")
    ]


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("study_id,redcap_event_name,phq9_date,phq9_1", "the export has no 'record_id' column"),
        ("record_id,redcap_event_name,visit_date", "no scale fields found"),
        ("record_id,redcap_event_name,phq9_1,phq9_2", "no date field for PHQ-9"),
    ],
)
def test_an_export_the_mapping_does_not_fit_is_refused_in_words(tmp_path, db_file, header, message):
    f = write_text(tmp_path / "rc.csv", header + "\n" + ",".join(["1"] * len(header.split(","))) + "\n")
    with pytest.raises(ingest.ImportRejected) as info:
        ingest.load_files([export(mp.Mapping.from_dict({"layout": "redcap"}), f)], db_file, today=TODAY)
    (problem,) = info.value.result.errors
    assert problem.row is None and problem.reason.startswith(message)
    # A field the mapping names that the export lacks is named.
    with pytest.raises(ingest.ImportRejected) as info:
        ingest.load_files([export(path=f)], db_file, today=TODAY)
    assert info.value.result.errors[0].reason.startswith(
        "the export has no 'record_id' column" if "study_id" in header else "the mapping names field"
    )


def test_the_pseudonym_is_keyed():
    assert redcap.pseudonym("101", b"a" * 32) == redcap.pseudonym("101", b"a" * 32)
    assert redcap.pseudonym("101", b"a" * 32) != redcap.pseudonym("101", b"b" * 32)
