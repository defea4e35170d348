"""The printable progress report, saved to disk and opened offline in chromium, draws its charts: the
compressed plotly.js it carries unpacks in the browser and nothing is fetched."""

from __future__ import annotations

from pathlib import Path

from kapdata import db, report
from kapdata import patient as pt


def test_a_saved_report_draws_its_charts_offline(browser, e2e_db: Path, tmp_path: Path) -> None:
    with db.reader(e2e_db) as con:
        row = con.execute(
            "SELECT patient_id FROM scores GROUP BY patient_id ORDER BY count(*) DESC LIMIT 1"
        ).fetchone()
        assert row is not None
        view = pt.patient_view(con, row[0])
    html = report.progress_report(view)
    assert len(html.encode()) < 1_000_000
    saved = tmp_path / "report.html"
    saved.write_text(html, encoding="utf-8")
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    context.set_offline(True)
    requested: list[str] = []
    page = context.new_page()
    page.on("request", lambda r: requested.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(saved.as_uri())
    page.wait_for_function(
        "n => document.querySelectorAll('.js-plotly-plot .scatterlayer .trace').length >= n",
        arg=len(view.scales),
        timeout=30000,
    )
    assert page.locator(".js-plotly-plot").count() == len(view.scales)
    assert errors == []
    assert [u for u in requested if not u.startswith("file:")] == []
    context.close()


def test_a_downloaded_chart_with_the_full_library_draws_offline(browser, tmp_path: Path) -> None:
    import plotly.graph_objects as go

    from kapdata.charts import html as chart_html

    fig = go.Figure(go.Funnel(y=["enrolled", "dosed", "integration"], x=[100, 80, 60]))
    saved = tmp_path / "retention.html"
    saved.write_text(chart_html.figure_document(fig, "Retention"), encoding="utf-8")
    context = browser.new_context()
    context.set_offline(True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(saved.as_uri())
    page.wait_for_selector(".js-plotly-plot .funnellayer .trace", timeout=30000)
    assert errors == []
    context.close()
