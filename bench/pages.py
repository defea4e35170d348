"""Each page's queries, called exactly as the page calls them (through kapdata), and the exports.

Every query is measured twice: as the page calls it, opening its own short read-only connection (the app
never holds one, so the command line can write meanwhile), and on an already open connection, which is
the database work alone. DuckDB 2.0 takes ~10 ms to open any connection, even to an in-memory database.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb

from kapdata import cohort, db, patient
from kapdata import export as ex
from kapdata import overview as ov

TODAY = dt.date(2026, 11, 1)  # the generated cohorts end here
Query = Callable[[duckdb.DuckDBPyConnection], object]


def page_queries(path: Path) -> list[tuple[str, Query]]:
    with db.reader(path) as con:
        row = con.execute("SELECT patient_id FROM scores ORDER BY patient_id LIMIT 1 OFFSET 7").fetchone()
    one = row[0] if row else ""
    return [
        ("overview", ov.overview),
        ("caseload", lambda con: patient.caseload(con, cohort.CohortFilter(), today=TODAY)),
        ("patient view", lambda con: patient.patient_view(con, one, today=TODAY)),
        ("clinic outcomes (default filters)", lambda con: cohort.report(con, cohort.CohortFilter())),
        (
            "clinic outcomes (provider breakdown)",
            lambda con: cohort.report(con, cohort.CohortFilter(), breakdown="provider"),
        ),
        ("research export preview", lambda con: ex.preview(con, ex.ExportSpec())),
    ]


PAGE_ROWS: tuple[str, ...] = (
    "overview",
    "caseload",
    "patient view",
    "clinic outcomes (default filters)",
    "clinic outcomes (provider breakdown)",
    "research export preview",
)


def page_measurements(path: Path) -> Iterator[tuple[str, Callable[[], object]]]:
    """As the page calls it: a fresh read-only connection per call."""
    for name, query in page_queries(path):

        def call(query: Query = query) -> object:
            with db.reader(path) as con:
                return query(con)

        yield f"{name} (page call)", call


def query_measurements(
    path: Path, con: duckdb.DuckDBPyConnection
) -> Iterator[tuple[str, Callable[[], object]]]:
    """The same queries on an open connection: the database work alone."""
    for name, query in page_queries(path):
        yield name, (lambda query=query: query(con))


def export_measurements(path: Path, out_dir: Path) -> Iterator[tuple[str, Callable[[], object]]]:
    def run(spec: ex.ExportSpec) -> Callable[[], object]:
        def go() -> object:
            with db.reader(path) as con:
                return ex.write_dir(con, spec, out_dir)

        return go

    yield "export long csv", run(ex.ExportSpec())
    yield "export long parquet", run(ex.ExportSpec(file_format="parquet"))
    yield "export wide", run(ex.ExportSpec(shape="wide"))
