"""Figures of one patient: a scale over time (phases, severity bands, targets, sessions) and item answers.

Each figure is assembled as plain dicts and validated once, in ``go.Figure(...)``: Plotly's ``add_shape``,
``add_annotation``, ``add_hrect``… re-validate the whole layout on every call, which made one patient's six
figures cost about half a second to build (issue 14). The figures are the same.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from kapdata import instruments as reg
from kapdata.charts.common import (
    INSTRUMENT_COLORS,
    PHASE_COLORS,
    SEVERITY_COLORS,
    layout_dict,
    severity_colors,
)
from kapdata.patient import PatientView, caseness_name, response_target

#: Severity bands, mildest to most severe (faint backgrounds).
SESSION_COLOR = "#ad1457"
SAFETY_COLOR = "#c62828"
TARGET_COLORS: dict[str, str] = {"response": "#2e7d32", "remission": "#00838f", "caseness": "#455a64"}
PHASE_SHORT: dict[str, str] = {
    "preparation": "prep",
    "dosing": "dosing",
    "integration": "integr.",
    "follow-up": "f-up",
}
#: Rough plot-area width in pixels and label character width, to decide whether a phase label fits its band.
PLOT_PX = 900
CHAR_PX = 6.6


def _num(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _known_true(value: object) -> bool:
    """True only for a known true: None / NA (e.g. a safety item not answered) is unknown."""
    return value is not None and not pd.isna(value) and bool(value)  # type: ignore[call-overload]


def _ts(value: dt.date) -> pd.Timestamp:
    return pd.Timestamp(value)


def x_range(view: PatientView) -> tuple[dt.date, dt.date]:
    """From a few days before the first record to a week after the last (up to today while care is active)."""
    status = view.status
    starts = [d for d in (status["first_score_on"], status["first_session"]) if d is not None]
    ends = [d for d in (status["last_score_on"], status["last_session"]) if d is not None]
    if status["phase"] != "follow-up":
        ends.append(view.today)
    start = min(starts) if starts else view.today
    end = max(ends) if ends else view.today
    return start - dt.timedelta(days=6), end + dt.timedelta(days=7)


@dataclass
class _Spec:
    """A figure being assembled: traces, shapes and annotations in drawing order, as plain dicts."""

    data: list[dict[str, Any]] = field(default_factory=list)
    shapes: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)

    def figure(self, layout: dict[str, Any]) -> go.Figure:
        """The figure, validated once. No title is an empty one (as `base_layout`'s `title=None` gives)."""
        layout = {**layout, "title": layout.get("title") or {}}
        return go.Figure(
            {"data": self.data, "layout": {**layout, "shapes": self.shapes, "annotations": self.annotations}}
        )


def _label(fig: _Spec, **kw: object) -> None:
    font = {"size": 11, "color": kw.pop("color", "#757575")}
    fig.annotations.append({"showarrow": False, "font": font, **kw})


def _hrect(fig: _Spec, y0: float, y1: float, **kw: object) -> None:
    """A band across the plot's whole width (``add_hrect``)."""
    fig.shapes.append(
        {"type": "rect", "xref": "x domain", "x0": 0, "x1": 1, "yref": "y", "y0": y0, "y1": y1, **kw}
    )


def _vrect(fig: _Spec, x0: object, x1: object, **kw: object) -> None:
    """A band across the plot's whole height (``add_vrect``)."""
    fig.shapes.append(
        {"type": "rect", "xref": "x", "x0": x0, "x1": x1, "yref": "y domain", "y0": 0, "y1": 1, **kw}
    )


def _severity_background(fig: _Spec, inst: reg.Instrument, caseness: int) -> None:
    """The scale's severity bands as faint horizontal bands, labelled on the right."""
    bands = [(b.low, min(b.high + 1, inst.total_max), b.label) for b in inst.bands]
    colors = severity_colors(len(bands))
    if not bands:  # no validated bands (PCL-5): the probable-PTSD range only
        bands, colors = [(caseness, inst.total_max, "probable<br>PTSD")], [SEVERITY_COLORS[-1]]
    for (low, high, label), color in zip(bands, colors, strict=True):
        _hrect(fig, low, high, fillcolor=color, opacity=0.07, line={"width": 0}, layer="below")
        _label(fig, x=1.0, xref="paper", xanchor="left", y=(low + high) / 2, text=label)


def _phase_bands(fig: _Spec, view: PatientView, start: dt.date, end: dt.date) -> None:
    """Phases as light vertical bands with a labelled strip along the top of the plot."""
    total_days = max((end - start).days, 1)
    for phase, a, b in view.phase_spans(end):
        if a == b:  # a single dosing session: a visible sliver
            a, b = a - dt.timedelta(days=1), b + dt.timedelta(days=1)
        a = max(a, start)
        color = PHASE_COLORS[phase]
        _vrect(fig, _ts(a), _ts(b), fillcolor=color, opacity=0.10, line={"width": 0}, layer="below")
        fig.shapes.append(
            {
                "type": "rect",
                "x0": _ts(a),
                "x1": _ts(b),
                "y0": 1.01,
                "y1": 1.07,
                "yref": "paper",
                "fillcolor": color,
                "opacity": 0.75,
                "line": {"width": 0},
            }
        )
        width_px = (b - a).days / total_days * PLOT_PX
        text = phase if len(phase) * CHAR_PX < width_px else PHASE_SHORT[phase]
        if len(text) * CHAR_PX < width_px:
            _label(fig, x=_ts(a + (b - a) / 2), y=1.04, yref="paper", text=text, color="#212121")


def _target(fig: _Spec, x0: dt.date, x1: dt.date, y: float, text: str, key: str, *, below: bool) -> None:
    """A dotted target line with its label at the right end (above it, or below it when ``below``)."""
    color = TARGET_COLORS[key]
    fig.shapes.append(
        {
            "type": "line",
            "x0": _ts(x0),
            "x1": _ts(x1),
            "y0": y,
            "y1": y,
            "line": {"color": color, "width": 1.5, "dash": "dash" if key == "caseness" else "dot"},
        }
    )
    _label(fig, x=_ts(x1), y=y, xanchor="right", yanchor="top" if below else "bottom", text=text, color=color)


def _targets(fig: _Spec, view: PatientView, inst: reg.Instrument, start: dt.date, end: dt.date) -> None:
    """The caseness line, and the response and remission targets relative to this patient's baseline."""
    caseness, remission = view.threshold(inst.code, "caseness"), view.threshold(inst.code, "remission_below")
    latest = view.latest_outcome(inst.code)
    lines: list[tuple[float, str, str, dt.date]] = []
    if remission == caseness:  # PCL-5: one line, two meanings
        lines.append((caseness, f"{caseness_name(inst)} ≥ {caseness} · remission below", "caseness", start))
    else:
        lines.append((caseness, f"{caseness_name(inst)} ≥ {caseness}", "caseness", start))
        lines.append((remission, f"remission < {remission}", "remission", start))
    pct = view.threshold(inst.code, "response_pct")
    response_at = response_target(latest.get("baseline"), pct)
    if response_at is not None and latest.get("baseline_on") is not None:
        text = f"response ≤ {response_at} (−{pct}% of baseline {latest['baseline']})"
        lines.append((response_at, text, "response", latest["baseline_on"]))
    # Labels of lines closer than ~6% of the axis go on opposite sides so they never overlap.
    lines.sort(key=lambda line: line[0])
    gap = inst.total_max * 0.06
    for n, (y, text, key, x0) in enumerate(lines):
        close_above = n + 1 < len(lines) and lines[n + 1][0] - y < gap
        _target(fig, x0, end, y, text, key, below=close_above)


def _scores(fig: _Spec, view: PatientView, inst: reg.Instrument) -> None:
    scores = view.scale_scores(inst.code)
    day = scores["day"].astype("object").where(scores["day"].notna(), "–")
    prorated = [" (prorated)" if _known_true(v) else "" for v in scores["prorated"]]
    safety = [f"<br>{text}" if isinstance(text, str) else "" for text in scores["safety_answer"]]
    fig.data.append(
        {
            "type": "scatter",
            "x": pd.to_datetime(scores["assessed_on"]),
            "y": scores["total"],
            "mode": "lines+markers",
            "name": inst.code,
            "line": {"color": INSTRUMENT_COLORS.get(inst.code, "#333333"), "width": 2.5},
            "marker": {"size": 8},
            "customdata": np.column_stack(
                [scores["band"].fillna("–"), scores["phase"], day, prorated, safety]
            ),
            "hovertemplate": "%{x|%d %b %Y} · day %{customdata[2]}<br><b>"
            + inst.code
            + " %{y}%{customdata[3]}</b> · %{customdata[0]}"
            "<br>%{customdata[1]}%{customdata[4]}<extra></extra>",
        }
    )
    flagged = scores[scores["safety"].map(_known_true).astype(bool)]
    if not flagged.empty:
        items = ", ".join(map(str, inst.safety_items))
        answers = [max(i[k - 1] for k in inst.safety_items) for i in flagged["items"]]
        fig.data.append(
            {
                "type": "scatter",
                "x": pd.to_datetime(flagged["assessed_on"]),
                "y": flagged["total"],
                "mode": "markers",
                "name": f"item {items} > 0 (safety)",
                "marker": {
                    "size": 17,
                    "color": "rgba(0,0,0,0)",
                    "line": {"color": SAFETY_COLOR, "width": 2.5},
                },
                "customdata": answers,
                "hovertemplate": "%{x|%d %b %Y}<br><b>safety: item "
                + items
                + " = %{customdata}</b><extra></extra>",
            }
        )
    latest = view.latest_outcome(inst.code)
    if latest.get("baseline") is not None and latest.get("baseline_on") is not None:
        fig.data.append(
            {
                "type": "scatter",
                "x": [_ts(latest["baseline_on"])],
                "y": [latest["baseline"]],
                "mode": "markers+text",
                "name": "baseline",
                "marker": {
                    "symbol": "diamond",
                    "size": 14,
                    "color": "white",
                    "line": {"color": "#212121", "width": 2},
                },
                "text": [f"baseline {latest['baseline']}"],
                "textposition": "bottom right" if latest["baseline"] > inst.total_max * 0.75 else "top right",
                "textfont": {"size": 11},
                "hovertemplate": "baseline %{y} (%{x|%d %b %Y}): "
                "the last score in preparation<extra></extra>",
            }
        )


def _sessions(fig: _Spec, view: PatientView, inst: reg.Instrument) -> None:
    s = view.sessions
    if s.empty:
        return
    dissociation = s["dissociation"].astype("object").where(s["dissociation"].notna(), "–")
    fig.data.append(
        {
            "type": "scatter",
            "x": pd.to_datetime(s["session_date"]),
            "y": [-inst.total_max * 0.045] * len(s),
            "mode": "markers",
            "name": "dosing session",
            "marker": {"symbol": "triangle-up", "size": 11, "color": SESSION_COLOR},
            "customdata": np.column_stack(
                [s["session_no"], s["route"].fillna("–"), s["dose"], s["bp_pre"], s["bp_post"], dissociation]
            ),
            "hovertemplate": "session %{customdata[0]} · %{x|%d %b %Y}<br>%{customdata[1]} %{customdata[2]}"
            "<br>BP %{customdata[3]} → %{customdata[4]}"
            "<br>dissociation (CADSS-6) %{customdata[5]}<extra></extra>",
        }
    )


def score_trend(
    view: PatientView, code: str, *, height: int = 440, width: int | None = None, title: bool = True
) -> go.Figure:
    """One scale over time: phases shaded and labelled, severity bands faint, the caseness line, dosing
    sessions as markers (route and dose on hover), the baseline marked, the response and remission targets
    relative to this patient's baseline, safety answers ringed."""
    inst = reg.get(code)
    start, end = x_range(view)
    fig = _Spec()
    _severity_background(fig, inst, view.threshold(inst.code, "caseness"))
    _phase_bands(fig, view, start, end)
    _targets(fig, view, inst, start, end)
    _scores(fig, view, inst)
    _sessions(fig, view, inst)
    if start <= view.today <= end:
        fig.shapes.append(
            {
                "type": "line",
                "xref": "x",
                "x0": _ts(view.today),
                "x1": _ts(view.today),
                "yref": "y domain",
                "y0": 0,
                "y1": 1,
                "line": {"color": "#9e9e9e", "width": 1, "dash": "dot"},
            }
        )
        _label(fig, x=_ts(view.today), y=inst.total_max, xanchor="right", yanchor="top", text="today ")
    layout = layout_dict(height=height, title=f"{inst.code} · {inst.construct}" if title else None)
    # Margins that already hold what Plotly's automatic margins would make room for (the y title and
    # two-digit ticks, two-line date ticks, the legend above): with automargin on, Plotly draws the figure,
    # measures, grows the margins and draws it again, most of the time a patient view took in the browser.
    layout["xaxis"] = {"range": [_ts(start), _ts(end)], "showgrid": False, "automargin": False}
    layout["yaxis"] = {
        "range": [-inst.total_max * 0.09, inst.total_max * 1.05],
        "title": {"text": f"{inst.code} total (0–{inst.total_max})"},
        "zeroline": False,
        "gridcolor": "rgba(0,0,0,0.06)",
        "automargin": False,
    }
    layout["margin"] = {"l": 58, "r": 120, "t": 116 if title else 78, "b": 50}
    layout["legend"] = {**layout["legend"], "y": 1.1, "yanchor": "bottom"}
    layout["hovermode"] = "closest"
    if width:
        layout["width"] = width
    return fig.figure(layout)


def item_heatmap(view: PatientView, code: str, *, width: int | None = None) -> go.Figure | None:
    """Item answers over time (one row per item, one column per questionnaire with items). Safety items
    (PHQ-9 item 9) in red; PCL-5 clusters B/C/D/E separated. None when the scale has no item answers."""
    inst = reg.get(code)
    part = view.scale_scores(inst.code).dropna(subset=["items"])
    if part.empty:
        return None
    values = np.array(part["items"].tolist(), dtype=float).T  # items x questionnaires
    x = list(range(values.shape[1]))
    columns = [
        f"{d:%d %b %y}<br>{PHASE_SHORT[p]}" for d, p in zip(part["assessed_on"], part["phase"], strict=True)
    ]
    labels = [f"{n}. {text}" for n, text in enumerate(inst.item_labels or [""] * inst.n_items, start=1)]
    safety_rows = [k - 1 for k in inst.safety_items]
    main = values.copy()
    main[safety_rows, :] = np.nan
    common = {
        "x": x,
        "y": labels,
        "zmin": 0,
        "zmax": inst.item_max,
        "showscale": False,
        "xgap": 2,
        "ygap": 2,
        "texttemplate": "%{z}",
        "textfont": {"size": 11},
    }
    fig = _Spec()
    fig.data.append(
        {
            "type": "heatmap",
            "z": main,
            "colorscale": [[0, "#f7fbff"], [1, "#2171b5"]],
            "hovertemplate": "%{y}<br>answer %{z} of " + str(inst.item_max) + "<extra></extra>",
            **common,
        }
    )
    if safety_rows:
        safety = np.full_like(values, np.nan)
        safety[safety_rows, :] = values[safety_rows, :]
        fig.data.append(
            {
                "type": "heatmap",
                "z": safety,
                "colorscale": [[0, "#fff5f5"], [0.01, "#fcbba1"], [1, "#a50f15"]],
                "hovertemplate": "<b>%{y}</b> (safety item)<br>answer %{z} of "
                + str(inst.item_max)
                + "<extra></extra>",
                **common,
            }
        )
    ticktext = [
        f"<b><span style='color:{SAFETY_COLOR}'>{label} ⚠</span></b>" if n in inst.safety_items else label
        for n, label in enumerate(labels, start=1)
    ]
    for name, items in inst.subscales.items():
        _label(
            fig,
            x=1.0,
            xref="paper",
            xanchor="left",
            y=labels[(items[0] + items[-1]) // 2 - 1],
            text=f"<b>{name}</b>",
            color="#616161",
        )
        if items[0] > 1:
            y = items[0] - 1.5
            line = {"color": "#424242", "width": 2}
            fig.shapes.append(
                {
                    "type": "line",
                    "xref": "x domain",
                    "x0": 0,
                    "x1": 1,
                    "yref": "y",
                    "y0": y,
                    "y1": y,
                    "line": line,
                }
            )
    layout = layout_dict(height=60 + 24 * inst.n_items, title=None)
    layout["yaxis"] = {
        "autorange": "reversed",
        "tickmode": "array",
        "tickvals": labels,
        "ticktext": ticktext,
        "type": "category",
        "showgrid": False,
    }
    layout["xaxis"] = {
        "tickmode": "array",
        "tickvals": x,
        "ticktext": columns,
        "tickfont": {"size": 10},
        "side": "top",
        "showgrid": False,
    }
    layout["margin"] = {"l": 10, "r": 30 if inst.subscales else 10, "t": 40, "b": 10}
    layout["showlegend"] = False
    if width:
        layout["width"] = width
    return fig.figure(layout)
