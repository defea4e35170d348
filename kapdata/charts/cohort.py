"""Figures of the clinic outcomes page: aggregates in (display frames of :mod:`kapdata.cohort`), figures out.

Cells from fewer than ``min_cell`` patients are drawn with open markers (the frames' ``small`` columns).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from kapdata import cohort
from kapdata import instruments as reg
from kapdata.charts.common import (
    INSTRUMENT_COLORS,
    PHASE_COLORS,
    SEVERITY_COLORS,
    base_layout,
    plain,
    severity_colors,
)

#: Severity from mildest to most severe (the same scale the patient view uses for its bands).

#: Waterfall bars by outcome (the categories of ``cohort.WATERFALL_CATEGORIES``, in order).
CATEGORY_COLORS: dict[str, str] = dict(
    zip(cohort.WATERFALL_CATEGORIES, ("#1a9850", "#91cf60", "#bdbdbd", "#d73027"), strict=True)
)
PUBLISHED_COLOR = "#616161"
GROUP_COLORS: tuple[str, ...] = tuple(plotly.colors.qualitative.D3) + tuple(plotly.colors.qualitative.Safe)
#: Legend below the plot area (subplot titles sit above it).
LEGEND_BELOW = {"orientation": "h", "yanchor": "top", "y": -0.14, "x": 0, "xanchor": "left"}


def _wrap(text: str, width: int = 11) -> str:
    """Break a label into lines of about ``width`` characters at spaces (``<br>`` for Plotly)."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "<br>".join(lines)


def _rgba(color: str, alpha: float) -> str:
    if color.startswith("#"):
        r, g, b = plotly.colors.hex_to_rgb(color)
    else:
        r, g, b = plotly.colors.unlabel_rgb(color)
    return f"rgba({int(r)}, {int(g)}, {int(b)}, {alpha})"


#: Colours of the registry's band labels, so that a label has one colour on every scale.
BAND_LABEL_COLORS: dict[str, str] = {
    "minimal": SEVERITY_COLORS[0],
    "mild": SEVERITY_COLORS[1],
    "moderate": SEVERITY_COLORS[2],
    "moderately severe": SEVERITY_COLORS[3],
    "severe": SEVERITY_COLORS[4],
}


def band_colors(inst: reg.Instrument, labels: Mapping[int, str]) -> dict[int, str]:
    """A colour per band order: the label's own colour, else by position from green to red (a scale
    without validated bands has two: below and at or above its caseness)."""
    scale = severity_colors(len(inst.bands) or 2)
    return {o: BAND_LABEL_COLORS.get(label, scale[min(o, len(scale)) - 1]) for o, label in labels.items()}


