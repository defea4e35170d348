"""Research exports (DESIGN §6): shapes, de-identification, dictionary, manifest and the command line.

The fixture is four hand-made patients whose every exported value is worked out in the golden files under
``tests/fixtures/export/`` (regenerate them with ``KAP_UPDATE_GOLDEN=1`` and read the diff by hand).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from kapdata import db, ingest
from kapdata import export as ex
from kapdata.cohort import CohortFilter

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "fixtures" / "export"
#: With this secret the source patients are keyed K-C3 → P0001, K-D4 → P0002, K-A1 → P0003, K-B2 → P0004.
SECRET = "export-test"
SOURCE_IDS = ("K-A1", "K-B2", "K-C3", "K-D4")

PATIENTS = """patient_id,clinic,provider,age_band,sex,primary_condition,route
K-A1,North,PR1,25-34,female,MDD,IV
K-B2,North,PR1,25-34,female,MDD,IV
K-C3,=South,PR2,45-54,male,PTSD,SL
K-D4,North,PR3,35-44,other,GAD,oral
"""
SESSIONS = """patient_id,session_date,route,dose_mg,dose_mg_per_kg,bp_sys_pre,bp_dia_pre,bp_sys_post,\
bp_dia_post,dissociation,side_effects
K-A1,2025-03-01,IV,35,0.5,120,80,130,85,10,nausea
K-A1,2025-03-15,IV,35,0.5,118,78,128,84,8,
K-B2,2025-04-01,IV,40,,125,82,135,88,12,headache;dizziness
K-C3,2025-05-10,SL,200,,,,,,4,
"""
# Phases (integration window 84 days): K-A1 first session 1 Mar, last 15 Mar; K-B2 1 Apr; K-C3 10 May;
# K-D4 has no session, so every score is preparation with no day.
# K-B2's follow-up PHQ-9 lacks item 9: 8 answers summing to 13 prorate to 13 / 8 x 9 = 14.6 -> 15.
SCORES = """patient_id,instrument,assessed_on,total,item_1,item_2,item_3,item_4,item_5,item_6,item_7,item_8,\
item_9
K-A1,PHQ-9,2025-02-25,20,3,3,2,2,2,2,2,2,2
K-A1,PHQ-9,2025-03-10,14,,,,,,,,,
K-A1,PHQ-9,2025-04-20,8,,,,,,,,,
K-A1,GAD-7,2025-02-25,12,,,,,,,,,
K-A1,GAD-7,2025-04-20,4,,,,,,,,,
K-B2,PHQ-9,2025-03-30,16,,,,,,,,,
K-B2,PHQ-9,2025-09-01,15,2,2,2,2,2,1,1,1,
K-C3,PCL-5,2025-05-01,50,,,,,,,,,
K-C3,PCL-5,2025-06-01,30,,,,,,,,,
K-D4,PHQ-9,2025-01-10,9,,,,,,,,,
"""
SOURCE_DATES = (
    "2025-02-25",
    "2025-03-10",
    "2025-04-20",
    "2025-03-30",
    "2025-09-01",
    "2025-05-01",
    "2025-06-01",
    "2025-01-10",
    "2025-03-01",
    "2025-03-15",
    "2025-04-01",
    "2025-05-10",
)
ISO_DATE = re.compile(rb"\d{4}-\d{2}-\d{2}")


def make_db(
    folder: Path,
    patients: str = PATIENTS,
    sessions: str = SESSIONS,
    scores: str = SCORES,
    k_floor: int | None = 1,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for name, text in (("patients.csv", patients), ("sessions.csv", sessions), ("scores.csv", scores)):
        if text:
            (folder / name).write_text(text, encoding="utf-8")
            files.append(folder / name)
    path = folder / "kap.duckdb"
    ingest.load_files(files, path)
    if k_floor is not None:
        # Four patients cannot pass any real floor: most tests look at the columns, not the refusal, so
        # the fixture's floor is 1 (below the settings page's range of 2-100; written straight to SQL).
        set_value(path, "INSERT OR REPLACE INTO settings VALUES ('k_anonymity_min', ?)", [k_floor])
    return path


@pytest.fixture(scope="module")
def fx_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_db(tmp_path_factory.mktemp("export"))


@pytest.fixture
def own_db(tmp_path: Path) -> Path:
    """A private copy for tests that change settings."""
    return make_db(tmp_path / "own")


def build(path: Path, spec: ex.ExportSpec | None = None, secret: str | None = SECRET) -> ex.Export:
    with db.reader(path) as con:
        return ex.build(con, spec or ex.ExportSpec(), secret=secret)


def data_frame(export: ex.Export) -> pd.DataFrame:
    data = export.files[export.spec.data_file]
    if export.spec.file_format == "parquet":
        return pq.read_table(io.BytesIO(data)).to_pandas()
    return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False)


def set_value(path: Path, sql: str, params: list[object]) -> None:
    with db.session(path) as con:
        con.execute(sql, params)
        db.bump_data_version(con)  # what every writer does: stored outcomes follow


# ---------------------------------------------------------------- shapes (golden files)


@pytest.mark.parametrize("shape", ex.SHAPES)
def test_export_shape_matches_golden_file(fx_db: Path, shape: str) -> None:
    export = build(fx_db, ex.ExportSpec(shape=shape))
    golden = GOLDEN / f"{shape}.csv"
    if os.environ.get("KAP_UPDATE_GOLDEN"):
        golden.write_bytes(export.files["data.csv"])
    assert export.files["data.csv"].decode() == golden.read_text(encoding="utf-8")


def test_long_export_data_dictionary_matches_golden_file(fx_db: Path) -> None:
    export = build(fx_db, ex.ExportSpec(instruments=("phq9",)))
    golden = GOLDEN / "long_phq9_dictionary.csv"
    if os.environ.get("KAP_UPDATE_GOLDEN"):
        golden.write_bytes(export.files[ex.DICTIONARY_FILE])
    assert export.files[ex.DICTIONARY_FILE].decode() == golden.read_text(encoding="utf-8")


def test_dictionary_has_one_row_per_data_column_in_order(fx_db: Path) -> None:
    for shape in ex.SHAPES:
        export = build(fx_db, ex.ExportSpec(shape=shape, dates="calendar"))
        dictionary = pd.read_csv(
            io.BytesIO(export.files[ex.DICTIONARY_FILE]), dtype=str, keep_default_na=False
        )
        assert list(dictionary.columns) == list(ex.DICTIONARY_COLUMNS)
        assert list(dictionary["column"]) == list(data_frame(export).columns)
        assert (dictionary["description"] != "").all()


def test_long_export_keeps_only_chosen_phases(fx_db: Path) -> None:
    frame = data_frame(build(fx_db, ex.ExportSpec(phases=("prep",), items=False)))
    assert list(zip(frame["patient_id"], frame["instrument"], frame["total"], strict=True)) == [
        ("P0001", "PCL-5", "50"),
        ("P0002", "PHQ-9", "9"),
        ("P0003", "GAD-7", "12"),
        ("P0003", "PHQ-9", "20"),
        ("P0004", "PHQ-9", "16"),
    ]
    assert set(frame["phase"]) == {"preparation"}
    assert "item_1" not in frame


def test_wide_export_has_columns_of_chosen_endpoint_phases_only(fx_db: Path) -> None:
    frame = data_frame(build(fx_db, ex.ExportSpec(shape="wide", phases=("latest",), quasi_identifiers=())))
    assert list(frame.columns) == [
        "patient_id",
        "instrument",
        "baseline",
        "baseline_prorated",
        "baseline_day",
        "latest",
        "latest_prorated",
        "latest_day",
        "latest_change",
        "latest_response",
        "latest_remission",
        "latest_reliable_improvement",
        "latest_reliable_deterioration",
    ]
    assert frame.loc[frame["patient_id"] == "P0004"].values.tolist() == [
        ["P0004", "PHQ-9", "16", "false", "-2", "15", "true", "153", "-1", "false", "false", "false", "false"]
    ]


def test_prorated_totals_are_marked_in_the_long_and_outcomes_shapes(fx_db: Path) -> None:
    """K-B2 (P0004) follow-up PHQ-9: items 1-8 sum to 13, item 9 missing: 13 / 8 x 9 = 14.6 -> 15."""
    long = data_frame(build(fx_db, ex.ExportSpec()))
    marked = long.loc[long["prorated"] == "true"]
    assert marked[["patient_id", "phase", "total", "item_8", "item_9"]].values.tolist() == [
        ["P0004", "follow-up", "15", "1", ""]
    ]
    assert set(long.loc[long["prorated"] != "true", "prorated"]) == {"false"}
    outcomes = data_frame(build(fx_db, ex.ExportSpec(shape="outcomes")))
    rows = outcomes.loc[outcomes["patient_id"] == "P0004"]
    assert rows[["phase", "baseline_prorated", "endpoint", "endpoint_prorated"]].values.tolist() == [
        ["dosing", "false", "", ""],
        ["integration", "false", "", ""],
        ["follow-up", "false", "15", "true"],
        ["latest", "false", "15", "true"],
    ]
    assert set(outcomes.loc[outcomes["patient_id"] != "P0004", "endpoint_prorated"]) == {"false", ""}
    parquet = data_frame(build(fx_db, ex.ExportSpec(file_format="parquet")))
    assert str(parquet["prorated"].dtype) == "bool"
    assert int(parquet["prorated"].sum()) == 1


def test_dictionary_documents_the_prorated_columns(fx_db: Path) -> None:
    for shape, columns in (("long", ["prorated"]), ("outcomes", ["baseline_prorated", "endpoint_prorated"])):
        export = build(fx_db, ex.ExportSpec(shape=shape))
        dictionary = pd.read_csv(
            io.BytesIO(export.files[ex.DICTIONARY_FILE]), dtype=str, keep_default_na=False
        )
        rows = dictionary.set_index("column").loc[columns]
        assert set(rows["type"]) == {"boolean"}
        assert all("mean of the answered items times the number of items" in d for d in rows["description"])
        assert all("PCL-5 totals are never prorated" in d for d in rows["description"])
        assert all(r.startswith("NHS Data Dictionary") for r in rows["source_or_loinc"])


def test_completers_only_keeps_scales_with_a_baseline_and_a_score_in_the_chosen_phase(fx_db: Path) -> None:
    # Any later score: K-D4 (baseline only) is left out, so the three others are keyed K-C3 → P0001,
    # K-A1 → P0002, K-B2 → P0003.
    any_later = data_frame(build(fx_db, ex.ExportSpec(shape="wide", completers_only=True)))
    assert list(zip(any_later["patient_id"], any_later["instrument"], strict=True)) == [
        ("P0001", "PCL-5"),
        ("P0002", "GAD-7"),
        ("P0002", "PHQ-9"),
        ("P0003", "PHQ-9"),
    ]
    integration = data_frame(
        build(fx_db, ex.ExportSpec(shape="wide", phases=("integration",), completers_only=True))
    )
    # K-B2 only has a follow-up score; K-A1 (PHQ-9 and GAD-7) and K-C3 completed integration.
    assert sorted(zip(integration["instrument"], integration["integration"], strict=True)) == [
        ("GAD-7", "4"),
        ("PCL-5", "30"),
        ("PHQ-9", "8"),
    ]


def test_minimum_scores_counts_questionnaires_of_the_chosen_scales(fx_db: Path) -> None:
    def patients(spec: ex.ExportSpec) -> int:
        return build(fx_db, spec).patients

    assert patients(ex.ExportSpec(min_scores=3)) == 1  # K-A1 has five
    assert patients(ex.ExportSpec(min_scores=2)) == 3  # K-A1, K-B2, K-C3
    assert patients(ex.ExportSpec(instruments=("PHQ-9",), min_scores=3)) == 1
    assert patients(ex.ExportSpec(instruments=("PHQ-9",), min_scores=2)) == 2
    assert patients(ex.ExportSpec(instruments=("PHQ-9",))) == 3


def test_cohort_age_band_and_sex_filters_select_patients(fx_db: Path) -> None:
    iv = build(fx_db, ex.ExportSpec(cohort=CohortFilter(routes=("IV",))))
    assert (iv.rows, iv.patients) == (7, 2)
    started = build(fx_db, ex.ExportSpec(cohort=CohortFilter(start_from=dt.date(2025, 4, 1))))
    assert started.patients == 2  # K-B2 (1 Apr) and K-C3 (10 May)
    older = build(fx_db, ex.ExportSpec(age_bands=("35-44", "45-54"), sexes=("male",)))
    assert (older.rows, older.patients) == (2, 1)
    assert build(fx_db, ex.ExportSpec(cohort=CohortFilter(clinics=("South",)))).rows == 0


def test_sessions_export_of_a_scale_keeps_patients_who_have_that_scale(fx_db: Path) -> None:
    frame = data_frame(build(fx_db, ex.ExportSpec(shape="sessions", instruments=("PCL-5",))))
    assert frame[["patient_id", "session_number", "day", "route", "dose_mg"]].values.tolist() == [
        ["P0001", "1", "0", "SL", "200.0"]
    ]


def test_empty_export_writes_headers_and_no_k(fx_db: Path) -> None:
    export = build(fx_db, ex.ExportSpec(cohort=CohortFilter(clinics=("nowhere",))))
    assert export.files["data.csv"].decode().count("\n") == 1
    assert (export.rows, export.patients, export.k_anonymity["k"]) == (0, 0, None)


# ---------------------------------------------------------------- de-identification


@pytest.mark.parametrize("shape", ex.SHAPES)
def test_default_export_has_no_source_patient_id_and_no_calendar_date(fx_db: Path, shape: str) -> None:
    export = build(fx_db, ex.ExportSpec(shape=shape), secret=None)
    for name, data in export.files.items():
        for source_id in SOURCE_IDS:
            assert source_id.encode() not in data, (name, source_id)
        for date in SOURCE_DATES:
            assert date.encode() not in data, (name, date)
        if name != ex.MANIFEST_FILE:  # the manifest carries its own creation time
            assert not ISO_DATE.search(data), name
    assert set(data_frame(export)["patient_id"]) == {f"P000{i}" for i in range(1, export.patients + 1)}
    assert export.manifest["calendar_dates_included"] is False


def test_calendar_dates_only_when_asked_and_the_manifest_says_so(fx_db: Path) -> None:
    export = build(fx_db, ex.ExportSpec(dates="calendar", items=False))
    frame = data_frame(export)
    assert "assessed_on" in frame
    assert frame.loc[frame["patient_id"] == "P0003", "assessed_on"].tolist()[:2] == [
        "2025-02-25",
        "2025-04-20",
    ]
    assert export.manifest["dates"] == "calendar"
    assert export.manifest["calendar_dates_included"] is True
    assert "INCLUDED" in export.manifest["de_identification"]["dates"]
    wide = data_frame(build(fx_db, ex.ExportSpec(shape="wide", dates="calendar")))
    assert {"baseline_on", "dosing_on", "latest_on"} <= set(wide.columns)
    outcomes = data_frame(build(fx_db, ex.ExportSpec(shape="outcomes", dates="calendar")))
    assert list(outcomes.columns[3:9]) == [
        "baseline",
        "baseline_prorated",
        "endpoint",
        "endpoint_prorated",
        "endpoint_on",
        "endpoint_day",
    ]


def test_patient_keys_are_redrawn_for_every_export(fx_db: Path) -> None:
    def first_key_of_pcl5(secret: str) -> str:
        frame = data_frame(build(fx_db, ex.ExportSpec(instruments=("PCL-5", "GAD-7")), secret=secret))
        return str(frame.loc[frame["instrument"] == "PCL-5", "patient_id"].iloc[0])

    # K-C3 (the only PCL-5 patient) is first under one secret and second under another.
    assert first_key_of_pcl5("export-test") == "P0001"
    assert first_key_of_pcl5("golden") == "P0002"
    files = set()
    with db.reader(fx_db) as con:
        for _ in range(6):
            export = ex.build(con, ex.ExportSpec(items=False))
            assert sorted(set(data_frame(export)["patient_id"])) == ["P0001", "P0002", "P0003", "P0004"]
            files.add(export.files["data.csv"])
    assert len(files) > 1  # the same keys, given to different patients from one export to the next


def test_csv_neutralises_formula_text_but_not_negative_numbers(fx_db: Path) -> None:
    csv_text = build(fx_db, ex.ExportSpec(instruments=("PCL-5",), items=False)).files["data.csv"].decode()
    assert csv_text.splitlines()[1] == "P0001,45-54,male,'=South,PTSD,SL,PCL-5,preparation,-9,50,false"
    parquet = data_frame(build(fx_db, ex.ExportSpec(instruments=("PCL-5",), file_format="parquet")))
    assert parquet["clinic"].iloc[0] == "=South"  # typed Parquet is not a spreadsheet: left as it is


def k_report(path: Path, spec: ex.ExportSpec | None = None) -> ex.KAnonymity:
    with db.reader(path) as con:
        return ex.preview(con, spec or ex.ExportSpec()).k_anonymity


SIX = (
    "patient_id,clinic,provider,age_band,sex,primary_condition,route\n"
    + "".join(
        f"{i},{'South' if i == 'S9' else 'North'},PR1,25-34,female,MDD,IV\n"
        for i in ("S0", "S1", "S2", "S3", "S4", "S9")
    ),
    "",
    "patient_id,instrument,assessed_on,total\n"
    + "".join(f"{i},PHQ-9,2025-01-02,10\n" for i in ("S0", "S1", "S2", "S3", "S4", "S9")),
)


def six_db(folder: Path) -> Path:
    """Six patients alike but for S9's clinic (South); the default floor (5)."""
    return make_db(folder, *SIX, k_floor=None)


