"""Each page's queries, called exactly as the page calls them (through kapdata, one read-only connection
per call), and the exports. Extend PAGE_ROWS / page_measurements as pages land."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from kapdata import db
from kapdata import overview as ov

PAGE_ROWS: tuple[str, ...] = ("overview",)


def page_measurements(path: Path) -> Iterator[tuple[str, Callable[[], object]]]:
    def overview() -> object:
        with db.reader(path) as con:
            return ov.overview(con)

    yield "overview", overview


def export_measurements(path: Path, out_dir: Path) -> Iterator[tuple[str, Callable[[], object]]]:
    return iter(())
