"""Offline, small HTML for figures (kapdata.charts.html): plotly.js inlined once, compressed; labels inert."""

from __future__ import annotations

import base64
import gzip
import json
import re

import plotly.graph_objects as go

from kapdata.charts import html as chart_html


def _library(doc: str) -> str:
    packed = re.search(r'<script type="application/octet-stream" id="kap-plotly">([^<]+)</script>', doc)
    assert packed is not None
    return gzip.decompress(base64.b64decode(packed.group(1))).decode()


def test_a_scatter_chart_carries_the_basic_bundle_and_stays_under_a_megabyte() -> None:
    fig = go.Figure(go.Scatter(x=[1, 2, 3], y=[12, 8, 5], name="PHQ-9"))
    doc = chart_html.figure_document(fig, "PHQ-9")
    assert len(doc) < 700_000
    assert _library(doc).startswith("/**\n* plotly.js (basic - minified)")
    assert doc.count('id="kap-plotly"') == 1
    assert not re.search(r"<script[^>]*\bsrc=", doc)


def test_a_funnel_needs_and_gets_the_full_library_compressed() -> None:
    fig = go.Figure(go.Funnel(y=["enrolled", "dosed"], x=[100, 80]))
    assert chart_html.needs_full_library([fig])
    doc = chart_html.figure_document(fig, "Retention")
    assert _library(doc).startswith("/**\n* plotly.js v")
    assert len(doc) < 2_500_000  # 4.8 MB uncompressed


def test_a_label_cannot_close_its_script_element() -> None:
    hostile = '</script><img src="https://example.invalid/beacon.png">'
    fig = go.Figure(go.Bar(x=[hostile], y=[3]))
    doc = chart_html.figure_document(fig, hostile)
    assert "beacon" in doc and "<img" not in doc
    payload = re.search(r'data-kap-figure="chart"[^>]*>([^<]*)</script>', doc)
    assert payload is not None
    assert json.loads(payload.group(1))["data"][0]["x"] == [hostile]


def test_no_figures_no_library() -> None:
    assert chart_html.figure_scripts([]) == ""
