"""Sign-in and roles in a real browser: per role, a local account signs in, the navigation lists only the
role's pages and an address of a forbidden page is refused; a browser that has not signed in sees no data
and no patient ID on any address."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from kapdata import accounts, audit

from .conftest import start_streamlit, stop_streamlit, wait_rendered

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery"
TITLES = {
    "overview": "Overview",
    "patient_trends": "Patient trends",
    "clinic_outcomes": "Clinic outcomes",
    "research_export": "Research export",
    "data_import": "Data import",
    "definitions": "Definitions",
    "settings": "Settings",
    "users": "Users",
    "audit": "Audit",
}
ROLES = {  # role: (pages in its navigation, a page it may not open)
    "clinician": ({"patient_trends", "definitions"}, "clinic_outcomes"),
    "director": ({"overview", "clinic_outcomes", "definitions"}, "patient_trends"),
    "researcher": ({"overview", "clinic_outcomes", "research_export", "definitions"}, "data_import"),
    "data-manager": ({"data_import", "definitions", "settings"}, "research_export"),
    "admin": (set(TITLES), None),
}


@pytest.fixture(scope="module")
def signed_app(e2e_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    path = tmp_path_factory.mktemp("roles") / "kap.duckdb"
    shutil.copy(e2e_db, path)
    for role in ROLES:
        accounts.add(path, f"{role}@clinic.example", role, (), PASSWORD)
    proc, url = start_streamlit(path)
    yield url, path
    stop_streamlit(proc)


def sign_in(page, email: str) -> None:
    page.get_by_role("textbox", name="E-mail").fill(email)
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_text("Signed in as").wait_for(timeout=30000)
    wait_rendered(page)


@pytest.mark.parametrize("role", list(ROLES))
def test_a_role_signs_in_sees_its_navigation_and_is_refused_another_page(signed_app, page, role) -> None:
    url, path = signed_app
    allowed, forbidden = ROLES[role]
    page.goto(url + "/" + (forbidden or "audit"))  # signing in on a shared link to that page
    wait_rendered(page)
    sign_in(page, f"{role}@clinic.example")
    sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
    assert f"Signed in as {role}@clinic.example · {role}" in sidebar
    nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
    for stem, title in TITLES.items():
        shown = any(line.strip() == title for line in nav.splitlines())
        assert shown == (stem in allowed), (role, title, nav)
    main = page.locator('[data-testid="stMain"]')
    if forbidden:
        main.get_by_text("Not permitted: your role cannot open this page.").wait_for(timeout=30000)
        page.get_by_role("textbox", name="E-mail").wait_for(state="detached", timeout=30000)
        denied = [r for r in audit.query(path, action="denied") if r["user"] == f"{role}@clinic.example"]
        assert [r["target"] for r in denied] == [forbidden]
    else:
        main.get_by_text("Chain whole").wait_for(timeout=30000)
        assert "Audit trail" in main.inner_text()


@pytest.mark.parametrize("address", ["/", "/patient_trends?patient=K00001", "/research_export", "/users"])
def test_a_browser_that_has_not_signed_in_sees_no_data_and_no_patient_id(signed_app, page, address) -> None:
    url, _ = signed_app
    page.goto(url + address)
    wait_rendered(page)
    page.get_by_label("E-mail").wait_for(timeout=30000)
    page.wait_for_function("() => !location.search.includes('K0')", timeout=10000)
    body = page.locator("body").inner_text()
    assert "K0" not in page.url and "K0" not in body
    assert "Sign in" in body and "Signed in as" not in body
    assert page.locator('[data-testid="stSidebarNav"]').count() == 0  # no navigation before sign-in
    assert page.locator('[data-testid="stMetric"], [data-testid="stDataFrame"]').count() == 0


def test_a_researchers_download_is_audited_with_the_zips_sha256(signed_app, page, tmp_path) -> None:
    import hashlib
    import json

    url, path = signed_app
    page.goto(url + "/research_export")
    wait_rendered(page)
    sign_in(page, "researcher@clinic.example")
    button = page.get_by_role("button", name="Download .zip")
    button.wait_for(timeout=30000)
    wait_rendered(page)
    with page.expect_download(timeout=60000) as info:
        button.click()
    target = tmp_path / "export.zip"
    info.value.save_as(target)
    exports = audit.query(path, action="export")
    assert len(exports) == 1 and exports[0]["user"] == "researcher@clinic.example"
    detail = json.loads(exports[0]["detail"])
    assert detail["zip_sha256"] == hashlib.sha256(target.read_bytes()).hexdigest()
    assert detail["rows"] > 0 and detail["dates"] == "relative"


def test_a_clinician_opening_a_patient_and_its_report_is_audited(signed_app, page, tmp_path) -> None:
    import re

    url, path = signed_app
    page.goto(url + "/patient_trends")
    wait_rendered(page)
    sign_in(page, "clinician@clinic.example")
    grid = page.locator('[data-testid="stDataFrame"]').first
    grid.wait_for(timeout=30000)
    wait_rendered(page)
    box = grid.bounding_box()
    page.mouse.click(box["x"] + 18, box["y"] + 35 + 17)  # the first row's selection box
    heading = page.get_by_role("heading", name=re.compile(r"^Patient K\d+"))
    heading.wait_for(timeout=30000)
    patient = heading.inner_text().split()[1]
    wait_rendered(page)
    with page.expect_download(timeout=60000) as info:
        page.get_by_role("button", name="Progress report (HTML)").click()
    info.value.save_as(tmp_path / "report.html")
    mine = [r for r in audit.query(path) if r["user"] == "clinician@clinic.example"]
    assert [(r["action"], r["target"]) for r in mine[-2:]] == [
        ("patient viewed", patient),
        ("report printed", patient),
    ]
    assert audit.verify(path).ok
