"""The self-contained HTML progress report: numbers, charts without a CDN, definitions, print stylesheet."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import re
from pathlib import Path

import pytest

from kapdata import db, report
from kapdata import patient as pt

from .test_patient import TODAY, build_cohort


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    path = build_cohort(tmp_path_factory.mktemp("report"))
    out = {}
    with db.reader(path) as con:
        for pid in ("S1", "D1", "R1"):
            view = pt.patient_view(con, pid, TODAY)
            assert view is not None
            out[pid] = report.progress_report(view, generated=dt.datetime(2025, 6, 30, 9, 0))
    return out


def text_of(html: str) -> str:
    """The visible text, scripts removed (enough to look for numbers)."""
    body = re.sub(r"<script.*?</script>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))


def test_report_is_self_contained_without_external_scripts(reports):
    html = reports["S1"]
    assert not re.search(r"<script[^>]*\bsrc=", html, flags=re.I)
    assert not re.search(r"<link[^>]*\bhref=", html, flags=re.I)
    assert html.count("data-kap-figure=") == 1  # one PHQ-9 chart
    assert html.count('id="kap-plotly"') == 1  # the library is inlined once
    assert len(reports["D1"]) - len(reports["S1"]) < 100_000  # the second chart does not inline it again
    assert len(html) < 1_000_000  # plotly.js's basic bundle, compressed


def test_the_inlined_library_is_plotly_basic_and_the_figures_are_json_without_a_raw_angle_bracket(reports):
    html = reports["D1"]
    packed = re.search(r'<script type="application/octet-stream" id="kap-plotly">([^<]+)</script>', html)
    assert packed is not None
    code = gzip.decompress(base64.b64decode(packed.group(1))).decode()
    assert code.startswith("/**\n* plotly.js (basic - minified)")
    element = r'<script type="application/json" data-kap-figure="([^"]+)"[^>]*>([^<]*)</script>'
    figures = re.findall(element, html)
    assert len(figures) == 2
    for div_id, payload in figures:
        fig = json.loads(payload)
        assert f'id="{div_id}"' in html
        assert {t["type"] for t in fig["data"]} <= {"scatter", "bar", "pie"}


def test_report_carries_the_numbers_of_the_patient(reports):
    text = text_of(reports["S1"])
    assert "Progress report · patient S1" in text
    assert "16 (2025-04-25)" in text and "9 (2025-06-25)" in text  # baseline and latest
    assert "−7" in text and "−44%" in text  # change and % change
    assert "current phase dosing (day 60)" in text
    assert "3 dosing sessions (2025-05-01 to 2025-06-20)" in text
    assert "Safety: PHQ-9 item 9 = 1" in text


def test_report_marks_outcomes_and_high_blood_pressure(reports):
    html = reports["S1"]
    outcomes = re.search(r"<th>At the latest score</th>.*?</table>", html, flags=re.S)
    assert outcomes is not None
    rows = re.findall(r"<tr><td>([^<]*)</td><td[^>]*>([^<]*)</td></tr>", outcomes.group(0))
    assert rows == [
        ("Response", "no"),  # 43.75% < 50%
        ("Remission", "no"),  # 9 is not below 5
        ("Reliable improvement", "yes"),  # −7 ≤ −6
        ("Reliable deterioration", "no"),
        ("Recovery", "yes"),  # 16 ≥ 10 → 9 < 10
        ("Reliable recovery", "yes"),
    ]
    assert '<td class="high">165/98</td>' in html and '<td class="high">140/101</td>' in html
    assert "<td>160/100</td>" in html  # 160/100 is not over 160/100


def test_report_includes_definitions_sources_and_a_print_stylesheet(reports):
    html = reports["D1"]
    assert "@media print" in html and "@page" in html and "break-inside: avoid" in html
    text = text_of(html)
    assert "Reliable deterioration A rise of at least the reliable change" in text
    assert "Current phase (as of the report" in text
    assert "Jacobson NS, Truax P." in text
    assert "Blevins CA" in text
    assert "PCL-5 clusters" in text and "DSM-5 rule met" in text
    assert "Reliable deterioration: GAD-7" in text  # the flag


def test_report_of_a_patient_without_sessions_says_so(reports):
    text = text_of(reports["R1"])
    assert "No dosing sessions recorded." in text
    assert "No scores after baseline yet." in text
    assert "No flags." in text


def test_report_can_be_written_and_reopened(tmp_path: Path, reports):
    out = tmp_path / "report.html"
    out.write_text(reports["S1"], encoding="utf-8")
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