def test_k_anonymity_is_the_smallest_group_over_the_quasi_identifiers_in_the_file(tmp_path: Path) -> None:
    path = make_db(tmp_path, k_floor=None)  # the real floor, 5
    k = k_report(path, ex.ExportSpec(quasi_identifiers=ex.QUASI_IDENTIFIERS))
    # K-A1 and K-B2 share every quasi-identifier; K-C3 and K-D4 are alone.
    assert k.quasi_identifiers == ex.QUASI_IDENTIFIERS
    assert (k.k, k.groups, k.groups_below_threshold, k.patients_in_groups_below_threshold) == (1, 3, 3, 4)
    assert k.threshold == 5 and k.refused
    assert "k-anonymity is 1 (under 5)" in k.warning
    two = build(fx_path := make_db(tmp_path / "low"), ex.ExportSpec(quasi_identifiers=("sex", "age_band")))
    assert two.k_anonymity["quasi_identifiers"] == ("age_band", "sex")
    assert [c for c in data_frame(two).columns if c in ex.QUASI_IDENTIFIERS] == ["age_band", "sex"]
    assert two.manifest["quasi_identifiers"] == ["age_band", "sex"]
    outcomes = build(fx_path, ex.ExportSpec(shape="outcomes"))
    assert outcomes.k_anonymity["quasi_identifiers"] == ()
    assert outcomes.k_anonymity["k"] == 4  # no quasi-identifiers: every patient in one group


