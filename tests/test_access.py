"""Roles are enforced in the core: a scoped query cannot return another clinic's patients."""

from __future__ import annotations

from pathlib import Path

import pytest

from kapdata import access, cohort, db, export, filters, ingest, overview, patient, sample
from kapdata.access import NotPermitted, Principal
from kapdata.cohort import CohortFilter


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("access")
    path = folder / "kap.duckdb"
    ingest.load_files(sample.write_sample(120, folder / "csv", seed=11), path)
    return path


def clinics_of(con, ids) -> set[str]:
    rows = con.execute("SELECT DISTINCT clinic FROM patients WHERE list_contains(?, patient_id)", [list(ids)])
    return {r[0] for r in rows.fetchall()}


DIRECTOR = Principal("d@clinic.example", "director", ("Northside",))
CLINICIAN = Principal("c@clinic.example", "clinician", ("Northside",))


def test_a_directors_cohort_query_cannot_return_another_clinic(base: Path) -> None:
    with db.reader(base) as con:
        north = con.execute("SELECT count(*) FROM patients WHERE clinic = 'Northside'").fetchone()[0]
        assert north == 62  # of 120: Riverside 36, Lakeside 22
        # Even asking for Riverside explicitly gives nothing: the scope is applied in the SQL.
        asked = access.scoped(DIRECTOR, CohortFilter(clinics=("Riverside",)))
        assert patient.patient_ids(con, asked) == []
        ids = patient.patient_ids(con, access.scoped(DIRECTOR))
        assert len(ids) == 62 and clinics_of(con, ids) == {"Northside"}
        rep = cohort.report(con, access.scoped(DIRECTOR), ("PHQ-9",))
        assert rep.tiles()["enrolled"] == 62
        everyone = cohort.report(con, CohortFilter(), ("PHQ-9",))
        assert everyone.tiles()["enrolled"] == 120


def test_the_overview_and_the_filter_options_follow_the_scope(base: Path) -> None:
    with db.reader(base) as con:
        ov = overview.overview(con, DIRECTOR.scope())
        assert ov.patients == 62
        assert overview.overview(con).patients == 120
        assert filters.filter_options(con, ("Northside",)).clinics == ["Northside"]
        assert filters.filter_options(con, ()).clinics == []  # an empty scope sees no clinic


def test_a_scoped_overview_counts_only_the_batches_of_its_patients(base: Path, tmp_path: Path) -> None:
    path = tmp_path / "kap.duckdb"
    path.write_bytes(base.read_bytes())
    with db.reader(path) as con:
        header, row = con.execute(
            "SELECT 'patient_id,clinic,provider,age_band,sex,primary_condition,route', "
            "concat_ws(',', 'K09999', clinic, provider, age_band, sex, primary_condition, route) "
            "FROM patients WHERE clinic = 'Riverside' LIMIT 1"
        ).fetchone()
    riverside = tmp_path / "patients_riverside.csv"
    riverside.write_text(f"{header}\n{row}\n")
    ingest.load_files([riverside], path)
    with db.reader(path) as con:
        assert overview.overview(con).batches == 4  # the sample's three files and the Riverside one
        assert overview.overview(con, ("Riverside",)).batches == 4
        assert overview.overview(con, DIRECTOR.scope()).batches == 3  # Northside: not the Riverside file
        assert overview.overview(con, ()).batches == 0  # an empty scope sees no batch


def test_a_clinician_cannot_open_a_patient_of_another_clinic(base: Path) -> None:
    with db.reader(base) as con:
        assert patient.patient_view(con, "K00001", principal=CLINICIAN) is not None  # Northside
        with pytest.raises(NotPermitted, match="not in your clinics"):
            patient.patient_view(con, "K00002", principal=CLINICIAN)  # Riverside
        with pytest.raises(NotPermitted, match="director"):
            patient.patient_view(con, "K00001", principal=DIRECTOR)
        caseload = patient.caseload(con, access.scoped(CLINICIAN))
        assert set(caseload["clinic"]) == {"Northside"} and len(caseload) == 62


def test_export_refuses_calendar_dates_without_the_permission_and_scopes_rows(base: Path) -> None:
    researcher = Principal("r@clinic.example", "researcher", ("Lakeside",))
    with db.reader(base) as con:
        with pytest.raises(NotPermitted, match="calendar dates"):
            export.build(con, export.ExportSpec(dates="calendar"), principal=researcher)
        with pytest.raises(NotPermitted):
            export.build(con, export.ExportSpec(), principal=DIRECTOR)
        allowed = Principal("r@clinic.example", "researcher", (), calendar_dates=True)
        assert export.build(
            con, export.ExportSpec(dates="calendar", shape="outcomes"), principal=allowed
        ).rows
        built = export.build(con, export.ExportSpec(shape="outcomes"), principal=researcher)
        assert built.patients <= 22
        pv = export.preview(con, export.ExportSpec(shape="outcomes"), principal=researcher)
        assert pv.patients == built.patients


@pytest.mark.parametrize(
    ("role", "pages"),
    [
        ("clinician", {"patient_trends", "definitions"}),
        ("director", {"overview", "clinic_outcomes", "definitions"}),
        ("researcher", {"research_export", "overview", "clinic_outcomes", "definitions"}),
        ("data-manager", {"data_import", "definitions", "settings"}),
    ],
)
def test_pages_per_role(role: str, pages: set[str]) -> None:
    p = Principal("x@clinic.example", role)
    everything = access.PAGES["admin"]
    assert {page for page in everything if p.may_open(page)} == pages
