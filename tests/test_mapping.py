"""Column mappings: long and wide spreadsheets of a clinic's own shape become contract rows, validated like
a native file's; invalid mappings are refused in words; mappings are saved by name and found again by
headers."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest

from kapdata import db, ingest
from kapdata.ingest import mapping as mp
from tests.conftest import query, run_cli, snapshot, write_text

FIXTURES = Path(__file__).parent / "fixtures" / "mapping"
TODAY = dt.date(2026, 6, 1)


def mapped(name: str, spec: str) -> ingest.SourceFile:
    return ingest.SourceFile(FIXTURES / name, name, mp.load_mapping_file(FIXTURES / spec))


def spec(**changes: object) -> dict:
    doc = json.loads((FIXTURES / "long.json").read_text())
    doc.update(changes)
    return doc


# ------------------------------------------------------------------------------------------ long


def test_the_issue_long_mapping_loads_with_a_patients_file_and_names_the_bad_row(db_file):
    with pytest.raises(ingest.ImportRejected) as info:
        ingest.load_files(
            [FIXTURES / "patients.csv", mapped("visits_long.csv", "long.json")], db_file, today=TODAY
        )
    (problem,) = info.value.result.errors
    assert (problem.file, problem.row, problem.column) == ("visits_long.csv", 6, None)
    assert problem.reason == "assessed_on: 31/02/2026 does not match the date format %d/%m/%Y"
    result = ingest.load_files(
        [FIXTURES / "patients.csv", mapped("visits_long.csv", "long.json")],
        db_file,
        today=TODAY,
        on_error="quarantine",
        rejects=db_file.parent / "rejects.csv",
    )
    scores = result.files[1]
    assert (scores.file, scores.kind, scores.rows_read, scores.rows_loaded, scores.rows_rejected) == (
        "visits_long.csv",
        "scores",
        5,
        4,
        1,
    )
    assert query(
        db_file, "SELECT patient_id, instrument, assessed_on, total, phase FROM scores ORDER BY 1, 3, 2"
    ) == [
        ("K00001", "GAD-7", dt.date(2026, 1, 5), 12, "preparation"),
        ("K00001", "PHQ-9", dt.date(2026, 1, 5), 18, "preparation"),
        ("K00001", "PHQ-9", dt.date(2026, 3, 2), 9, "integration"),
        ("K00002", "PHQ-9", dt.date(2026, 1, 7), 22, "preparation"),
    ]
    # The batch keeps the original file's name and sha256: the same export again is a no-op.
    assert query(db_file, "SELECT file_name, sha256 FROM batches WHERE kind = 'scores'") == [
        ("visits_long.csv", ingest.fingerprint(FIXTURES / "visits_long.csv")[0])
    ]
    again = ingest.load_files(
        [mapped("visits_long.csv", "long.json")], db_file, today=TODAY, on_error="quarantine"
    )
    assert again.files[0].identical_to_batch == scores.batch_id
    # The rejects file holds contract columns: corrected, it loads as a native scores file.
    rejects = pd.read_csv(db_file.parent / "rejects.csv", dtype=str)
    assert list(rejects.columns) == [
        "patient_id",
        "instrument",
        "assessed_on",
        "total",
        "phase",
        "_row",
        "_errors",
    ]
    assert rejects.loc[0, "_row"] == "6"


def test_without_a_patients_file_the_mapped_scores_are_refused_unless_new_patients(tmp_path, db_file):
    fixed = write_text(
        tmp_path / "v.csv", (FIXTURES / "visits_long.csv").read_text().replace("31/02", "28/02")
    )
    src = ingest.SourceFile(fixed, "v.csv", mp.load_mapping_file(FIXTURES / "long.json"))
    with pytest.raises(ingest.ImportRejected) as info:
        ingest.load_files([src], db_file, today=TODAY)
    assert [(p.row, p.value) for p in info.value.result.errors] == [
        (2, "K00001"),
        (3, "K00001"),
        (4, "K00001"),
        (5, "K00002"),
        (6, "K00002"),
    ]
    result = ingest.load_files([src], db_file, today=TODAY, new_patients=True)
    assert result.files[0].rows_loaded == 5 and result.files[0].new_patients == 2


def test_values_match_case_and_spaces_and_validation_still_applies(tmp_path, db_file):
    f = write_text(
        tmp_path / "x.csv",
        "Pseudonym,Visit date,Measure,Score,Visit\nK1, 05/01/2026 , phq9 depression ,30,BASELINE\n",
    )
    src = ingest.SourceFile(f, "x.csv", mp.Mapping.from_dict(spec()))
    with pytest.raises(ingest.ImportRejected) as info:
        ingest.load_files([src], db_file, today=TODAY, new_patients=True)
    assert [(p.row, p.column, p.reason) for p in info.value.result.errors] == [
        (2, "total", "total out of range: PHQ-9 totals are 0-27")
    ]


# ------------------------------------------------------------------------------------------ wide


def test_a_wide_file_gives_one_score_per_scale_present_and_one_batch_per_scale(db_file):
    result = ingest.load_files(
        [FIXTURES / "patients.csv", mapped("visits_wide.csv", "wide.json")],
        db_file,
        today=TODAY,
        on_error="quarantine",
        rejects=db_file.parent / "r.csv",
    )
    assert [(f.file, f.rows_read, f.rows_loaded, f.rows_rejected) for f in result.files] == [
        ("patients.csv", 2, 2, 0),
        ("visits_wide.csv (PHQ-9)", 3, 2, 1),  # row 4 has no PHQ-9 cells: skipped
        ("visits_wide.csv (GAD-7)", 3, 3, 0),  # row 3 has no GAD-7 cells: skipped
    ]
    (problem,) = result.errors
    assert (problem.file, problem.row, problem.column, problem.reason) == (
        "visits_wide.csv (PHQ-9)",
        5,
        "total",
        "total 20 is not the sum of the items (27)",
    )
    assert query(
        db_file, "SELECT patient_id, instrument, assessed_on, total, items FROM scores ORDER BY 1, 3, 2"
    ) == [
        ("K00001", "GAD-7", dt.date(2026, 1, 5), 12, None),
        ("K00001", "PHQ-9", dt.date(2026, 1, 5), 18, [2] * 9),
        ("K00001", "PHQ-9", dt.date(2026, 3, 2), 9, [1] * 9),
        ("K00002", "GAD-7", dt.date(2026, 1, 7), 15, None),
        ("K00002", "GAD-7", dt.date(2026, 3, 2), 8, None),
    ]
    # Undo is per batch (per scale of the file).
    gad = result.files[2].batch_id
    assert gad is not None
    assert ingest.undo_batch(gad, db_file)["scores"] == 3


# --------------------------------------------------------------------------------- invalid mappings


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("{not json", "the mapping is not valid JSON (line 1, column 2)"),
        ("[1]", "the mapping must be a JSON object ({...})"),
        (json.dumps(spec(layout="diagonal")), "unknown layout 'diagonal'; expected long, wide or redcap"),
        (json.dumps(spec(kind="visits")), "unknown kind 'visits'; expected patients, sessions or scores"),
        (
            json.dumps(spec(columns={**spec()["columns"], "score_total": "Score"})),
            "unknown target column 'score_total' for a long scores mapping; expected one of patient_id, "
            "instrument, assessed_on, total, phase, item_1",
        ),
        (json.dumps(spec(colums={})), "unknown key 'colums' in the mapping"),
        (
            json.dumps({"kind": "scores", "columns": {"patient_id": "P", "instrument": "M", "total": "S"}}),
            "the mapping does not say which column holds assessed_on",
        ),
        (
            json.dumps(spec(date_format="dd/mm/yyyy")),
            "date_format must be a strptime-style format such as %d/%m/%Y",
        ),
        (
            json.dumps(
                {"layout": "wide", "columns": {"patient_id": "P", "assessed_on": "D"}, "scales": {"BDI": {}}}
            ),
            "unknown scale 'BDI' in the mapping; known: PHQ-9, GAD-7, PCL-5",
        ),
    ],
)
def test_an_invalid_mapping_is_refused_with_one_clear_message(doc, message):
    with pytest.raises(mp.MappingError) as info:
        mp.Mapping.from_json(doc)
    assert str(info.value).startswith(message)


def test_a_source_column_not_in_the_file_refuses_the_file_naming_it(tmp_path, db_file):
    f = write_text(tmp_path / "x.csv", "Pseudonym,Date,Measure,Score\nK1,05/01/2026,PHQ-9,3\n")
    src = ingest.SourceFile(
        f, "x.csv", mp.Mapping.from_dict(spec(columns={**spec()["columns"], "phase": "Visit"}))
    )
    before = snapshot(db_file) if db_file.exists() else None
    with pytest.raises(ingest.ImportRejected) as info:
        ingest.load_files([src], db_file, today=TODAY, new_patients=True)
    (problem,) = info.value.result.errors
    assert (problem.file, problem.row) == ("x.csv", None)
    assert problem.reason.startswith("the mapping names column 'Visit date', which is not in the file")
    assert info.value.result.headline() == "1 problem(s) in 1 whole file(s)"
    assert before is None or snapshot(db_file) == before


def test_a_mapped_identifier_column_is_refused_and_unmapped_ones_are_not_read(tmp_path, db_file):
    f = write_text(
        tmp_path / "x.csv",
        "Pseudonym,Visit date,Measure,Score,Visit,Email\nK1,05/01/2026,PHQ-9,3,Baseline,\n",
    )
    result = ingest.load_files(
        [ingest.SourceFile(f, "x.csv", mp.Mapping.from_dict(spec()))], db_file, today=TODAY, new_patients=True
    )
    assert result.committed
    assert any(
        "not read and never stored: Email" in p.reason for p in result.problems if p.severity == "info"
    )
    doc = spec(columns={**spec()["columns"], "phase": "Email"})
    with pytest.raises(ingest.ImportRejected) as info:
        ingest.load_files([ingest.SourceFile(f, "x.csv", mp.Mapping.from_dict(doc))], db_file, today=TODAY)
    assert "looks like an e-mail address, a direct identifier" in info.value.result.errors[0].reason


# ------------------------------------------------------------------------------------ JSON, saving


def test_to_json_round_trips():
    m = mp.load_mapping_file(FIXTURES / "wide.json")
    assert mp.Mapping.from_json(m.to_json()) == m
    assert m.source_columns()[:3] == ["Pseudonym", "Visit date", "Visit"]


def test_saved_mappings_are_offered_again_for_the_same_headers(db_file):
    long_m = mp.load_mapping_file(FIXTURES / "long.json")
    wide_m = mp.load_mapping_file(FIXTURES / "wide.json")
    with db.session(db_file) as con:
        mp.save(con, "Clinic EHR monthly", long_m)
        mp.save(con, "Visits (wide)", wide_m)
        assert [n for n, _ in mp.saved(con)] == ["Visits (wide)", "Clinic EHR monthly"]
        headers = ["Visit", "Score", "Measure", "Visit date", "Pseudonym", "Extra"]  # any order, more columns
        assert mp.for_headers(con, headers) == ("Clinic EHR monthly", long_m)
        assert mp.for_headers(con, headers[1:]) is None  # "Visit" is missing
        mp.save(con, "Clinic EHR monthly", mp.Mapping.from_dict(spec(date_format="%m/%d/%Y")))
        assert len(mp.saved(con)) == 2
        assert mp.for_headers(con, headers)[1].date_format == "%m/%d/%Y"  # type: ignore[index]
        row = con.execute("SELECT headers FROM mappings WHERE name = 'Clinic EHR monthly'").fetchone()
        assert row == (["Pseudonym", "Visit date", "Measure", "Score", "Visit"],)


def test_preview_shows_the_contract_rows_the_mapping_makes():
    frame = mp.preview(FIXTURES / "visits_long.csv", mp.load_mapping_file(FIXTURES / "long.json"), n=2)
    assert frame[
        ["_kap_row", "patient_id", "instrument", "assessed_on", "total", "phase"]
    ].values.tolist() == [
        [2, "K00001", "PHQ-9", "2026-01-05", "18", "preparation"],
        [3, "K00001", "PHQ-9", "2026-03-02", "9", "integration"],
    ]


# --------------------------------------------------------------------------------------- suggesting


def test_suggest_matches_headers_by_name_and_content():
    headers = ["Pseudonym", "Visit date", "Measure", "Score", "Visit"]
    samples = {
        "Pseudonym": ["K00001", "K00002"],
        "Visit date": ["05/01/2026", "31/01/2026"],
        "Measure": ["PHQ9", "GAD-7"],
        "Score": ["18", "9"],
        "Visit": ["preparation", "Post"],
    }
    m = mp.suggest(headers, samples)
    assert (m.kind, m.layout) == ("scores", "long")
    assert m.columns == {
        "patient_id": "Pseudonym",
        "instrument": "Measure",
        "assessed_on": "Visit date",
        "total": "Score",
        "phase": "Visit",
    }
    assert m.date_format == "%d/%m/%Y"
    assert m.values == {"instrument": {"PHQ9": "PHQ-9"}}
    # By content alone: odd headers, an ID-like column and a date column.
    m = mp.suggest(
        ["a", "b", "c", "d"],
        {"a": ["X-101", "X-102"], "b": ["2026-01-05"], "c": ["PHQ-9"], "d": ["7"]},
        "scores",
    )
    assert (m.columns["patient_id"], m.columns["assessed_on"], m.columns["instrument"]) == ("a", "b", "c")


def test_suggest_finds_a_wide_layout_by_scale_prefixed_headers():
    headers = ["record", "date", *[f"PHQ9_{n}" for n in range(1, 10)], "GAD7_total"]
    m = mp.suggest(headers, {"record": ["S01"], "date": ["2026-01-05"]})
    assert m.layout == "wide"
    assert m.columns == {"patient_id": "record", "assessed_on": "date"}
    assert m.scales == {
        "PHQ-9": {f"item_{n}": f"PHQ9_{n}" for n in range(1, 10)},
        "GAD-7": {"total": "GAD7_total"},
    }


# -------------------------------------------------------------------------------------------- CLI


def test_cli_load_with_a_mapping_and_new_patients(tmp_path):
    fixed = write_text(
        tmp_path / "v.csv", (FIXTURES / "visits_long.csv").read_text().replace("31/02", "28/02")
    )
    proc = run_cli(
        "load", str(fixed), "--mapping", str(FIXTURES / "long.json"), "--db", "kap.duckdb", cwd=tmp_path
    )
    assert proc.returncode == 2 and "patient K00001 is not in the database" in proc.stderr
    proc = run_cli(
        "load",
        str(fixed),
        "--mapping",
        str(FIXTURES / "long.json"),
        "--new-patients",
        "--db",
        "kap.duckdb",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        "v.csv: scores, 5 rows read, 5 loaded, 0 already present, 0 rejected, "
        "2 new patients with unknown attributes (batch 1)"
    )
    bad = write_text(tmp_path / "bad.json", '{"layout": "diagonal"}')
    proc = run_cli("load", str(fixed), "--mapping", str(bad), "--db", "kap.duckdb", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("bad.json: unknown layout 'diagonal'; expected long, wide or redcap")
    assert "Traceback" not in proc.stderr