def test_k_anonymity_suggests_the_columns_to_leave_out(tmp_path: Path) -> None:
    path = six_db(tmp_path)
    k = k_report(path, ex.ExportSpec(quasi_identifiers=ex.QUASI_IDENTIFIERS))
    assert (k.k, k.suggested_drop) == (1, ("clinic",))
    assert k.warning.endswith("Leaving out clinic gives k ≥ 5.")
    assert build(path, ex.ExportSpec(quasi_identifiers=("age_band", "sex"))).k_anonymity["k"] == 6
    assert build(path, ex.ExportSpec(quasi_identifiers=("age_band", "sex"))).k_anonymity["warning"] is None


def test_an_export_under_the_floor_is_refused_and_names_the_columns_to_leave_out(tmp_path: Path) -> None:
    path = six_db(tmp_path)
    spec = ex.ExportSpec(quasi_identifiers=ex.QUASI_IDENTIFIERS)
    with db.reader(path) as con:
        for make in (ex.build, ex.zip_bytes):
            with pytest.raises(
                ex.ExportRefused, match=r"^export refused: k-anonymity is 1 \(under 5\)"
            ) as info:
                make(con, spec)
            assert str(info.value).endswith("Leaving out clinic gives k ≥ 5.")
        with pytest.raises(ex.ExportRefused):
            ex.write_dir(con, spec, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_default_columns_are_the_most_quasi_identifiers_that_pass_the_floor(tmp_path: Path) -> None:
    path = six_db(tmp_path)
    export = build(path)  # no columns chosen: clinic (S9 alone in South) is left out
    assert [c for c in data_frame(export).columns if c in ex.QUASI_IDENTIFIERS] == [
        "age_band",
        "sex",
        "primary_condition",
        "route",
    ]
    assert export.k_anonymity["k"] == 6
    assert export.manifest["quasi_identifiers_left_out_by_default"] == ["clinic"]
    assert "clinic" in export.manifest["de_identification"]["columns_not_exported"]
    assert k_report(path).left_out_by_default == ("clinic",)


def test_the_floor_is_the_k_anonymity_min_setting(tmp_path: Path) -> None:
    path = six_db(tmp_path)
    set_value(path, "UPDATE settings SET value = ? WHERE key = 'k_anonymity_min'", [7])
    k = k_report(path)
    assert (k.threshold, k.k, k.quasi_identifiers, k.refused) == (7, 6, (), True)
    assert k.warning.endswith("The export has fewer than 7 patients: widen the filters.")
    with db.reader(path) as con, pytest.raises(ex.ExportRefused, match="fewer than 7 patients"):
        ex.build(con, ex.ExportSpec())
    set_value(path, "UPDATE settings SET value = ? WHERE key = 'k_anonymity_min'", [2])
    assert k_report(path, ex.ExportSpec(quasi_identifiers=ex.QUASI_IDENTIFIERS)).refused


# ---------------------------------------------------------------- manifest and files


def test_manifest_sha256_matches_each_written_file(fx_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with db.reader(fx_db) as con:
        ex.write_dir(con, ex.ExportSpec(shape="wide", file_format="parquet"), out)
    manifest = json.loads((out / ex.MANIFEST_FILE).read_text(encoding="utf-8"))
    assert sorted(p.name for p in out.iterdir()) == [
        "data.parquet",
        "data_dictionary.csv",
        "manifest.json",
        "table1.csv",
    ]
    assert set(manifest["files"]) == {"data.parquet", "data_dictionary.csv", "table1.csv"}
    for name, meta in manifest["files"].items():
        data = (out / name).read_bytes()
        assert meta == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def test_manifest_records_filters_counts_and_definitions_in_force(own_db: Path) -> None:
    set_value(own_db, "UPDATE instruments SET response_pct = ? WHERE code = 'PHQ-9'", [25])
    set_value(own_db, "UPDATE settings SET value = ? WHERE key = 'min_cell'", [3])
    spec = ex.ExportSpec(shape="wide", instruments=("phq9",), phases=("integration", "dosing"))
    export = build(own_db, spec)
    m = export.manifest
    assert (m["shape"], m["format"], m["rows"], m["patients"]) == ("wide", "csv", 3, 3)
    assert m["filters"]["instruments"] == ["PHQ-9"]
    assert m["filters"]["phases"] == ["dosing", "integration"]
    assert m["filters"]["clinics"] == "all"
    assert m["software"]["kapdata"] == ex.__version__
    assert m["definitions_in_force"]["settings"]["min_cell"] == 3
    phq9 = next(r for r in m["definitions_in_force"]["instruments"] if r["code"] == "PHQ-9")
    assert (phq9["response_pct"], phq9["remission_below"], phq9["reliable_change"]) == (25, 5, 6)
    dictionary = pd.read_csv(io.BytesIO(export.files[ex.DICTIONARY_FILE]), dtype=str).set_index("column")
    assert dictionary.loc["dosing_response", "source_or_loinc"].startswith(
        "PHQ-9 ≥ 25% reduction; PHQ-9 default: "
    )
    # K-A1 (P0002 among K-D4, K-A1, K-B2) went 20 → 14 while dosing: a 30% reduction, a response at 25%.
    assert data_frame(export).set_index("patient_id").loc["P0002", "dosing_response"] == "true"
    assert m["k_anonymity"]["k"] == 1


def test_parquet_export_round_trips_through_pandas_and_duckdb(fx_db: Path, tmp_path: Path) -> None:
    with db.reader(fx_db) as con:
        export = ex.write_dir(con, ex.ExportSpec(file_format="parquet"), tmp_path, secret=SECRET)
    parquet = tmp_path / "data.parquet"
    golden = pd.read_csv(GOLDEN / "long.csv", dtype_backend="numpy_nullable")
    golden["clinic"] = golden["clinic"].str.removeprefix("'")  # the CSV's formula guard; Parquet has none
    via_pandas = pd.read_parquet(parquet, dtype_backend="numpy_nullable")
    assert len(via_pandas) == export.rows == 10
    pd.testing.assert_frame_equal(via_pandas, golden, check_dtype=False)
    con = duckdb.connect()
    rel = con.read_parquet(str(parquet))
    assert rel.columns == list(golden.columns)
    types = dict(zip(rel.columns, [str(t) for t in rel.types], strict=True))
    assert (types["patient_id"], types["day"], types["total"], types["item_1"]) == (
        "VARCHAR",
        "INTEGER",
        "SMALLINT",
        "SMALLINT",
    )
    assert con.execute(
        "SELECT count(*), count(DISTINCT patient_id), sum(total), min(day) FROM read_parquet(?)",
        [str(parquet)],
    ).fetchall() == [(10, 4, 178, -9)]


def test_zip_holds_data_dictionary_and_manifest(fx_db: Path) -> None:
    with db.reader(fx_db) as con:
        data = ex.zip_bytes(con, ex.ExportSpec(shape="sessions"), secret=SECRET)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.namelist() == ["data.csv", "data_dictionary.csv", "table1.csv", "manifest.json"]
        manifest = json.loads(zf.read("manifest.json"))
        assert zf.read("data.csv") == (GOLDEN / "sessions.csv").read_bytes()
        assert manifest["files"]["data.csv"]["sha256"] == hashlib.sha256(zf.read("data.csv")).hexdigest()
        table1 = zf.read("table1.csv")
    assert manifest["files"]["table1.csv"]["sha256"] == hashlib.sha256(table1).hexdigest()
    # Four patients, min_cell 11: Table 1 is the suppressed count alone, as on the page.
    assert table1.decode().splitlines() == ['"Characteristic","Group","Patients"', '"Patients","all","<11"']


def test_table1_in_the_zip_is_the_preview_table1(own_db: Path) -> None:
    set_value(own_db, "UPDATE settings SET value = ? WHERE key = 'min_cell'", [2])
    with db.reader(own_db) as con:
        shown = ex.preview(con, ex.ExportSpec()).table1
        data = ex.zip_bytes(con, ex.ExportSpec(), secret=SECRET)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        table1 = pd.read_csv(io.BytesIO(zf.read("table1.csv")), dtype=str, keep_default_na=False)
    assert table1.values.tolist() == shown.values.tolist()
    assert table1.values.tolist()[:3] == [
        ["Patients", "all", "4"],
        ["Age band", "25-34", "2 (50%)"],
        ["Age band", "35-44", "<2"],
    ]


def test_relative_manifest_withholds_start_dates_and_provider_codes(fx_db: Path) -> None:
    cohort = CohortFilter(
        start_from=dt.date(2025, 3, 1), start_to=dt.date(2025, 5, 31), providers=("PR1", "PR2")
    )
    export = build(fx_db, ex.ExportSpec(cohort=cohort))
    text = export.files[ex.MANIFEST_FILE].decode()
    assert "PR1" not in text and "PR2" not in text
    assert "2025-03-01" not in text and "2025-05-31" not in text
    f = export.manifest["filters"]
    assert (f["treatment_start_from"], f["treatment_start_to"], f["providers"]) == (
        "withheld (relative dates)",
        "withheld (relative dates)",
        "withheld (2 chosen)",
    )
    assert build(fx_db, ex.ExportSpec()).manifest["filters"]["treatment_start_from"] is None
    calendar = build(fx_db, ex.ExportSpec(cohort=cohort, dates="calendar")).manifest["filters"]
    assert (calendar["treatment_start_from"], calendar["providers"]) == ("2025-03-01", ["PR1", "PR2"])


def test_week_level_days_replace_every_day_column(fx_db: Path) -> None:
    long = build(fx_db, ex.ExportSpec(days="week", items=False))
    frame = data_frame(long)
    assert "day" not in frame and "week" in frame
    # P0003 = K-A1 (first dose 1 March): GAD-7 days -4, 50 → weeks -1, 7; PHQ-9 days -4, 9, 50 → -1, 1, 7.
    assert frame.loc[frame["patient_id"] == "P0003", "week"].tolist() == ["-1", "7", "-1", "1", "7"]
    assert long.manifest["days"] == "week"
    assert "whole weeks" in long.manifest["de_identification"]["dates"]
    dictionary = pd.read_csv(io.BytesIO(long.files[ex.DICTIONARY_FILE]), dtype=str).set_index("column")
    assert dictionary.loc["week", "allowed_values_or_unit"] == "weeks"
    assert dictionary.loc["week", "description"].startswith("Week of the questionnaire: whole weeks")
    wide = data_frame(build(fx_db, ex.ExportSpec(shape="wide", days="week")))
    assert {"baseline_week", "dosing_week", "latest_week"} <= set(wide.columns)
    assert not any(c.endswith("_day") for c in wide.columns)
    outcomes = data_frame(build(fx_db, ex.ExportSpec(shape="outcomes", days="week")))
    assert "endpoint_week" in outcomes and "endpoint_day" not in outcomes
    sessions = data_frame(build(fx_db, ex.ExportSpec(shape="sessions", days="week")))
    assert sorted(sessions["week"]) == ["0", "0", "0", "2"]  # K-A1's second session: day 14
    with pytest.raises(ex.ExportError, match="week-level days protect nothing"):
        ex.ExportSpec(days="week", dates="calendar").checked()


def test_dictionary_does_not_claim_the_keys_cannot_be_linked(fx_db: Path) -> None:
    export = build(fx_db)
    dictionary = pd.read_csv(io.BytesIO(export.files[ex.DICTIONARY_FILE]), dtype=str).set_index("column")
    text = dictionary.loc["patient_id", "description"]
    assert "cannot be linked" not in text
    assert "pseudonymous, not anonymous" in text and "sequence of days and scores" in text
    assert "pseudonymous, not anonymous" in export.manifest["de_identification"]["linkage"]


def test_bad_requests_are_usage_errors() -> None:
    for spec, message in (
        (ex.ExportSpec(instruments=("BDI",)), "unknown instrument 'BDI'"),
        (ex.ExportSpec(phases=("later",)), "unknown phase 'later'"),
        (ex.ExportSpec(phases=("latest",)), "phase 'latest' does not apply to the long shape"),
        (ex.ExportSpec(shape="sessions", phases=("dosing",)), "phases do not apply to the sessions shape"),
        (ex.ExportSpec(shape="tall"), "unknown shape 'tall'"),
        (ex.ExportSpec(file_format="xlsx"), "unknown format 'xlsx'"),
        (ex.ExportSpec(dates="exact"), "unknown dates 'exact'"),
        (ex.ExportSpec(quasi_identifiers=("provider",)), "unknown quasi-identifier 'provider'"),
        (ex.ExportSpec(shape="outcomes", quasi_identifiers=("sex",)), "outcomes shape"),
    ):
        with pytest.raises(ex.ExportError, match=re.escape(message)):
            spec.checked()
    spec = ex.ExportSpec(
        shape="wide", instruments=("gad 7", "phq9"), phases=("Follow Up", "dosing")
    ).checked()
    assert (spec.instruments, spec.phases) == (("GAD-7", "PHQ-9"), ("dosing", "follow-up"))


# ---------------------------------------------------------------- Table 1 and preview


def test_table1_suppresses_groups_under_min_cell(own_db: Path) -> None:
    with db.reader(own_db) as con:
        assert ex.preview(con, ex.ExportSpec()).table1.values.tolist() == [["Patients", "all", "<11"]]
    set_value(own_db, "UPDATE settings SET value = ? WHERE key = 'min_cell'", [2])
    with db.reader(own_db) as con:
        preview = ex.preview(con, ex.ExportSpec())
    assert preview.min_cell == 2
    assert preview.table1.values.tolist() == [
        ["Patients", "all", "4"],
        ["Age band", "25-34", "2 (50%)"],
        ["Age band", "35-44", "<2"],
        ["Age band", "45-54", "<2"],
        ["Sex", "female", "2 (50%)"],
        ["Sex", "male", "<2"],
        ["Sex", "other", "<2"],
        ["Primary condition", "PTSD", "<2"],
        ["Primary condition", "MDD", "2 (50%)"],
        ["Primary condition", "GAD", "<2"],
        ["Route", "IV", "2 (50%)"],
        ["Route", "SL", "<2"],
        ["Route", "oral", "<2"],
        # PHQ-9 baselines 20, 16 and 9: mean 15.0, SD √31 = 5.57.
        ["PHQ-9 baseline", "mean ± SD", "15.0 ± 5.6 (n = 3)"],
        ["GAD-7 baseline", "mean ± SD", "<2 patients"],
        ["PCL-5 baseline", "mean ± SD", "<2 patients"],
    ]
    assert (preview.rows, preview.patients, len(preview.head)) == (10, 4, 10)
    assert preview.head["patient_id"].str.fullmatch(r"P000[1-4]").all()


def test_a_single_small_cell_is_hidden_with_the_next_smallest() -> None:
    assert ex._suppress([5, 1, 7], 2) == [True, True, False]
    assert ex._suppress([5, 1, 1], 2) == [False, True, True]
    assert ex._suppress([5, 7], 2) == [False, False]
    assert ex._suppress([1], 2) == [True]


# ---------------------------------------------------------------- command line

_LOCAL_CLI = """
import argparse, sys
from kapdata import export
p = argparse.ArgumentParser(prog="python -m kapdata")
export.add_cli(p.add_subparsers(dest="command", required=True))
a = p.parse_args()
sys.exit(a.handler(a))
"""


def _cli_wired() -> bool:
    from kapdata import __main__ as cli

    with contextlib.redirect_stderr(io.StringIO()):
        try:
            cli.build_parser().parse_args(["export", "--out", "x"])
        except SystemExit:
            return False
    return True


def run_export(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m kapdata export ARGS`` (through add_cli in a tiny parser until __main__ wires it)."""
    env = {k: v for k, v in os.environ.items() if k != "KAP_DB"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    head = ["-m", "kapdata"] if _cli_wired() else ["-c", _LOCAL_CLI]
    return subprocess.run(
        [sys.executable, *head, "export", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_cli_export_writes_data_dictionary_and_manifest(fx_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "long"
    res = run_export("--db", str(fx_db), "--out", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == 1
    assert "10 rows, 4 patients (long, csv, relative dates in days)" in res.stdout
    assert "table1.csv" in res.stdout and res.stderr == ""
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert (manifest["rows"], manifest["patients"], manifest["dates"]) == (10, 4, "relative")
    frame = pd.read_csv(out / "data.csv", dtype=str, keep_default_na=False)
    assert sorted(set(frame["patient_id"])) == ["P0001", "P0002", "P0003", "P0004"]
    assert not ISO_DATE.search((out / "data.csv").read_bytes())


def test_cli_export_options_filter_and_shape_the_file(fx_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "wide"
    res = run_export(
        "--db", str(fx_db), "--out", str(out), "--shape", "wide", "--format", "parquet",
        "--instrument", "phq9", "--phase", "latest", "--clinic", "north", "--route", "iv",
        "--condition", "MDD", "--start-from", "2025-03-01", "--start-to", "2025-03-31", "--dates", "calendar",
        cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    frame = pd.read_parquet(out / "data.parquet")
    assert frame[["patient_id", "instrument", "baseline", "latest", "latest_on"]].astype(
        str
    ).values.tolist() == [["P0001", "PHQ-9", "20", "8", "2025-04-20"]]
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["filters"]["clinics"] == ["North"]
    assert manifest["filters"]["routes"] == ["IV"]
    assert manifest["filters"]["treatment_start_from"] == "2025-03-01"
    assert manifest["calendar_dates_included"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--instrument", "BDI-II"), "error: unknown instrument 'BDI-II'; known: PHQ-9, GAD-7, PCL-5"),
        (("--phase", "week-4"), "error: unknown phase 'week-4'"),
        (("--shape", "tall"), "error: unknown shape 'tall'; choose long, wide, outcomes, sessions"),
        (("--format", "xlsx"), "error: unknown format 'xlsx'"),
        (("--dates", "exact"), "error: unknown dates 'exact'"),
        (("--start-from", "2025-02-30"), "error: --start-from: '2025-02-30' is not a date (YYYY-MM-DD)"),
        (("--clinic", "Nowhere"), "error: unknown clinic 'Nowhere'; in the database: =South, North"),
    ],
)
def test_cli_export_bad_usage_exits_2_with_one_line(fx_db: Path, tmp_path: Path, args, message) -> None:
    res = run_export("--db", str(fx_db), "--out", str(tmp_path / "x"), *args, cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.splitlines() == [res.stderr.strip()]
    assert res.stderr.startswith(message)
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "x").exists()


def test_cli_export_without_a_database_exits_1(tmp_path: Path) -> None:
    res = run_export("--db", str(tmp_path / "none.duckdb"), "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert res.returncode == 1
    assert res.stderr.startswith("error: no database at")
    assert "Traceback" not in res.stderr


def test_cli_export_under_the_floor_exits_3_naming_the_options_and_writes_nothing(tmp_path: Path) -> None:
    path = six_db(tmp_path / "db")
    out = tmp_path / "x"
    res = run_export("--db", str(path), "--out", str(out), "--without", "route", cwd=tmp_path)
    assert res.returncode == 3, res.stderr
    assert res.stderr.splitlines() == [res.stderr.strip()]
    assert res.stderr.startswith(
        "error: export refused: k-anonymity is 1 (under 5) over age_band, sex, clinic,"
    )
    assert res.stderr.strip().endswith("Run again with --without clinic --without route.")
    assert "Traceback" not in res.stderr and not out.exists()
    res = run_export(
        "--db", str(path), "--out", str(out), "--without", "route", "--without", "clinic", cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr
    frame = pd.read_csv(out / "data.csv", dtype=str)
    assert [c for c in frame.columns if c in ex.QUASI_IDENTIFIERS] == ["age_band", "sex", "primary_condition"]


def test_cli_export_default_leaves_out_what_fails_and_says_so(tmp_path: Path) -> None:
    path = six_db(tmp_path / "db")
    res = run_export("--db", str(path), "--out", str(tmp_path / "x"), "--days", "week", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith(
        "(long, csv, relative dates in weeks); k-anonymity 6 over age_band, sex, primary_condition, route "
        "(left out to reach k ≥ 5: clinic)"
    )
    assert "week" in pd.read_csv(tmp_path / "x" / "data.csv", dtype=str)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--without", "provider"), "error: --without 'provider': not a patient characteristic"),
        (("--days", "month"), "error: unknown days 'month'; choose day, week"),
        (("--days", "week", "--dates", "calendar"), "error: week-level days protect nothing"),
    ],
)
def test_cli_export_bad_privacy_options_exit_2(fx_db: Path, tmp_path: Path, args, message) -> None:
    res = run_export("--db", str(fx_db), "--out", str(tmp_path / "x"), *args, cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.startswith(message) and len(res.stderr.splitlines()) == 1


def test_text_csv_quotes_every_cell_and_neutralises_formulas() -> None:
    """The dictionary and Table 1 (small all-text tables) are written without pyarrow."""
    rows = [("=1+2", 'say "hi"', None), ("a,b", "two\nlines", "-3"), ("", "ok", "@x")]
    assert ex.text_csv_bytes(("c1", "c2", "c3"), rows) == (
        b'"c1","c2","c3"\n"\'=1+2","say ""hi""",\n"a,b","two\nlines","\'-3"\n"","ok","\'@x"\n'
    )


@pytest.mark.parametrize("phases", [(), ("integration",)])
def test_long_row_count_is_the_rows_written(fx_db: Path, phases: tuple[str, ...]) -> None:
    """The long shape's row count (from the pairs' questionnaire counts when no phase is chosen) is the number
    of rows in the file."""
    export = build(fx_db, ex.ExportSpec(phases=phases))
    assert export.rows == len(data_frame(export)) > 0
