"""Figures in HTML files that work offline and stay small: the printable report and chart downloads.

plotly.js is inlined once per file, as base64 of its gzip file, unpacked by the browser itself
(``DecompressionStream``, in every current browser) and run; each figure is then drawn from its JSON. A file
whose traces are all scatter, bar or pie (every chart of the patient report) carries plotly.js's "basic"
bundle (0.39 MB compressed, 0.53 MB inlined; bundled in ``kapdata/assets``, MIT licence beside it); any other
carries the full library that ships with the plotly package (4.8 MB, about 1.9 MB inlined this way).
Nothing is fetched from anywhere.
"""

from __future__ import annotations

import base64
import functools
import gzip
import html
import json
from collections.abc import Sequence
from pathlib import Path

import plotly
import plotly.graph_objects as go

ASSETS = Path(__file__).resolve().parents[1] / "assets"
PLOTLY_BASIC_GZ = ASSETS / "plotly-basic.min.js.gz"
BASIC_TRACES = frozenset({"scatter", "bar", "pie"})

_LOADER = """<script>(async function () {
  const packed = document.getElementById("kap-plotly").textContent;
  const bytes = Uint8Array.from(atob(packed), function (c) { return c.charCodeAt(0); });
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  const lib = document.createElement("script");
  lib.text = await new Response(stream).text();
  document.head.appendChild(lib);
  document.querySelectorAll("script[data-kap-figure]").forEach(function (el) {
    const fig = JSON.parse(el.textContent);
    Plotly.newPlot(el.dataset.kapFigure, fig.data, fig.layout, JSON.parse(el.dataset.kapConfig || "{}"));
  });
})();</script>"""


@functools.cache
def _packed(basic: bool) -> str:
    """plotly.js, gzip-compressed, as base64 (computed once per process for the full library)."""
    if basic:
        data = PLOTLY_BASIC_GZ.read_bytes()
    else:
        full = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
        data = gzip.compress(full.read_bytes(), compresslevel=9, mtime=0)
    return base64.b64encode(data).decode("ascii")


def needs_full_library(figures: Sequence[go.Figure]) -> bool:
    return any(trace.type not in BASIC_TRACES for fig in figures for trace in fig.data)


def figure_scripts(figures: Sequence[tuple[go.Figure, str]], config: dict[str, object] | None = None) -> str:
    """Script elements that draw each figure into the element with its id (``""`` when there are none).
    Every ``<`` in a figure's JSON is escaped (``\\u003c``), so no label can close its element."""
    if not figures:
        return ""
    conf = html.escape(json.dumps(config or {"displayModeBar": False, "responsive": False}))
    parts = [
        f'<script type="application/json" data-kap-figure="{html.escape(div_id)}" data-kap-config="{conf}">'
        + fig.to_json().replace("<", "\\u003c")
        + "</script>"
        for fig, div_id in figures
    ]
    basic = not needs_full_library([fig for fig, _ in figures])
    packed = _packed(basic)
    return (
        "".join(parts)
        + f'<script type="application/octet-stream" id="kap-plotly">{packed}</script>'
        + _LOADER
    )


def figure_document(fig: go.Figure, title: str) -> str:
    """One figure as a whole HTML document (a chart's "HTML" download): interactive, offline, no CDN."""
    layout = fig.layout
    height = layout.height or 520
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<style>body{margin:16px;font-family:sans-serif}</style></head><body>"
        f'<div id="chart" style="width:100%;height:{int(height)}px"></div>'
        + figure_scripts([(fig, "chart")], {"displaylogo": False, "responsive": True})
        + "</body></html>"
    )
