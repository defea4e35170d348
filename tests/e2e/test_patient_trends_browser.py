from __future__ import annotations

import re
from pathlib import Path

import pytest

from kapdata import db
from kapdata import patient as pt

from .conftest import wait_rendered

pytestmark = pytest.mark.e2e


def _first_patients(e2e_db: Path, n: int = 2) -> list[str]:
    with db.reader(e2e_db) as con:
        return pt.caseload(con)["patient_id"].head(n).tolist()


def _open_app(page, app_url: str) -> None:
    # Load the app's entry point first: st.navigation then owns the routes (see the report for why).
    page.goto(app_url)
    wait_rendered(page)


def test_patient_link_opens_the_patient_view_with_its_chart(app_url: str, page, e2e_db: Path) -> None:
    patient = _first_patients(e2e_db)[0]
    _open_app(page, app_url)
    page.goto(f"{app_url}/patient_trends?patient={patient}")
    wait_rendered(page)
    page.get_by_role("heading", name=f"Patient {patient}").wait_for(timeout=30000)
    chart = page.locator(".js-plotly-plot").first
    chart.wait_for(timeout=30000)
    assert chart.bounding_box()["height"] > 200
    assert page.locator(".js-plotly-plot .scatterlayer .trace").count() >= 2  # scores and sessions at least
    assert f"patient={patient}" in page.url


def test_clicking_a_caseload_row_opens_that_patient_and_the_back_button_returns(
    app_url: str, page, e2e_db: Path
) -> None:
    first = _first_patients(e2e_db)[0]
    _open_app(page, app_url)
    page.goto(f"{app_url}/patient_trends")
    wait_rendered(page)
    grid = page.locator('[data-testid="stDataFrame"]').first
    grid.wait_for(timeout=30000)
    box = grid.bounding_box()
    # The first data row's selection box: left column, just below the header row.
    page.mouse.click(box["x"] + 18, box["y"] + 35 + 17)
    page.get_by_role("heading", name=f"Patient {first}").wait_for(timeout=30000)
    page.wait_for_url(re.compile(rf"patient={first}"), timeout=30000)
    wait_rendered(page)
    page.get_by_role("button", name="← Caseload").click()
    page.get_by_role("heading", name="Patient trends").wait_for(timeout=30000)
    page.wait_for_url(lambda url: "patient=" not in url, timeout=30000)


def test_a_typed_patient_id_opens_that_patient_even_when_the_list_leaves_it_out(
    app_url: str, page, e2e_db: Path
) -> None:
    """The picker lists a bounded number of patients (issue 14); any ID typed and entered opens."""
    with db.reader(e2e_db) as con:
        frame = pt.caseload(con)
    target = str(frame.loc[frame["phase"] == "follow-up", "patient_id"].iloc[0])
    _open_app(page, app_url)
    page.goto(f"{app_url}/patient_trends")
    wait_rendered(page)
    page.locator('[data-testid="stButtonGroup"] button').filter(has_text="follow-up").first.click()
    wait_rendered(page)  # follow-up patients are no longer in the table nor in the picker's list
    box = page.locator('[data-testid="stSelectbox"] input').first
    box.click()
    box.fill(target)
    box.press("Enter")
    page.get_by_role("heading", name=f"Patient {target}").wait_for(timeout=30000)
    page.wait_for_url(re.compile(rf"patient={target}"), timeout=30000)