def _empty(title: str, message: str, height: int = 260) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(
        text=message,
        showarrow=False,
        x=0.5,
        y=0.5,
        xref="paper",
        yref="paper",
        font={"size": 14, "color": "#757575"},
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return base_layout(fig, height=height, title=title)


def funnel(frame: pd.DataFrame) -> go.Figure:
    """Retention through the stages of care: each stage counts patients who reached it and every stage
    before it; the hover says how many were lost at that step."""
    if frame.empty or int(frame["retained"].iloc[0]) == 0:
        return _empty("Patients still in care at each stage", "No patients in this cohort.")
    colors = [
        "#9e9e9e",
        PHASE_COLORS["preparation"],
        PHASE_COLORS["dosing"],
        PHASE_COLORS["dosing"],
        PHASE_COLORS["integration"],
        PHASE_COLORS["follow-up"],
    ]
    fig = go.Figure(
        go.Funnel(
            y=frame["label"],
            x=frame["retained"],
            textinfo="value+percent initial",
            marker={"color": colors[: len(frame)]},
            connector={"line": {"color": "#bdbdbd", "width": 1}},
            customdata=frame[["lost", "reached", "not_yet_due"]].to_numpy(),
            hovertemplate="<b>%{y}</b><br>%{x:,} patients (%{percentInitial:.0%} of enrolled)"
            "<br>lost at this step (due, not reached): %{customdata[0]:,}"
            "<br>not yet due for this step: %{customdata[2]:,}"
            "<br>reached this stage by any path: %{customdata[1]:,}<extra></extra>",
        )
    )
    base_layout(fig, height=340, title="Patients still in care at each stage")
    fig.update_layout(margin={"l": 10, "r": 10, "t": 50, "b": 10}, showlegend=False)
    return fig


def _fixed_margins(fig: go.Figure, *, left: int, right: int, top: int, bottom: int) -> go.Figure:
    """Margins that already hold the axes' tick labels and titles, with the axes' automatic margins off.

    With ``automargin`` on, Plotly draws a figure, measures its labels, grows the margins and draws it again:
    for the page's wide multi-panel figures that second pass is most of the drawing time. These margins are
    what that pass arrives at (measured in the page, with a few pixels to spare), so the figure looks the
    same and is drawn once. A legend outside the plot still makes room for itself."""
    fig.update_layout(margin={"l": left, "r": right, "t": top, "b": bottom})
    fig.update_xaxes(automargin=False)
    fig.update_yaxes(automargin=False)
    return fig


def _group_colors(groups: Sequence[str]) -> dict[str, str]:
    return {g: GROUP_COLORS[i % len(GROUP_COLORS)] for i, g in enumerate(groups)}


def trajectory(
    frame: pd.DataFrame, *, by: str, scales: Sequence[str], group_label: str | None = None
) -> go.Figure:
    """Mean score with its 95% interval by phase (or week since the first dose), one panel per scale.
    Without a breakdown one line per scale with a shaded band; with one, a line per group (bands while
    there are at most four groups, so the lines stay readable)."""
    title = "Mean score by phase" if by == "phase" else "Mean score by week since the first dose"
    if frame.empty:
        return _empty(title, "No scores for this cohort.")
    frame = frame.assign(grp=frame["grp"].map(plain))  # names from the data are shown as text
    grouped = frame[frame["dimension"] != "all"]
    lines = grouped if not grouped.empty else frame[frame["dimension"] == "all"]
    groups = list(dict.fromkeys(lines["grp"]))
    colors = _group_colors(groups)
    bands = grouped.empty or len(groups) <= 4
    fig = make_subplots(
        rows=1, cols=len(scales), subplot_titles=[f"<b>{s}</b>" for s in scales], horizontal_spacing=0.06
    )
    for col, code in enumerate(scales, start=1):
        inst = reg.get(code)
        for grp in groups:
            part = lines[(lines["instrument"] == code) & (lines["grp"] == grp)].sort_values("order")
            if part.empty:
                continue
            if by == "phase":
                part = part.assign(x=part["x"].str.replace("End of ", "End of<br>", regex=False))
            color = INSTRUMENT_COLORS.get(code, "#333333") if grouped.empty else colors[grp]
            name = code if grouped.empty else str(grp)
            ok = part.dropna(subset=["mean_low", "mean_high"])
            if bands and not ok.empty:
                fig.add_scatter(
                    x=list(ok["x"]) + list(ok["x"])[::-1],
                    y=list(ok["mean_high"]) + list(ok["mean_low"])[::-1],
                    mode="lines",
                    fill="toself",
                    fillcolor=_rgba(color, 0.14),
                    line={"width": 0},
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=name,
                    row=1,
                    col=col,
                )
            fig.add_scatter(
                x=part["x"],
                y=part["mean"],
                mode="lines+markers",
                name=name,
                legendgroup=name,
                showlegend=col == 1 or grouped.empty,
                line={"color": color, "width": 2.5},
                marker={
                    "size": 8 if by == "phase" else 5,
                    "color": ["white" if s else color for s in part["small"]],
                    "line": {"color": color, "width": 2},
                },
                customdata=part[["n", "mean_low", "mean_high"]].to_numpy(),
                hovertemplate=f"<b>{name}</b> · %{{x}}<br>mean {code} %{{y:.1f}}"
                "<br>95% CI %{customdata[1]:.1f}–%{customdata[2]:.1f}"
                "<br>n = %{customdata[0]:,}<extra></extra>",
                row=1,
                col=col,
            )
        fig.update_yaxes(range=[0, inst.total_max], title_text=f"{code} (0–{inst.total_max})", row=1, col=col)
        fig.update_xaxes(tickangle=0, row=1, col=col)
        if by == "week":
            fig.update_xaxes(title_text="weeks since first dose (0 = baseline)", row=1, col=col)
    base_layout(fig, height=400, title=title + (f" and {group_label.lower()}" if group_label else ""))
    fig.update_layout(legend=LEGEND_BELOW | {"y": -0.22}, showlegend=not grouped.empty)
    fig.update_xaxes(showgrid=False)
    # Tick labels of two lines (phases) or one line and the axis title (weeks); the last phase's overhangs.
    return _fixed_margins(fig, left=72, right=24, top=70, bottom=56 if by == "phase" else 68)


def severity_shift(frame: pd.DataFrame, *, scales: Sequence[str], endpoint_label: str) -> go.Figure:
    """Stacked bars, one panel per scale: for each baseline severity band (with its n), the share of
    patients in each band at the endpoint, green (mildest) to red."""
    title = f"Severity shift: baseline → {endpoint_label.lower()}"
    if frame.empty:
        return _empty(title, "No patients with a baseline and an endpoint.")
    present = [s for s in scales if s in set(frame["instrument"])]
    widths = [max(2, len(reg.get(s).bands)) for s in present]  # room for every band's label
    fig = make_subplots(
        rows=1,
        cols=len(present),
        subplot_titles=[f"<b>{s}</b>" for s in present],
        horizontal_spacing=0.05,
        column_widths=[w / sum(widths) for w in widths],
    )
    shown: set[str] = set()
    for col, code in enumerate(present, start=1):
        part = frame[frame["instrument"] == code]
        bands = part[["to_order", "to_band"]].drop_duplicates()
        labels = dict(zip(part["from_order"], part["from_band"], strict=False))
        labels.update(dict(zip(part["to_order"], part["to_band"], strict=False)))
        colors = band_colors(reg.get(code), labels)
        totals = part.groupby("from_order")["patients"].sum()
        x_of = {o: f"{_wrap(labels[o])}<br>n = {int(totals[o]):,}" for o in totals.index}
        for order, band in bands.sort_values("to_order").itertuples(index=False):
            seg = part[part["to_order"] == order].sort_values("from_order")
            fig.add_bar(
                x=[x_of[o] for o in seg["from_order"]],
                y=100 * seg["share"],
                name=band,
                legendgroup=band,
                showlegend=band not in shown,
                marker_color=colors[order],
                customdata=seg[["patients", "from_band"]].to_numpy(),
                hovertemplate="baseline %{customdata[1]} → <b>"
                + band
                + "</b><br>%{customdata[0]:,} patients "
                "(%{y:.0f}%)<extra></extra>",
                row=1,
                col=col,
            )
            shown.add(band)
        fig.update_xaxes(categoryorder="array", categoryarray=[x_of[o] for o in sorted(x_of)], row=1, col=col)
    fig.update_yaxes(range=[0, 100], ticksuffix="%")
    fig.update_yaxes(title_text="share of patients by endpoint band", row=1, col=1)
    base_layout(fig, height=470, title=title)
    fig.update_layout(
        barmode="stack",
        legend=LEGEND_BELOW | {"y": -0.36, "title": {"text": "band at endpoint: "}},
    )
    fig.update_xaxes(title_text="band at baseline", title_standoff=6, tickangle=0, tickfont={"size": 11})
    # Up to four lines of band label and n, the axis title and the legend below.
    return _fixed_margins(fig, left=88, right=10, top=70, bottom=150)


#: A waterfall panel with more bars than this draws them as filled shapes (:func:`_steps`), not bar elements.
WATERFALL_SHAPES_ABOVE = 100


def _steps(seg: pd.DataFrame) -> tuple[list[float | None], list[float | None], list[list[float] | None]]:
    """One category's bars as filled shapes: each run of consecutive bars is one closed outline (from the
    zero line along the bars' tops, each bar ``b`` spanning ``b ± 0.5``, back to zero), runs separated by
    ``None``. One SVG path per category instead of one element per bar: the same picture, far lighter for
    the browser. Every point carries its bar's ``[patients, pct_change]`` (the hover's numbers), the
    zero-line corners too."""
    xs: list[float | None] = []
    ys: list[float | None] = []
    data: list[list[float] | None] = []
    prev: int | None = None
    last: list[float] = []
    for bar, pct, n in seg.sort_values("bar")[["bar", "pct_change", "patients"]].itertuples(index=False):
        b, here = int(bar), [int(n), float(pct)]
        if prev is None or b != prev + 1:
            if prev is not None:  # close the previous run and break the outline
                xs += [prev + 0.5, None]
                ys += [0.0, None]
                data += [last, None]
            xs.append(b - 0.5)
            ys.append(0.0)
            data.append(here)
        xs += [b - 0.5, b + 0.5]
        ys += [float(pct), float(pct)]
        data += [here, here]
        prev, last = b, here
    if prev is not None:
        xs.append(prev + 0.5)
        ys.append(0.0)
        data.append(last)
    return xs, ys, data


def waterfall(
    frame: pd.DataFrame,
    *,
    scales: Sequence[str],
    thresholds: Mapping[str, Mapping[str, int]],
    endpoint_label: str,
) -> go.Figure:
    """Per-patient % change from baseline at the endpoint, most worsened on the left, coloured by outcome;
    the response threshold dashed. Above a few hundred patients each bar is an equal share of them."""
    title = f"Change from baseline per patient at {endpoint_label.lower()}"
    if frame.empty:
        return _empty(title, "No patients with a baseline above 0 and an endpoint.")
    present = [s for s in scales if s in set(frame["instrument"])]
    fig = make_subplots(
        rows=1,
        cols=len(present),
        shared_yaxes=True,
        horizontal_spacing=0.03,
        subplot_titles=[f"<b>{s}</b>" for s in present],
    )
    top = 100.0
    for col, code in enumerate(present, start=1):
        part = frame[frame["instrument"] == code]
        patients = int(part["patients"].sum())
        binned = len(part) < patients
        counts = {c: int(part[c.replace(" ", "_")].sum()) for c in CATEGORY_COLORS}
        for category, color in CATEGORY_COLORS.items():
            seg = part[part["category"] == category]
            if seg.empty and col > 1:
                continue
            share = f"{counts[category]:,} ({100 * counts[category] / patients:.0f}%)" if patients else ""
            hover = (
                "<b>"
                + category
                + "</b> (in "
                + code
                + ": "
                + share
                + ")<br>"
                + (
                    "mean %{customdata[1]:.0f}% of %{customdata[0]} patients"
                    if binned
                    else "%{customdata[1]:.0f}%"
                )
                + "<extra></extra>"
            )
            common = {"name": category, "legendgroup": category, "showlegend": col == 1, "row": 1, "col": col}
            if len(part) <= WATERFALL_SHAPES_ABOVE:
                fig.add_bar(
                    x=seg["bar"],
                    y=seg["pct_change"],
                    marker={"color": color, "line": {"width": 0}},
                    customdata=seg[["patients", "pct_change"]].to_numpy(),
                    hovertemplate=hover,
                    **common,
                )
                continue
            x, y, data = _steps(seg)
            fig.add_scatter(
                x=x,
                y=y,
                mode="lines",
                fill="toself",
                fillcolor=color,
                line={"color": color, "width": 0},
                hoveron="points",
                customdata=data,
                hovertemplate=hover,
                **common,
            )
        response = thresholds.get(code, {}).get("response_pct")
        if response is not None:
            fig.add_hline(
                y=-response,
                line={"dash": "dash", "color": "#2e7d32", "width": 1.5},
                row=1,
                col=col,
                annotation_text=f"response (−{response}%)",
                annotation_position="bottom left",
                annotation_font={"size": 11, "color": "#2e7d32"},
            )
        fig.update_xaxes(
            title_text=f"{patients:,} patients" + (" (each bar a share)" if binned else ""),
            showticklabels=False,
            showgrid=False,
            zeroline=False,
            row=1,
            col=col,
        )
        top = max(top, float(part["pct_change"].max()))
    fig.update_yaxes(range=[-105, min(top, 200) + 5], ticksuffix="%", zeroline=True, zerolinecolor="#616161")
    fig.update_yaxes(title_text="% change from baseline (negative = better)", row=1, col=1)
    base_layout(fig, height=400, title=title)
    fig.update_layout(
        barmode="relative",
        bargap=0.05,
        legend=LEGEND_BELOW | {"y": -0.12},
    )
    # The y axis's title and its ticks (at most 200%), the x axes' titles and the legend below.
    return _fixed_margins(fig, left=95, right=10, top=70, bottom=74)


def breakdown(
    frame: pd.DataFrame, *, scales: Sequence[str], group_label: str, endpoint_label: str
) -> go.Figure:
    """Response and remission per group with 95% intervals, one colour per scale; open markers for
    groups under ``min_cell`` patients."""
    title = f"Response and remission at {endpoint_label.lower()} by {group_label.lower()}"
    if frame.empty:
        return _empty(title, "No groups to compare.")
    frame = frame.assign(group=frame["group"].map(plain))  # names from the data are shown as text
    groups = sorted(set(frame["group"]), key=str)
    fig = make_subplots(
        rows=1,
        cols=2,
        shared_yaxes=True,
        subplot_titles=["<b>Response</b>", "<b>Remission</b>"],
        horizontal_spacing=0.04,
    )
    present = [s for s in scales if s in set(frame["instrument"])]
    for col, measure in enumerate(("response", "remission"), start=1):
        for code in present:
            part = frame[frame["instrument"] == code].set_index("group").reindex(groups).dropna(subset=["n"])
            color = INSTRUMENT_COLORS.get(code, "#333333")
            rate = 100 * part[measure].astype(float)
            fig.add_scatter(
                x=rate,
                y=list(part.index),
                mode="markers",
                name=code,
                legendgroup=code,
                showlegend=col == 1,
                marker={
                    "size": 10,
                    "color": ["white" if s else color for s in part[f"{measure}_small"]],
                    "line": {"color": color, "width": 2},
                },
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "color": color,
                    "thickness": 1.5,
                    "array": 100 * part[f"{measure}_high"].astype(float) - rate,
                    "arrayminus": rate - 100 * part[f"{measure}_low"].astype(float),
                },
                offsetgroup=code,
                orientation="h",
                customdata=part[[f"{measure}_k", f"{measure}_n"]].to_numpy(),
                hovertemplate="<b>%{y}</b> · " + code + f" {measure} %{{x:.1f}}%"
                "<br>%{customdata[0]} of %{customdata[1]}<extra></extra>",
                row=1,
                col=col,
            )
    fig.update_xaxes(range=[0, 100], ticksuffix="%")
    fig.update_yaxes(categoryorder="array", categoryarray=groups[::-1], type="category")
    height = max(320, 120 + 34 * len(groups))
    base_layout(fig, height=height, title=title)
    fig.update_layout(
        scattermode="group",
        legend=LEGEND_BELOW | {"y": -min(0.3, 45 / (height - 80))},
        margin={"l": 10, "r": 10, "t": 70, "b": 10},
    )
    return fig


