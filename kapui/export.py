"""Streamlit glue for the Research export page: the cached preview and the deferred download.

The preview is cached on the database file's fingerprint and the request; the download is built only
when the button is clicked (a fresh patient key order every time, as every export is re-keyed).
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from kapdata import db
from kapdata import export as ex


@st.cache_data(show_spinner="Building the preview…", max_entries=16)
def preview(path: str, version: tuple[int, int], spec: ex.ExportSpec) -> ex.Preview:
    with db.reader(path) as con:
        return ex.preview(con, spec)


def download(path: str, spec: ex.ExportSpec) -> Callable[[], bytes]:
    """What the download button runs when clicked: the ``.zip`` with data, dictionary and manifest."""

    def build() -> bytes:
        with db.reader(path) as con:
            return ex.zip_bytes(con, spec)

    return build
