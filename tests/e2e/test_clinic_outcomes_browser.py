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


#: For each drawn figure whose axes do not grow the margins themselves (``automargin`` off): how much the
#: margins would grow (px, per side) if they did, i.e. whether some tick label or axis title does not fit.
MARGIN_GROWTH_JS = """async () => {
  const out = [];
  for (const gd of document.querySelectorAll('.js-plotly-plot')) {
    const axes = Object.keys(gd._fullLayout).filter(k => /^[xy]axis\\d*$/.test(k));
    if (!axes.length || axes.some(k => gd._fullLayout[k].automargin)) continue;
    const fixed = {...gd._fullLayout._size};
    await window.Plotly.relayout(gd, Object.fromEntries(axes.map(k => [k + '.automargin', true])));
    const grown = gd._fullLayout._size;
    out.push([gd._fullLayout.title.text,
              Math.max(...['l', 'r', 't', 'b'].map(s => grown[s] - fixed[s]))]);
  }
  return out;
}"""


@pytest.mark.parametrize("axis", ["by phase", "by week since first dose"])
def test_clinic_figures_drawn_once_hold_every_label_in_their_margins(app_url: str, page, axis: str) -> None:
    """The wide figures are drawn with fixed margins (one pass, no automatic regrowth): Plotly's own
    automatic margins, switched on in the page, must not need any more room for their labels."""
    page.goto(app_url + "/clinic_outcomes")
    wait_rendered(page)
    page.locator(".js-plotly-plot").nth(4).wait_for(timeout=30000)
    if axis != "by phase":
        page.get_by_text(axis, exact=True).click()
        page.get_by_text("Mean score by week since the first dose").wait_for(timeout=30000)
        wait_rendered(page)
    page.wait_for_timeout(500)
    growth = page.evaluate(MARGIN_GROWTH_JS)
    titles = " ".join(title for title, _ in growth)
    for name in ("Mean score by", "Severity shift", "Change from baseline per patient", "published results"):
        assert name in titles, (name, growth)
    assert all(grew <= 1 for _, grew in growth), growth
