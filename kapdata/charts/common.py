"""Plotly figure builders: data in, figure out. No Streamlit here."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from kapdata import db

PHASE_COLORS: dict[str, str] = {
    "preparation": "#8da0cb",
    "dosing": "#e78ac3",
    "integration": "#66c2a5",
    "follow-up": "#fc8d62",
}
INSTRUMENT_COLORS: dict[str, str] = {"PHQ-9": "#1f77b4", "GAD-7": "#2ca02c", "PCL-5": "#9467bd"}
#: Severity bands from the mildest to the most severe (green to red).
SEVERITY_COLORS: tuple[str, ...] = ("#1a9850", "#91cf60", "#fee08b", "#fc8d59", "#d73027")


def severity_colors(n: int) -> list[str]:
    """``n`` colours from green (mildest) to red (most severe): one per band of a scale."""
    if n <= 1:
        return [SEVERITY_COLORS[0]] * n
    last = len(SEVERITY_COLORS) - 1
    return [SEVERITY_COLORS[round(i * last / (n - 1))] for i in range(n)]


FONT = "Source Sans Pro, Arial, sans-serif"


def plain(text: object) -> str:
    """A name from the data (clinic, provider…) for a Plotly label: Plotly reads ``<a href>``, ``<b>`` and
    friends in any text, so ``<`` and ``&`` are escaped and the name shows as the characters it is."""
    return html.escape(str(text), quote=False)


def layout_dict(*, height: int = 360, title: str | None = None) -> dict[str, Any]:
    """The house layout as a plain dict (for figures built from dicts in one go)."""
    return {
        "template": "plotly_white",
        "height": height,
        "margin": {"l": 10, "r": 10, "t": 80 if title else 30, "b": 10},
        "font": {"family": FONT, "size": 13},
        "title": {"text": title, "x": 0, "xanchor": "left", "y": 0.97, "yanchor": "top"} if title else None,
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0, "xanchor": "left"},
    }


def base_layout(fig: go.Figure, *, height: int = 360, title: str | None = None) -> go.Figure:
    fig.update_layout(**layout_dict(height=height, title=title))
    return fig


def scores_by_phase(frame: pd.DataFrame) -> go.Figure:
    """Grouped bars: number of scores per instrument in each phase."""
    fig = go.Figure()
    for phase in db.PHASES:
        part = frame[frame["phase"] == phase]
        fig.add_bar(
            name=phase,
            x=part["instrument"],
            y=part["scores"],
            marker_color=PHASE_COLORS[phase],
            customdata=part["patients"],
            hovertemplate="%{x} · " + phase + "<br>%{y} scores from %{customdata} patients<extra></extra>",
        )
    fig.update_layout(barmode="group", yaxis_title="scores", xaxis_title=None)
    return base_layout(fig, title="Questionnaires completed, by phase")
