"""Streamlit glue for the Research export page: the cached preview and the deferred download.

The preview is cached on the database file's fingerprint and the request; the download is built only
when the button is clicked (a fresh patient key order every time, as every export is re-keyed).
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from kapdata import db
from kapdata import export as ex
from kapdata.access import Principal
from kapui import auth


def preview(path: str, version: tuple[int, int], spec: ex.ExportSpec) -> ex.Preview:
    """The preview as the signed-in person may see it (``export.for_principal``: scope, calendar dates)."""
    return _preview(path, version, spec, auth.principal())


@st.cache_data(show_spinner="Building the preview…", max_entries=16)
def _preview(path: str, version: tuple[int, int], spec: ex.ExportSpec, who: Principal) -> ex.Preview:
    with db.reader(path) as con:
        return ex.preview(con, spec, principal=who)


def download(path: str, spec: ex.ExportSpec) -> Callable[[], bytes]:
    """What the download button runs when clicked: the ``.zip`` with data, dictionary and manifest. The
    export is audited (its request, row count and the zip's sha256) before the file is handed over."""
    who = auth.principal()
    record = auth.recorder(path)

    def build() -> bytes:
        with db.reader(path) as con:
            export, content = ex.build_zip(con, spec, principal=who)
        record("export", ex.zip_name(spec), ex.audit_detail(export, content))
        return content

    return build
