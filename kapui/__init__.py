"""Streamlit glue for the pages (one module per area; this one is shared).

Database location, first-run set-up, cached queries, the shared sidebar filters.

Kept apart from ``kapdata`` so that the core never imports Streamlit. Every query opens a short
read-only connection (so the command line can write to the same file while the app runs) and its
result is cached on the database file's fingerprint, so an import by any process shows at once.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

import streamlit as st

from kapdata import access, bootstrap, db, filters
from kapdata import overview as ov
from kapdata.access import Principal
from kapdata.cohort import CohortFilter

#: Session-state keys of the shared sidebar filters. dashboard.py keeps them alive across pages.
FILTER_KEYS = ("f_start", "f_clinics", "f_providers", "f_routes", "f_conditions")
#: Other widget keys whose values should survive a visit to another page (clinic outcomes controls, the
#: patient view's item-answers switch).
KEPT_KEYS = FILTER_KEYS + ("co_scales", "co_endpoint", "co_population", "co_breakdown", "co_axis", "pt_items")


def page_guard() -> None:
    """Make every page run inside ``dashboard.py``'s navigation, even on a deep link.

    Because the project has a ``pages/`` folder, a freshly started Streamlit server treats the folder as
    a legacy multipage app until some session has called ``st.navigation``. A shared link such as
    ``/patient_trends?patient=K00001`` opened first after a restart would then run the page on its own
    (no page config, no navigation). Switching that legacy mode off and rerunning sends the session
    through ``dashboard.py``, which routes to the same URL.
    Called by ``initialise()``, every page's first call.
    """
    from streamlit.runtime.pages_manager import PagesManager

    # Once per session: a later run must never be rerun (it would lose a button click).
    if PagesManager.uses_pages_directory and not st.session_state.get("_kap_routed"):
        st.session_state["_kap_routed"] = True
        PagesManager.uses_pages_directory = False
        st.rerun()


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
    # A database that already holds data is only read here, so a read-only file still serves every page.
    if Path(path).is_file():
        with db.reader(path) as con:
            if not db.is_empty(con):
                return f"{path}: ready"
    return bootstrap.ensure_database(path)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:=])")


def md_escape(text: object) -> str:
    """Text a user or a file supplied, made safe for Streamlit's Markdown-rendering elements (``st.error``,
    ``st.caption``, labels…): every Markdown character is backslash-escaped, so a link, an image (a web
    beacon), a bare URL, an emoji code or a colour directive shows as the characters it is, never rendered."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


def show_error(exc: Exception) -> None:
    """A page failed: log the whole error for the administrator, show the person one line in words (never
    a traceback or the engine's message). ``KAP_DEBUG=1`` re-raises instead (the page tests set it)."""
    from kapdata.access import NotPermitted
    from kapui.auth import AuditRequired

    if isinstance(exc, NotPermitted | AuditRequired):  # our own words
        st.error(str(exc), icon=":material/block:")
        return
    if os.environ.get("KAP_DEBUG") == "1":
        raise exc
    logging.getLogger("kapui").exception("page failed")
    st.error(db.explain(exc, database_path()), icon=":material/error:")


def initialise() -> str:
    """Every page's first call: route through dashboard.py, make sure the database exists; its path."""
    page_guard()
    from kapui import auth

    path = database_path()
    if db.writing(path):  # an import, undo or settings change is being saved: wait for it, visibly
        with st.spinner("Another person is saving changes to the database; this page waits for them…"):
            db.wait_for_writers(path)
    caller = sys._getframe(1).f_globals.get("__file__", "")
    auth.check_page(path, str(caller))  # the gate, when the page did not run through dashboard.py
    _initialise(path)
    return path


def data_version(path: str) -> tuple[int, int]:
    return db.file_version(path)


def overview(path: str, version: tuple[int, int]) -> ov.Overview:
    """The overview of the clinics the signed-in person may see."""
    who = principal()
    who.require("cohort.view", "see the overview")
    return _overview(path, version, who.scope())


@st.cache_data(show_spinner=False, max_entries=8)
def _overview(path: str, version: tuple[int, int], scope: tuple[str, ...] | None) -> ov.Overview:
    with db.reader(path) as con:
        return ov.overview(con, scope)


def principal() -> Principal:
    """The signed-in person of this run (``kapui.auth.gate``)."""
    from kapui import auth

    return auth.principal()


def fmt_rate(rate: dict[str, float | int | None]) -> str:
    """``53.6% (95% CI 48.1–59.0), 75/140``."""
    if rate["rate"] is None:
        return "–"
    lo, hi = rate["ci_low"] or 0.0, rate["ci_high"] or 0.0
    return f"{100 * float(rate['rate']):.1f}% (95% CI {100 * lo:.1f}–{100 * hi:.1f}), {rate['k']}/{rate['n']}"


def filter_options(path: str, version: tuple[int, int]) -> filters.FilterOptions:
    """What the sidebar offers: values of the signed-in person's clinics only."""
    return _filter_options(path, version, principal().scope())


@st.cache_data(show_spinner=False, max_entries=8)
def _filter_options(
    path: str, version: tuple[int, int], scope: tuple[str, ...] | None
) -> filters.FilterOptions:
    with db.reader(path) as con:
        return filters.filter_options(con, scope)


def keep_filter_state() -> None:
    """Streamlit forgets a widget's value on pages that do not draw it; re-storing keeps it."""
    for key in KEPT_KEYS:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


def sidebar_filters(
    path: str, fields: tuple[str, ...] = ("start", "clinics", "providers", "routes", "conditions")
) -> CohortFilter:
    """Draw the shared cohort filters in the sidebar (only ``fields``) and return the filter they define."""
    opts = filter_options(path, data_version(path))
    sb = st.sidebar
    sb.markdown("**Cohort filters**")
    start_from = start_to = None
    if "start" in fields and opts.first_start and opts.last_start:
        default = {} if "f_start" in st.session_state else {"value": (opts.first_start, opts.last_start)}
        value = sb.date_input(
            "Treatment start (first dosing session)",
            **default,
            min_value=opts.first_start,
            max_value=opts.last_start,
            key="f_start",
            help="Patients whose first dosing session falls in this range. Patients who never dosed are "
            "left out when the range is narrowed.",
        )
        narrowed = (
            isinstance(value, tuple) and len(value) == 2 and value != (opts.first_start, opts.last_start)
        )
        if narrowed:
            start_from, start_to = value
    clinics = sb.multiselect("Clinic", opts.clinics, key="f_clinics") if "clinics" in fields else []
    by_clinic = opts.providers_by_clinic
    provider_choices = (
        sorted({p for c in clinics for p in by_clinic.get(c, [])}) if clinics else opts.providers
    )
    providers = (
        sb.multiselect("Provider", provider_choices, key="f_providers") if "providers" in fields else []
    )
    routes = sb.multiselect("Route", opts.routes, key="f_routes") if "routes" in fields else []
    conditions = []
    if "conditions" in fields:
        conditions = sb.multiselect("Primary condition", opts.conditions, key="f_conditions")
    return access.scoped(
        principal(),
        CohortFilter(
            start_from=start_from,
            start_to=start_to,
            clinics=tuple(clinics),
            providers=tuple(p for p in providers if p in provider_choices),
            routes=tuple(routes),
            conditions=tuple(conditions),
        ),
    )
