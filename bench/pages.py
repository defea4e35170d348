"""Each page's queries, called exactly as the page calls them (through kapdata, one read-only connection
per call), and the exports. Extend PAGE_ROWS / page_measurements as pages land."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

from kapdata import cohort, db, patient
from kapdata import export as ex
from kapdata import overview as ov

PAGE_ROWS: tuple[str, ...] = ("overview", "caseload", "patient view", "research export preview")
TODAY = dt.date(2026, 11, 1)  # the generated cohorts end here


def page_measurements(path: Path) -> Iterator[tuple[str, Callable[[], object]]]:
    def overview() -> object:
        with db.reader(path) as con:
            return ov.overview(con)

    yield "overview", overview

    def caseload() -> object:
        with db.reader(path) as con:
            return patient.caseload(con, cohort.CohortFilter(), today=TODAY)

    yield "caseload", caseload

    with db.reader(path) as con:
        row = con.execute("SELECT patient_id FROM scores ORDER BY patient_id LIMIT 1 OFFSET 7").fetchone()
    one = row[0] if row else ""

    def patient_view() -> object:
        with db.reader(path) as con:
            return patient.patient_view(con, one, today=TODAY)

    yield "patient view", patient_view

    def export_preview() -> object:
        with db.reader(path) as con:
            return ex.preview(con, ex.ExportSpec())

    yield "research export preview", export_preview


def export_measurements(path: Path, out_dir: Path) -> Iterator[tuple[str, Callable[[], object]]]:
    def run(spec: ex.ExportSpec) -> Callable[[], object]:
        def go() -> object:
            with db.reader(path) as con:
                return ex.write_dir(con, spec, out_dir)

        return go

    yield "export long csv", run(ex.ExportSpec())
    yield "export long parquet", run(ex.ExportSpec(file_format="parquet"))
    yield "export wide", run(ex.ExportSpec(shape="wide"))
