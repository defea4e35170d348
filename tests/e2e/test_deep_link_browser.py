"""A shared link opened first after a server start must still run inside the app's navigation."""

from __future__ import annotations

import pytest

from .conftest import start_streamlit, stop_streamlit, wait_rendered

pytestmark = pytest.mark.e2e


def test_deep_link_on_a_fresh_server_runs_the_page_inside_the_app(e2e_db, page) -> None:
    proc, url = start_streamlit(e2e_db)
    try:
        page.goto(url + "/definitions")
        wait_rendered(page)
        nav = page.locator('[data-testid="stSidebarNav"]')
        # The app's sections appear once the session runs through dashboard.py.
        nav.get_by_text("Clinicians").wait_for(timeout=30000)
        wait_rendered(page)
        text = nav.inner_text()
        # The app's own navigation (titles and sections), not Streamlit's legacy list of file names
        # ("clinic outcomes", "data import" in lower case).
        assert "Patient trends" in text and "Clinic outcomes" in text and "Clinicians" in text
        assert "clinic outcomes" not in text and "data import" not in text
        assert "Definitions" in page.locator('[data-testid="stMain"] h1').first.inner_text()
    finally:
        stop_streamlit(proc)
