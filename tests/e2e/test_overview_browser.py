from __future__ import annotations

from pathlib import Path

import pytest

from kapdata import db

from .conftest import wait_rendered

pytestmark = pytest.mark.e2e


def test_overview_shows_patient_count_in_a_real_browser(app_url: str, page, e2e_db: Path) -> None:
    with db.reader(e2e_db) as con:
        row = con.execute("SELECT count(*) FROM patients").fetchone()
    assert row is not None
    page.goto(app_url)
    wait_rendered(page)
    metric = page.locator('[data-testid="stMetric"]', has_text="Patients").first
    metric.wait_for(timeout=30000)
    assert f"{row[0]:,}" in metric.inner_text()
    # The headline tiles and the chart are drawn.
    page.get_by_text("Headline outcomes at the latest assessment").wait_for(timeout=30000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=30000)
