"""FHIR R4 in and out (kapdata.fhir): what each resource becomes, what is skipped or refused, and the
``export --format fhir`` Bundle.

Fixtures in ``tests/fixtures/fhir/`` are synthetic, written for these tests; every expectation below is
worked out by hand from them (the comments give the arithmetic).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from fhir.resources.R4B.bundle import Bundle

from kapdata import db, fhir, ingest
from kapdata import export as ex

from .conftest import run_cli

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "fhir"
KEY = b"test-key-not-secret"
PATIENT_1 = "7f3c1a9e-0000-4000-8000-000000000001"
PSEUDONYM_RE = re.compile(r"F[0-9A-HJKMNP-TV-Z]{10}")
SENTINELS = ("NAME-SENTINEL", "GIVEN-SENTINEL", "1911-11-11", "ADDRESS-SENTINEL", "CITY-SENTINEL", "555-0100")


def rows(result: fhir.FhirResult, kind: str) -> list[dict[str, Any]]:
    [conv] = [c for c in result.converted if c.kind == kind]
    return conv.table.to_pylist()


def items(row: dict[str, Any], n: int) -> list[str | None]:
    return [row[f"item_{i}"] for i in range(1, n + 1)]


def write_json(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def write_ndjson(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


def phq9_total(pid: str, when: str, value: object, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "44261-6"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value},
        **extra,
    }


# ------------------------------------------------------------------------------------ the pseudonym


def test_pseudonym_is_keyed_stable_and_a_valid_patient_id() -> None:
    a = fhir.pseudonym("abc", KEY)
    assert a == fhir.pseudonym("abc", KEY)
    assert a != fhir.pseudonym("abc", b"another key")
    assert a != fhir.pseudonym("abd", KEY)
    assert PSEUDONYM_RE.fullmatch(a)
    assert re.fullmatch(ingest.PATIENT_ID_RE, a)
    # no O, I or L: two pseudonyms never fold to the same look-alike spelling
    assert not set(a) & set("OIL")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2012-05-30T21:34:39+12:00", "2012-05-30T21:34:39"),  # 09:34 UTC, still 30 May locally
        ("2012-05-30T08:00:00+12:00", "2012-05-30T08:00:00"),  # 29 May 20:00 UTC: the local date wins
        ("2025-03-04T23:30:00-05:00", "2025-03-04T23:30:00"),  # 5 March in UTC
        ("2025-03-04T23:30:00.250Z", "2025-03-04T23:30:00.250"),
        ("2025-03-04", "2025-03-04"),
        ("2025-03", "2025-03"),  # partial dates pass through for validation to refuse
        (None, ""),
    ],
)
def test_local_datetime_keeps_its_own_local_date(given: str | None, expected: str) -> None:
    assert fhir.local_datetime(given) == expected


# --------------------------------------------------------------------------- a Bundle with everything


@pytest.fixture(scope="module")
def bundle_result() -> fhir.FhirResult:
    return fhir.read_fhir(FIXTURES / "bundle_qr.json", key=KEY)


def test_bundle_patient_becomes_a_pseudonym_and_nothing_else(bundle_result: fhir.FhirResult) -> None:
    [patient] = rows(bundle_result, "patients")
    pid = fhir.pseudonym(PATIENT_1, KEY)
    assert patient == {"patient_id": pid, "_kap_row": 1, "_kap_source": "bundle_qr.json", "_kap_error": ""}
    everything = repr(bundle_result)
    for sentinel in SENTINELS:
        assert sentinel not in everything
    assert PATIENT_1 not in everything


def test_bundle_questionnaire_responses(bundle_result: fhir.FhirResult) -> None:
    pid = fhir.pseudonym(PATIENT_1, KEY)
    phq, gad, pcl = rows(bundle_result, "scores")
    # PHQ-9 by item linkIds "/44250-9"…; item 3 is coded LA6571-9 ("Nearly every day" = 3) but carries the
    # ordinalValue extension 1: the extension wins. Stated total 8 = 2+1+1+2+0+1+0+0+1.
    assert phq["patient_id"] == pid
    assert (phq["instrument"], phq["assessed_on"], phq["total"]) == ("PHQ-9", "2025-03-04T23:30:00", "8")
    assert items(phq, 9) == ["2", "1", "1", "2", "0", "1", "0", "0", "1"]
    assert phq["item_10"] is None
    assert (phq["_kap_row"], phq["_kap_error"]) == (2, "")
    # GAD-7 by canonical ".../Questionnaire/gad-7", items by definition inside a group, no total
    assert (gad["instrument"], gad["assessed_on"], gad["total"]) == ("GAD-7", "2025-03-05", None)
    assert items(gad, 7) == ["3", "2", "2", "1", "1", "0", "0"]
    assert gad["_kap_row"] == 3
    # PCL-5 by canonical 101697-1, items without codes taken in order: item i answers i mod 5
    assert (pcl["instrument"], pcl["assessed_on"], pcl["total"]) == ("PCL-5", "2025-03-06T09:00:00", None)
    assert items(pcl, 20) == [str(i % 5) for i in range(1, 21)]
    assert pcl["patient_id"] == pid  # "Patient/<id>" and the urn:uuid fullUrl are the same patient
    assert any("items taken in order" in n for n in bundle_result.notes)


def test_bundle_sessions_from_procedure_and_medication_administration(bundle_result: fhir.FhirResult) -> None:
    pid = fhir.pseudonym(PATIENT_1, KEY)
    assert rows(bundle_result, "sessions") == [
        # Procedure "Ketamine infusion, intravenous" at 23:00 -08:00: 1 March locally
        {
            "patient_id": pid,
            "session_date": "2025-03-01",
            "route": "IV",
            "dose_mg": None,
            "dose_mg_per_kg": None,
            "_kap_row": 6,
            "_kap_source": "bundle_qr.json",
            "_kap_error": "",
        },
        # RxNorm 6130, SNOMED CT route 78421000 (intramuscular), 50 mg
        {
            "patient_id": pid,
            "session_date": "2025-03-08",
            "route": "IM",
            "dose_mg": "50",
            "dose_mg_per_kg": None,
            "_kap_row": 7,
            "_kap_source": "bundle_qr.json",
            "_kap_error": "",
        },
    ]


def test_bundle_skipped(bundle_result: fhir.FhirResult) -> None:
    assert bundle_result.skipped == {
        "Encounter": 1,
        "MedicationAdministration (not ketamine)": 1,  # ondansetron
        "QuestionnaireResponse (not PHQ-9, GAD-7 or PCL-5)": 1,  # the PHQ-2 panel 55757-9
    }


# ----------------------------------------------------------------------------- NDJSON of Observations


@pytest.fixture(scope="module")
def ndjson_result() -> fhir.FhirResult:
    return fhir.read_fhir(FIXTURES / "observations.ndjson", key=KEY)


def test_ndjson_observations(ndjson_result: fhir.FhirResult) -> None:
    p2, p3 = fhir.pseudonym("p-002", KEY), fhir.pseudonym("p-003", KEY)
    got = [
        (r["_kap_row"], r["patient_id"], r["instrument"], r["assessed_on"], r["total"], r["_kap_error"])
        for r in rows(ndjson_result, "scores")
    ]
    assert got == [
        (1, p2, "PHQ-9", "2012-05-30T21:34:39", "12", ""),
        (3, p2, "GAD-7", "2012-05-30T08:15:00", "9", ""),
        # the panel's items sum to 1×8 + 2 = 10 but its total component says 14: passed on as stated, for
        # validation to reject the row
        (6, p2, "PHQ-9", "2012-06-15T07:00:00", "14", ""),
        (7, p2, "PHQ-9", "2012-07-01T10:00:00", "30", ""),  # impossible (> 27): also validation's to reject
        (10, p3, "GAD-7", "2012-09-01T00:30:00", "3", ""),  # line 8 is blank: line numbers stay the file's
    ]
    panel = rows(ndjson_result, "scores")[2]
    assert items(panel, 9) == ["1"] * 8 + ["2"]
    assert rows(ndjson_result, "scores")[0]["item_1"] is None


def test_ndjson_skipped_codes_are_counted_not_errors(ndjson_result: fhir.FhirResult) -> None:
    assert ndjson_result.skipped == {
        "Observation LOINC 29463-7": 1,
        "Observation LOINC 55758-7 (PHQ-2)": 2,
        "PHQ-9 Observation with status entered-in-error": 1,
    }
    assert [c.kind for c in ndjson_result.converted] == ["scores"]


def test_items_as_separate_observations_join_their_total(tmp_path: Path) -> None:
    when = "2025-02-01T10:00:00+02:00"
    gad_codes = ["69725-0", "68509-9", "69733-4", "69734-2", "69735-9", "69689-8", "69736-7"]
    docs = [
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": "Patient/x1"},
            "effectiveDateTime": when,
            "valueCodeableConcept": {"coding": [{"system": "http://loinc.org", "code": "LA6570-1"}]},  # 2
        }
        for code in gad_codes
    ]
    docs.append(
        phq9_total("x1", when, 14) | {"code": {"coding": [{"system": "http://loinc.org", "code": "70274-6"}]}}
    )
    result = fhir.read_fhir(write_ndjson(tmp_path / "gad.ndjson", docs), key=KEY)
    [row] = rows(result, "scores")
    # 7 items of 2 = 14, the stated total
    assert (row["instrument"], row["assessed_on"], row["total"], row["_kap_row"]) == (
        "GAD-7",
        "2025-02-01T10:00:00",
        "14",
        1,
    )
    assert items(row, 7) == ["2"] * 7


# ------------------------------------------------------------------------------ refused and row errors


def test_stu3_bundle_is_refused_naming_the_version() -> None:
    with pytest.raises(fhir.FhirError) as exc:
        fhir.read_fhir(FIXTURES / "stu3_bundle.json", key=KEY)
    message = str(exc.value)
    assert "FHIR STU3" in message and "only FHIR R4 is read" in message
    assert "stu3_bundle.json entry 2" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("resource", "version", "marker"),
    [
        ({"resourceType": "MedicationOrder", "status": "active"}, "DSTU2", "MedicationOrder"),
        ({"resourceType": "QuestionnaireResponse", "status": "completed", "group": {}}, "DSTU2", "group"),
        ({"resourceType": "CapabilityStatement", "fhirVersion": "3.0.2"}, "STU3", "fhirVersion 3.0.2"),
        (
            phq9_total("a", "2017-01-01", 3, context={"reference": "Encounter/e"}),
            "STU3",
            "Observation.context",
        ),
        ({"resourceType": "Condition", "clinicalStatus": "active"}, "STU3", "clinicalStatus"),
        ({"resourceType": "ProcedureRequest", "status": "active"}, "STU3", "ProcedureRequest"),
        (
            {
                "resourceType": "Patient",
                "meta": {"profile": ["http://hl7.org/fhir/STU3/StructureDefinition/x"]},
            },
            "STU3",
            "meta.profile",
        ),
    ],
)
def test_older_versions_are_refused(
    tmp_path: Path, resource: dict[str, Any], version: str, marker: str
) -> None:
    path = write_ndjson(tmp_path / "old.ndjson", [phq9_total("a", "2025-01-01", 3), resource])
    with pytest.raises(fhir.FhirError, match=re.escape(f"FHIR {version}")) as exc:
        fhir.read_fhir(path, key=KEY)
    assert "old.ndjson line 2" in str(exc.value) and marker in str(exc.value)


def test_an_r4_bundle_is_not_mistaken_for_stu3(tmp_path: Path) -> None:
    r4 = [
        {
            "resourceType": "Condition",
            "clinicalStatus": {"coding": [{"code": "active"}]},
            "recordedDate": "2020",
        },
        {"resourceType": "Encounter", "status": "finished", "reasonCode": [{"text": "x"}]},
        {
            "resourceType": "Patient",
            "meta": {"profile": ["http://hl7.org/fhir/4.0/StructureDefinition/Patient"]},
        },
    ]
    result = fhir.read_fhir(write_ndjson(tmp_path / "r4.ndjson", r4), key=KEY)
    assert result.skipped == {"Condition": 1, "Encounter": 1, "Patient without an id": 1}


def test_an_invalid_r4_resource_becomes_a_row_error_without_its_value(tmp_path: Path) -> None:
    bad = phq9_total("a", "2025-01-01", 7, colour="SECRET-VALUE")
    result = fhir.read_fhir(write_ndjson(tmp_path / "bad.ndjson", [bad]), key=KEY)
    [row] = rows(result, "scores")
    assert row["total"] == "7"
    assert row["_kap_error"] == "not valid FHIR R4: Observation.colour is not an element of FHIR R4"
    assert "SECRET-VALUE" not in repr(result)


def test_subject_that_is_not_a_patient_is_a_row_error(tmp_path: Path) -> None:
    obs = phq9_total("a", "2025-01-01", 7) | {"subject": {"reference": "Group/g1"}}
    [row] = rows(fhir.read_fhir(write_ndjson(tmp_path / "g.ndjson", [obs]), key=KEY), "scores")
    assert row["patient_id"] == ""
    assert row["_kap_error"] == "the subject is not a reference to a Patient"


def test_answer_code_without_a_score_is_a_row_error(tmp_path: Path) -> None:
    qr = {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "questionnaire": "http://loinc.org/q/101697-1",
        "subject": {"reference": "Patient/a"},
        "authored": "2025-01-01",
        "item": [{"linkId": f"q{i}", "answer": [{"valueCoding": {"code": "X"}}]} for i in range(1, 21)],
    }
    [row] = rows(fhir.read_fhir(write_ndjson(tmp_path / "q.ndjson", [qr]), key=KEY), "scores")
    assert row["instrument"] == "PCL-5"
    assert row["_kap_error"].startswith("item_1: an answer is a code with no score")


def test_not_json_line_refuses_the_file_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.ndjson"
    path.write_text(json.dumps(phq9_total("a", "2025-01-01", 3)) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(fhir.FhirError, match="broken.ndjson line 2 is not JSON"):
        fhir.read_fhir(path, key=KEY)


# --------------------------------------------------------------------- folders, ids, mappings, sniffing


def test_folder_is_read_together(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    write_ndjson(
        folder / "Patient.ndjson", [{"resourceType": "Patient", "id": "p9", "birthDate": "1911-11-11"}]
    )
    write_ndjson(folder / "Observation.ndjson", [phq9_total("p9", "2025-01-02", 5)])
    write_json(folder / "manifest.json", {"transactionTime": "2025-01-03", "output": []})
    result = fhir.read_fhir(folder, key=KEY)
    [patient] = rows(result, "patients")
    [score] = rows(result, "scores")
    assert patient["patient_id"] == score["patient_id"] == fhir.pseudonym("p9", KEY)
    assert (patient["_kap_source"], score["_kap_source"]) == (
        "export/Patient.ndjson",
        "export/Observation.ndjson",
    )
    assert {c.source_name for c in result.converted} == {"export"}
    assert "export/manifest.json skipped: not a FHIR file" in result.notes
    assert "1911-11-11" not in repr(result)


def test_ids_already_pseudonymous(tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "o.ndjson", [phq9_total("K00042", "2025-01-02", 5)])
    [row] = rows(fhir.read_fhir(path, key=None, ids_are_pseudonymous=True), "scores")
    assert row["patient_id"] == "K00042"
    with pytest.raises(fhir.FhirError, match="key"):
        fhir.read_fhir(path, key=None)


def test_link_ids_from_a_mapping(tmp_path: Path) -> None:
    answers = [3, 3, 2, 2, 1, 1, 0, 0, 1]  # = 13
    qr = {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "questionnaire": "http://clinic.example/Questionnaire/intake-7",
        "subject": {"reference": "Patient/a"},
        "authored": "2025-01-05T08:00:00+09:00",
        "item": [{"linkId": f"a{i}", "answer": [{"valueInteger": v}]} for i, v in enumerate(answers, 1)]
        + [{"linkId": "score", "answer": [{"valueInteger": 13}]}],
    }
    path = write_ndjson(tmp_path / "qr.ndjson", [qr])
    # without a mapping nothing says this is a PHQ-9
    assert fhir.read_fhir(path, key=KEY).skipped == {"QuestionnaireResponse (not PHQ-9, GAD-7 or PCL-5)": 1}
    mapping = {"phq9": {f"item_{i}": f"a{i}" for i in range(1, 10)} | {"total": "score"}}
    [row] = rows(fhir.read_fhir(path, key=KEY, link_ids=mapping), "scores")
    assert (row["instrument"], row["assessed_on"], row["total"]) == ("PHQ-9", "2025-01-05T08:00:00", "13")
    assert items(row, 9) == [str(v) for v in answers]


def test_is_fhir(tmp_path: Path) -> None:
    assert fhir.is_fhir(FIXTURES / "bundle_qr.json")
    assert fhir.is_fhir(FIXTURES / "observations.ndjson")
    assert fhir.is_fhir(FIXTURES)
    assert not fhir.is_fhir(write_json(tmp_path / "other.json", {"a": 1}))
    (tmp_path / "scores.csv").write_text("patient_id,instrument\n", encoding="utf-8")
    assert not fhir.is_fhir(tmp_path / "scores.csv")
    assert not fhir.is_fhir(tmp_path / "missing.json")


def test_tables_are_text_with_int_row_numbers(bundle_result: fhir.FhirResult) -> None:
    for conv in bundle_result.converted:
        for name, typ in zip(conv.table.schema.names, conv.table.schema.types, strict=True):
            assert typ == (pa.int64() if name == "_kap_row" else pa.string()), name


# ---------------------------------------------------------------------------------- export --format fhir

PATIENTS = "patient_id,clinic,age_band,sex\nK-A1,North,25-34,female\nK-B2,North,35-44,male\n"
SESSIONS = "patient_id,session_date,route\nK-A1,2025-03-01,IV\nK-B2,2025-04-01,IM\n"
# K-B2's PHQ-9 lacks item 5: 8 answers summing to 12 prorate to 12 / 8 × 9 = 13.5 → 14
SCORES = """patient_id,instrument,assessed_on,total,item_1,item_2,item_3,item_4,item_5,item_6,item_7,item_8,\
item_9
K-A1,PHQ-9,2025-02-25,20,3,3,2,2,2,2,2,2,2
K-A1,GAD-7,2025-02-25,12,,,,,,,,,
K-B2,PHQ-9,2025-03-30,,2,2,2,2,,1,1,1,1
K-B2,PCL-5,2025-05-01,50,,,,,,,,,
"""
EXPORT_SECRET = "fhir-test"


@pytest.fixture(scope="module")
def export_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fhir_export")
    files = []
    for name, text in (("patients.csv", PATIENTS), ("sessions.csv", SESSIONS), ("scores.csv", SCORES)):
        (folder / name).write_text(text, encoding="utf-8")
        files.append(folder / name)
    path = folder / "kap.duckdb"
    ingest.load_files(files, path)
    with db.session(path) as con:  # two patients cannot pass a real floor: the fixture's floor is 1
        con.execute("INSERT OR REPLACE INTO settings VALUES ('k_anonymity_min', ?)", [1])
        db.bump_data_version(con)
    return path


def fhir_export(export_db: Path, out: Path, **spec: Any) -> ex.Export:
    with db.reader(export_db) as con:
        return ex.write_fhir_bundle(con, ex.ExportSpec(dates="calendar", **spec), out, secret=EXPORT_SECRET)


def test_export_bundle_validates_and_holds_each_score(export_db: Path, tmp_path: Path) -> None:
    export = fhir_export(export_db, tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "bundle.json").read_text(encoding="utf-8"))
    Bundle.model_validate(doc)
    assert doc["type"] == "collection"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bundle.json", "manifest.json"]
    obs = [e["resource"] for e in doc["entry"]]
    assert (export.rows, export.patients, len(obs)) == (4, 2, 4)
    got = sorted(
        (
            o["code"]["coding"][0]["code"],
            o["effectiveDateTime"],
            o["valueQuantity"]["value"],
            len(o.get("component", [])),
        )
        for o in obs
    )
    assert got == [
        ("101698-9", "2025-05-01", 50, 0),
        ("44261-6", "2025-02-25", 20, 9),
        ("44261-6", "2025-03-30", 14, 8),  # prorated, the missing item 5 left out
        ("70274-6", "2025-02-25", 12, 0),
    ]
    subjects = {o["subject"]["reference"] for o in obs}
    assert subjects == {"Patient/P0001", "Patient/P0002"}
    text = (tmp_path / "out" / "bundle.json").read_text(encoding="utf-8")
    assert "K-A1" not in text and "K-B2" not in text and "North" not in text
    prorated = next(o for o in obs if o["effectiveDateTime"] == "2025-03-30")
    assert "prorated" in prorated["note"][0]["text"]
    assert [c["code"]["coding"][0]["code"] for c in prorated["component"]][:4] == [
        "44250-9",
        "44255-8",
        "44259-0",
        "44254-1",
    ]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["format"] == "fhir" and manifest["calendar_dates_included"] is True


def test_export_round_trips_through_the_reader(export_db: Path, tmp_path: Path) -> None:
    fhir_export(export_db, tmp_path / "out")
    result = fhir.read_fhir(tmp_path / "out" / "bundle.json", key=None, ids_are_pseudonymous=True)
    got = sorted(
        (r["instrument"], r["assessed_on"], r["total"], r["item_1"], r["item_5"])
        for r in rows(result, "scores")
    )
    assert got == [
        ("GAD-7", "2025-02-25", "12", None, None),
        ("PCL-5", "2025-05-01", "50", None, None),
        ("PHQ-9", "2025-02-25", "20", "3", "2"),
        ("PHQ-9", "2025-03-30", "14", "2", None),
    ]
    assert all(r["_kap_error"] == "" for r in rows(result, "scores"))


def test_export_fhir_needs_calendar_dates_and_the_long_shape(export_db: Path, tmp_path: Path) -> None:
    with db.reader(export_db) as con:
        with pytest.raises(ex.ExportError, match="--dates calendar"):
            ex.write_fhir_bundle(con, ex.ExportSpec(), tmp_path / "a")
        with pytest.raises(ex.ExportError, match="--shape long"):
            ex.write_fhir_bundle(con, ex.ExportSpec(shape="wide", dates="calendar"), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_export_fhir_command_line(export_db: Path, tmp_path: Path) -> None:
    refused = run_cli("export", "--db", str(export_db), "--format", "fhir", "--out", "x", cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "--dates calendar" in refused.stderr
    done = run_cli(
        "export", "--db", str(export_db), "--format", "fhir", "--dates", "calendar", "--instrument", "phq9",
        "--out", "out", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "2 rows, 2 patients (long, fhir, calendar dates)" in done.stdout
    doc = json.loads((tmp_path / "out" / "bundle.json").read_text(encoding="utf-8"))
    assert {e["resource"]["code"]["coding"][0]["code"] for e in doc["entry"]} == {"44261-6"}


def test_ketamine_through_a_medication_resource_in_another_file(tmp_path: Path) -> None:
    folder = tmp_path / "mii"
    folder.mkdir()
    med = {
        "resourceType": "Medication",
        "id": "m1",
        "code": {"coding": [{"system": "http://fhir.de/CodeSystem/bfarm/atc", "code": "N01AX14"}]},
    }
    admin = {
        "resourceType": "MedicationAdministration",
        "status": "completed",
        "medicationReference": {"reference": "Medication/m1"},
        "subject": {"reference": "Patient/p1"},
        "effectivePeriod": {"start": "2025-06-01T22:30:00+02:00"},
        "dosage": {"route": {"text": "intranasal"}, "dose": {"value": 0.5, "unit": "mg/kg"}},
    }
    write_ndjson(folder / "a_MedicationAdministration.ndjson", [admin])
    write_ndjson(folder / "b_Medication.ndjson", [med])
    [row] = rows(fhir.read_fhir(folder, key=KEY), "sessions")
    assert (row["session_date"], row["route"], row["dose_mg"], row["dose_mg_per_kg"], row["_kap_error"]) == (
        "2025-06-01",
        "IN",
        None,
        "0.5",
        "",
    )


# ------------------------------------------- linkIds that are not LOINC codes (the MII PRO PHQ-9 profile)

MII_PHQ9 = "https://www.medizininformatik-initiative.de/fhir/ext/modul-pro/Questionnaire/mii-qst-pro-phq-9"
LA = ["LA6568-5", "LA6569-3", "LA6570-1", "LA6571-9"]  # 0, 1, 2, 3


def coded(link_id: str, code: str) -> dict[str, Any]:
    return {"linkId": link_id, "answer": [{"valueCoding": {"system": "http://loinc.org", "code": code}}]}


def mii_qr(when: str, item: list[dict[str, Any]], pid: str = "m1") -> dict[str, Any]:
    return {
        "resourceType": "QuestionnaireResponse",
        "status": "completed",
        "questionnaire": MII_PHQ9,
        "subject": {"reference": f"Patient/{pid}"},
        "authored": when,
        "item": item,
    }


def numbered_items(scores: list[int], total: object = 8) -> list[dict[str, Any]]:
    """Variant (a): phq-phq9-q01 … q09, the total, then q10 (the difficulty question)."""
    return [
        *(coded(f"phq-phq9-q{n:02d}", LA[v]) for n, v in enumerate(scores, 1)),
        {"linkId": "phq-phq9-score-total", "answer": [{"valueDecimal": total}]},
        coded("phq-phq9-q10", "LA6573-5"),  # "Somewhat difficult"
    ]


def test_mii_numbered_link_ids_and_the_same_total_as_an_observation() -> None:
    result = fhir.read_fhir(FIXTURES / "mii_pro_phq9_numbered.json", key=KEY)
    # the QuestionnaireResponse (entry 2) and the Observation 44261-6 (entry 3) at the same local time are one
    # assessment: one row, items from the response, total 8 from both; 1+1+2+1+0+1+1+0+1 = 8
    [row] = rows(result, "scores")
    assert (row["patient_id"], row["instrument"], row["assessed_on"], row["total"]) == (
        fhir.pseudonym("mii-p-001", KEY),
        "PHQ-9",
        "2024-03-15T10:00:00",
        "8",
    )
    assert items(row, 9) == ["1", "1", "2", "1", "0", "1", "1", "0", "1"]
    assert "item_10" not in row  # q10 (difficulty, "Somewhat difficult") is not scored
    assert (row["_kap_row"], row["_kap_error"]) == (2, "")
    notes = " | ".join(result.notes)
    assert "joined with the Observation of the same score" in notes
    assert "items taken in order" in notes
    assert "1 answer(s) to the difficulty question" in notes
    for sentinel in ("NAME-SENTINEL", "GIVEN-SENTINEL", "1911-11-11"):
        assert sentinel not in repr(result)


def test_mii_lettered_link_ids_summer_and_winter_offsets_keep_their_local_time() -> None:
    result = fhir.read_fhir(FIXTURES / "mii_pro_phq9_lettered.ndjson", key=KEY)
    winter, summer = rows(result, "scores")
    # line 1: a winter (+01:00) total alone; lines 2 and 3: the summer (+02:00) response and its total
    assert (winter["assessed_on"], winter["total"], winter["_kap_row"]) == ("2024-01-10T08:00:00", "11", 1)
    assert items(winter, 9) == [None] * 9
    # phq-phq2a … phq-phq2i = items 1 … 9: 2+2+3+3+1+1+1+0+1 = 14; phq-phq9-difficulty ("Very difficult")
    # left out
    assert (summer["assessed_on"], summer["total"], summer["_kap_row"]) == ("2024-07-02T09:30:00", "14", 2)
    assert items(summer, 9) == ["2", "2", "3", "3", "1", "1", "1", "0", "1"]
    assert (winter["_kap_error"], summer["_kap_error"]) == ("", "")
    assert any("joined with the Observation" in n for n in result.notes)


def test_mii_response_alone_reads_its_total_and_drops_the_difficulty_question(tmp_path: Path) -> None:
    scores = [2, 2, 3, 3, 1, 1, 1, 0, 1]  # = 14
    item = [coded(f"phq-phq2{letter}", LA[v]) for letter, v in zip("abcdefghi", scores, strict=True)]
    item += [
        {"linkId": "phq-phq9-score-total", "answer": [{"valueDecimal": 14}]},
        coded("phq-phq9-difficulty", "LA6575-0"),  # "Very difficult"
    ]
    path = write_ndjson(tmp_path / "b.ndjson", [mii_qr("2024-03-15T10:00:00+01:00", item)])
    [row] = rows(fhir.read_fhir(path, key=KEY), "scores")
    assert (row["instrument"], row["assessed_on"], row["total"], row["_kap_error"]) == (
        "PHQ-9",
        "2024-03-15T10:00:00",
        "14",
        "",
    )
    assert items(row, 9) == [str(v) for v in scores]


def test_lettered_items_are_placed_by_their_letter_not_the_file_order(tmp_path: Path) -> None:
    scores = dict(zip("abcdefghi", [0, 1, 2, 3, 0, 1, 2, 3, 0], strict=True))
    item = [coded(f"phq-phq2{letter}", LA[scores[letter]]) for letter in "ihgfedcba"]  # reversed
    path = write_ndjson(tmp_path / "r.ndjson", [mii_qr("2024-03-15T10:00:00+01:00", item)])
    [row] = rows(fhir.read_fhir(path, key=KEY), "scores")
    assert items(row, 9) == ["0", "1", "2", "3", "0", "1", "2", "3", "0"]
    assert row["total"] is None


def test_the_tenth_numbered_phq9_question_is_dropped_whatever_its_answer(tmp_path: Path) -> None:
    # items q1 … q10 answered as integers, no text, no difficulty code: q10 is still the difficulty question
    item = [{"linkId": f"q{n}", "answer": [{"valueInteger": 1}]} for n in range(1, 11)]
    path = write_ndjson(tmp_path / "t.ndjson", [mii_qr("2024-03-15T10:00:00+01:00", item)])
    result = fhir.read_fhir(path, key=KEY)
    [row] = rows(result, "scores")
    assert items(row, 9) == ["1"] * 9
    assert row["_kap_error"] == ""
    assert any("difficulty question" in n for n in result.notes)


def test_difficulty_by_text_only_for_phq9_and_gad7(tmp_path: Path) -> None:
    # PCL-5 item 16 reads "difficulty concentrating": a scored item, not a difficulty question
    item = [{"linkId": f"p{n}", "text": f"item {n}", "answer": [{"valueInteger": 1}]} for n in range(1, 21)]
    item[15]["text"] = "Having difficulty concentrating?"
    qr = mii_qr("2025-01-01", item) | {"questionnaire": "http://loinc.org/q/101697-1"}
    [row] = rows(fhir.read_fhir(write_ndjson(tmp_path / "p.ndjson", [qr]), key=KEY), "scores")
    assert items(row, 20) == ["1"] * 20
    gad = [{"linkId": f"g{n}", "answer": [{"valueInteger": 2}]} for n in range(1, 8)]
    gad.append(
        {
            "linkId": "g8",
            "text": "How difficult have these problems made it…",
            "answer": [{"valueInteger": 1}],
        }
    )
    qr = mii_qr("2025-01-01", gad) | {"questionnaire": "http://example.org/Questionnaire/gad-7"}
    [row] = rows(fhir.read_fhir(write_ndjson(tmp_path / "g.ndjson", [qr]), key=KEY), "scores")
    assert (row["instrument"], items(row, 7)) == ("GAD-7", ["2"] * 7)


def test_a_response_with_nothing_readable_is_a_row_error_in_words(tmp_path: Path) -> None:
    item = [coded(f"x-{word}", LA[1]) for word in ("alpha", "beta", "gamma")]  # 3 unknown items, no total
    path = write_ndjson(tmp_path / "u.ndjson", [mii_qr("2024-03-15T10:00:00+01:00", item)])
    result = fhir.read_fhir(path, key=KEY)
    [row] = rows(result, "scores")
    assert row["total"] is None
    assert row["_kap_error"].startswith("neither the items nor the total of this PHQ-9 could be read")
    assert "not exactly 9 to take in order" in row["_kap_error"]
    assert any("items could not be identified" in n for n in result.notes)
    empty = mii_qr("2024-03-15T10:00:00+01:00", [{"linkId": "q1"}])
    [row] = rows(fhir.read_fhir(write_ndjson(tmp_path / "e.ndjson", [empty]), key=KEY), "scores")
    assert row["_kap_error"].endswith("it holds no answered item")


def test_total_only_when_the_items_cannot_be_placed(tmp_path: Path) -> None:
    item = [coded(f"q{n}", LA[1]) for n in (1, 2, 3)] + [
        {"linkId": "phq9-sum", "answer": [{"valueInteger": 3}]}
    ]
    result = fhir.read_fhir(write_ndjson(tmp_path / "s.ndjson", [mii_qr("2024-03-15", item)]), key=KEY)
    [row] = rows(result, "scores")
    assert (row["total"], row["_kap_error"]) == ("3", "")
    assert "item_1" not in row  # only totals: no item columns
    assert any("items could not be identified" in n for n in result.notes)


# ------------------------------------------------------ one assessment sent as a response and an Observation


def test_response_and_observation_with_different_totals_is_a_row_error_naming_both(tmp_path: Path) -> None:
    when = "2024-03-15T10:00:00+01:00"
    docs = [phq9_total("m1", when, 9), mii_qr(when, numbered_items([1, 1, 2, 1, 0, 1, 1, 0, 1]))]
    [row] = rows(fhir.read_fhir(write_ndjson(tmp_path / "c.ndjson", docs), key=KEY), "scores")
    assert items(row, 9) == ["1", "1", "2", "1", "0", "1", "1", "0", "1"]
    assert row["_kap_error"] == (
        "two different total values for one PHQ-9 at the same time: 8 in the QuestionnaireResponse "
        "(c.ndjson line 2) and 9 in the Observation (c.ndjson line 1)"
    )


def test_response_joins_an_observation_only_at_the_same_local_time_and_patient(tmp_path: Path) -> None:
    scores = [1, 1, 2, 1, 0, 1, 1, 0, 1]
    docs = [
        phq9_total("m1", "2024-03-15T10:00:00+01:00", 8),
        mii_qr("2024-03-15T11:00:00+01:00", numbered_items(scores)),  # an hour later: another assessment
        phq9_total("m2", "2024-03-16T10:00:00+01:00", 8),
        mii_qr("2024-03-16T10:00:00+01:00", numbered_items(scores), pid="m3"),  # another patient
    ]
    result = fhir.read_fhir(write_ndjson(tmp_path / "d.ndjson", docs), key=KEY)
    got = [(r["_kap_row"], r["assessed_on"], r["total"], r["item_1"]) for r in rows(result, "scores")]
    assert got == [
        (1, "2024-03-15T10:00:00", "8", None),
        (3, "2024-03-16T10:00:00", "8", None),
        (2, "2024-03-15T11:00:00", "8", "1"),
        (4, "2024-03-16T10:00:00", "8", "1"),
    ]
    assert not any("joined" in n for n in result.notes)


def test_unreadable_response_joined_with_its_observation_keeps_the_observation(tmp_path: Path) -> None:
    when = "2024-03-15T10:00:00+01:00"
    unreadable = mii_qr(when, [coded("x-alpha", LA[1])])
    result = fhir.read_fhir(
        write_ndjson(tmp_path / "k.ndjson", [phq9_total("m1", when, 8), unreadable]), key=KEY
    )
    [row] = rows(result, "scores")
    assert (row["total"], row["_kap_error"]) == ("8", "")
    assert any("gave neither items nor a total: the Observation's values kept" in n for n in result.notes)


# ------------------------------------------------------------------------------------ Patient resources


def test_a_fhir_patient_names_a_patient_and_never_replaces_or_blocks_its_attributes(tmp_path: Path) -> None:
    """A FHIR Patient gives no attribute (none is read): a new patient is created with unknown attributes,
    which a later patients file fills in; a patient already known is left as it is (not a conflict)."""
    csv = tmp_path / "patients.csv"
    csv.write_text(
        "patient_id,clinic,provider,age_band,sex,primary_condition,route\n"
        "K00001,Riverside,PR09,65+,female,MDD,IV\n"
        "K00003,Lakeside,PR02,25-34,male,PTSD,IM\n"
    )
    bundle = write_json(
        tmp_path / "b.json",
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": {"resourceType": "Patient", "id": pid}} for pid in ("K00001", "K00002")],
        },
    )

    def patients(path: Path) -> dict[str, tuple[Any, ...]]:
        with db.reader(path) as con:
            found = con.execute(
                "SELECT patient_id, clinic, attributes_known, batch_id, attributes_batch_id FROM patients"
            ).fetchall()
        return {r[0]: r[1:] for r in found}

    # The patients file first, then the bundle: K00001 keeps its attributes, K00002 is created unknown.
    first = tmp_path / "csv_first.duckdb"
    ingest.load_files([csv], first)
    result = ingest.load_files([bundle], first, fhir_ids_are_pseudonymous=True)
    [f] = result.files
    assert (f.rows_loaded, f.rows_already_present, f.rows_rejected) == (1, 1, 0)
    assert any("1 patient(s) named without any attribute" in p.reason for p in result.problems)
    assert patients(first) == {
        "K00001": ("Riverside", True, 1, 1),
        "K00002": (None, False, 2, None),
        "K00003": ("Lakeside", True, 1, 1),
    }

    # The bundle first, then the patients file: the file fills in K00001; undoing it makes it unknown again.
    second = tmp_path / "fhir_first.duckdb"
    ingest.load_files([bundle], second, fhir_ids_are_pseudonymous=True)
    [f] = ingest.load_files([csv], second).files
    assert (f.rows_loaded, f.rows_already_present) == (2, 0)  # K00001 filled in, K00003 new
    assert patients(second) == {
        "K00001": ("Riverside", True, 1, 2),
        "K00002": (None, False, 1, None),
        "K00003": ("Lakeside", True, 2, 2),
    }
    ingest.undo_batch(2, second)
    assert patients(second) == {"K00001": (None, False, 1, None), "K00002": (None, False, 1, None)}
