"""Each page's queries, called exactly as the page calls them (through kapdata, one read-only connection
per call), and the exports. Extend PAGE_ROWS / page_measurements as pages land."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from kapdata import db
from kapdata import export as ex
from kapdata import overview as ov

PAGE_ROWS: tuple[str, ...] = ("overview", "research export preview")


def page_measurements(path: Path) -> Iterator[tuple[str, Callable[[], object]]]:
    def overview() -> object:
        with db.reader(path) as con:
            return ov.overview(con)

    yield "overview", overview

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
