from __future__ import annotations

from pathlib import Path

import pytest

from kapdata import cohort, db

from .conftest import wait_rendered

pytestmark = pytest.mark.e2e


def test_clinic_outcomes_page_loads_and_switches_to_itt_in_a_real_browser(
    app_url: str, page, e2e_db: Path
) -> None:
    with db.reader(e2e_db) as con:
        rep = cohort.report(con)
    page.goto(app_url + "/clinic_outcomes")
    wait_rendered(page)
    tile = page.locator('[data-testid="stMetric"]', has_text="Patients in cohort").first
    tile.wait_for(timeout=30000)
    assert f"{rep.tiles()['enrolled']:,}" in tile.inner_text()
    page.get_by_text("Outcomes by phase · completers").wait_for(timeout=30000)
    page.locator(".js-plotly-plot").nth(4).wait_for(timeout=30000)  # trajectory … funnel drawn

    itt = f"{100 * cohort.headline(rep, 'itt')['response'].iloc[0]:.1f}%"
    page.get_by_text("Intention-to-treat", exact=True).click()
    page.get_by_text("Outcomes by phase · intention-to-treat").wait_for(timeout=30000)
    wait_rendered(page)
    response = page.locator('[data-testid="stMetric"]', has_text="Response").first
    assert itt in response.inner_text()
    assert not page.locator('[data-testid="stException"]').count()
