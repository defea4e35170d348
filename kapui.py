"""Streamlit glue shared by the pages: database location, first-run set-up, cached queries.

Kept apart from ``kapdata`` so that the core never imports Streamlit. Every query opens a short
read-only connection (so the command line can write to the same file while the app runs) and its
result is cached on the database file's fingerprint, so an import by any process shows at once.
"""

from __future__ import annotations

import os
import sys

import streamlit as st

from kapdata import bootstrap, db
from kapdata import overview as ov


def database_path() -> str:
    """``streamlit run dashboard.py -- --db PATH``, else ``$KAP_DB``, else ``data/kap.duckdb``."""
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg == "--db" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--db="):
            return arg.split("=", 1)[1]
    return str(db.db_path(os.environ.get("KAP_DB") or None))


@st.cache_resource(show_spinner="Preparing the database (first run loads the sample cohort)…")
def _initialise(path: str) -> str:
    return bootstrap.ensure_database(path)


def initialise() -> str:
    path = database_path()
    _initialise(path)
    return path


def data_version(path: str) -> tuple[int, int]:
    return db.file_version(path)


@st.cache_data(show_spinner=False, max_entries=8)
def overview(path: str, version: tuple[int, int]) -> ov.Overview:
    with db.reader(path) as con:
        return ov.overview(con)


def fmt_rate(rate: dict[str, float | int | None]) -> str:
    """``53.6% (95% CI 48.1–59.0), 75/140``."""
    if rate["rate"] is None:
        return "–"
    lo, hi = rate["ci_low"] or 0.0, rate["ci_high"] or 0.0
    return f"{100 * float(rate['rate']):.1f}% (95% CI {100 * lo:.1f}–{100 * hi:.1f}), {rate['k']}/{rate['n']}"
