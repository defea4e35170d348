"""Every asset is served by the app itself (clinics run it offline): visiting every page, the browser asks
no other host for anything — no fonts, no favicon, no CDN — and the toolbar has no Deploy button."""

from __future__ import annotations

from pathlib import Path

from .conftest import wait_rendered

PATHS = ("", "patient_trends", "clinic_outcomes", "research_export", "data_import", "definitions", "settings")


def test_no_page_asks_another_host_for_anything(app_url: str, page, e2e_db: Path) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    from kapdata import db

    with db.reader(e2e_db) as con:
        row = con.execute("SELECT min(patient_id) FROM patients").fetchone()
    for path in (*PATHS, f"patient_trends?patient={row[0]}"):
        page.goto(f"{app_url}/{path}")
        wait_rendered(page)
        page.wait_for_timeout(800)  # favicon and late assets
    assert requested, "the request listener saw nothing"
    outside = sorted({u for u in requested if not u.startswith((app_url, "data:", "blob:"))})
    assert outside == []
    favicon = page.locator("link[rel~='icon']").first.get_attribute("href") or ""
    assert favicon and (not favicon.startswith("http") or favicon.startswith(app_url))
    assert page.get_by_role("button", name="Deploy").count() == 0