def published_comparison(
    cohort_rates: pd.DataFrame, published: pd.DataFrame, *, population_label: str, endpoint_label: str
) -> go.Figure:
    """This cohort's response and remission (filled, with 95% intervals) beside published results (open
    diamonds, labelled with their study). The published numbers are other studies', drawn apart."""
    title = "This cohort beside published results"
    rows = [
        f"{code} {m}"
        for code in cohort_rates["instrument"]
        for m in ("response", "remission")
        if code in set(published["instrument"])
    ]
    if not rows:
        return _empty(title, "No published results for the chosen scales.")
    fig = go.Figure()
    for measure in ("response", "remission"):
        part = cohort_rates[cohort_rates["instrument"].isin(published["instrument"])]
        y = [f"{c} {measure}" for c in part["instrument"]]
        rate = 100 * part[measure].astype(float)
        fig.add_scatter(
            x=rate,
            y=y,
            mode="markers",
            name=f"this cohort ({population_label.lower()}, {endpoint_label.lower()})",
            legendgroup="cohort",
            showlegend=measure == "response",
            marker={"size": 12, "color": "#1f77b4"},
            error_x={
                "type": "data",
                "symmetric": False,
                "color": "#1f77b4",
                "thickness": 2,
                "array": 100 * part[f"{measure}_high"].astype(float) - rate,
                "arrayminus": rate - 100 * part[f"{measure}_low"].astype(float),
            },
            customdata=part[[f"{measure}_k", f"{measure}_n"]].to_numpy(),
            hovertemplate="this cohort: %{x:.1f}% (%{customdata[0]} of %{customdata[1]})<extra></extra>",
        )
    symbols = ("diamond-open", "square-open", "triangle-up-open", "x-thin-open")
    for i, study in enumerate(dict.fromkeys(published["study"])):
        part = published[published["study"] == study]
        for measure in ("response", "remission"):
            fig.add_scatter(
                x=100 * part[measure].astype(float),
                y=[f"{c} {measure}" for c in part["instrument"]],
                mode="markers",
                name=f"published: {study}",
                legendgroup=study,
                showlegend=measure == "response",
                marker={
                    "size": 13,
                    "symbol": symbols[i % len(symbols)],
                    "color": PUBLISHED_COLOR,
                    "line": {"width": 2},
                },
                customdata=part[["treatment", "endpoint"]].to_numpy(),
                hovertemplate="<b>published: "
                + study
                + "</b> %{x:.1f}%<br>%{customdata[0]}<br>%{customdata[1]}"
                "<extra></extra>",
            )
    fig.update_yaxes(categoryorder="array", categoryarray=rows[::-1], type="category")
    fig.update_xaxes(range=[0, 100], ticksuffix="%")
    base_layout(fig, height=120 + 45 * len(rows), title=title)
    fig.update_layout(legend=LEGEND_BELOW | {"y": -0.18})
    # Row labels such as "PHQ-9 remission", the x ticks and the legend of studies below.
    return _fixed_margins(fig, left=114, right=10, top=50, bottom=75)


def side_effects(frame: pd.DataFrame) -> go.Figure:
    """Side effects: share of dosing sessions that reported each (hover: patients)."""
    title = "Side effects reported, share of sessions"
    if frame.empty:
        return _empty(title, "No side effects reported.", height=240)
    part = frame.sort_values("session_rate")
    fig = go.Figure(
        go.Bar(
            x=100 * part["session_rate"],
            y=part["side_effect"],
            orientation="h",
            marker_color="#8c6bb1",
            customdata=part[["sessions", "all_sessions", "patients", "all_patients"]].to_numpy(),
            text=[f"{100 * r:.1f}%" for r in part["session_rate"]],
            textposition="outside",
            cliponaxis=False,
            hovertemplate="<b>%{y}</b><br>%{customdata[0]:,} of %{customdata[1]:,} sessions (%{x:.1f}%)"
            "<br>%{customdata[2]:,} of %{customdata[3]:,} patients<extra></extra>",
        )
    )
    fig.update_xaxes(ticksuffix="%", rangemode="tozero")
    base_layout(fig, height=80 + 28 * len(part), title=title)
    fig.update_layout(margin={"l": 10, "r": 40, "t": 50, "b": 10}, showlegend=False)
    return fig
