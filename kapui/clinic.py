"""Streamlit glue for the Clinic outcomes page: the cached report, the page's own controls, cell formats,
and downloads (every chart as PNG from Plotly's toolbar and as a self-contained HTML file; every table and
every chart's numbers as CSV).

The report is one query batch on a short-lived read-only connection, cached on ``(path, data_version,
choices)`` (:class:`Choices`: the scoped filter, scales, endpoint, breakdown, weekly); it holds both
populations, so the completers / ITT toggle redraws from the cache. Everything drawn from it (each table as
shown, each figure) is built once per report and population (:class:`View`, shared by every rerun and
session with the same key, which holds the data version and the signed-in person's scope) and never
modified after, so a rerun only sends the page.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from kapdata import access, cohort, csvsafe, db, stats
from kapdata import definitions as defs
from kapdata import instruments as reg
from kapdata.charts import cohort as figs
from kapdata.charts import html as chart_html
from kapdata.cohort import CohortFilter

if TYPE_CHECKING:
    from pandas.io.formats.style import Styler

WARN = "⚠"
SMALL_STYLE = "background-color: #fff3cd"
PLOTLY_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


@dataclass(frozen=True)
class Choices:
    """What one view of the page is of: the (scoped) cohort filter and the page's own choices. Hashable, so
    it is the cache key of the report and of the view."""

    filt: CohortFilter
    scales: tuple[str, ...]
    endpoint: str
    breakdown: str | None
    weekly: bool


@st.cache_data(show_spinner="Computing the cohort's outcomes…", max_entries=32)
def _report(path: str, version: tuple[int, int], choices: Choices) -> cohort.CohortReport:
    c = choices
    with db.reader(path) as con:
        return cohort.report(
            con, c.filt, c.scales, endpoint=c.endpoint, breakdown=c.breakdown, weekly=c.weekly
        )


T = TypeVar("T")


class View:
    """One report and what the page draws from it, each part (a table as shown, a figure) built on first
    use and then shared: by the reruns of a session and by every session with the same key. Nothing here is
    modified after it is built (the page and Streamlit only read it)."""

    def __init__(self, rep: cohort.CohortReport) -> None:
        self.rep = rep
        self._parts: dict[Hashable, Any] = {}
        self._lock = threading.Lock()

    def part(self, key: Hashable, build: Callable[[], T]) -> T:
        """The part named ``key`` (which must name every choice ``build`` depends on beyond the report's
        own: population, trajectory axis …), built by ``build`` the first time."""
        if key in self._parts:
            return self._parts[key]  # type: ignore[no-any-return]
        value = build()
        with self._lock:
            return self._parts.setdefault(key, value)  # type: ignore[no-any-return]


def view(path: str, version: tuple[int, int], choices: Choices) -> View:
    """The page's view of the signed-in person's clinics: keyed on the data version and the scoped filter,
    so a director of one clinic never gets another's figures, and a new import, an undo or a settings change
    (a new data version; :func:`kapui.data.clear_caches` drops every view too) shows new numbers."""
    from kapui import auth

    who = auth.principal()
    who.require("cohort.view", "see clinic outcomes")
    return _view(path, version, replace(choices, filt=access.scoped(who, choices.filt)))


@st.cache_resource(show_spinner=False, max_entries=16)
def _view(path: str, version: tuple[int, int], choices: Choices) -> View:
    return View(_report(path, version, choices))


def clear_views() -> None:
    """Drop every cached view (after a write; the data version in the key changes too)."""
    _view.clear()


@dataclass(frozen=True)
class Controls:
    scales: tuple[str, ...]
    endpoint: str
    population: str
    breakdown: str | None

    @property
    def population_label(self) -> str:
        return cohort.POPULATION_LABELS[self.population]

    @property
    def endpoint_label(self) -> str:
        return cohort.PHASE_LABELS[self.endpoint]


def controls() -> Controls:
    """The page's own choices: scales, endpoint, completers / ITT, breakdown."""
    c = st.columns([3, 2, 3, 2], vertical_alignment="bottom")
    codes = list(reg.BY_CODE)
    scales = c[0].multiselect("Scales", codes, default=codes, key="co_scales")
    endpoint = c[1].selectbox(
        "Endpoint",
        db.ENDPOINT_PHASES,
        index=db.ENDPOINT_PHASES.index("latest"),
        format_func=cohort.PHASE_LABELS.get,
        key="co_endpoint",
        help="The phase whose last score counts as the endpoint for the headline rates, severity shift, "
        "waterfall, breakdown and published comparison. Latest: each patient's last score after baseline.",
    )
    population = c[2].radio(
        "Analysis",
        cohort.POPULATIONS,
        format_func=cohort.POPULATION_LABELS.get,
        horizontal=True,
        key="co_population",
        help=" ".join(cohort.POPULATION_HELP.values()),
    )
    breakdown = c[3].selectbox(
        "Breakdown",
        (None, *cohort.DIMENSIONS),
        format_func=lambda d: "none" if d is None else cohort.DIMENSION_LABELS[d],
        key="co_breakdown",
        help="Compare response and remission, and the mean trajectory, across groups.",
    )
    return Controls(
        tuple(s for s in codes if s in scales), str(endpoint), str(population or "completers"), breakdown
    )


# --- cell formats -----------------------------------------------------------------------------------------


def pct(value: float | None) -> str:
    return "–" if value is None or pd.isna(value) else f"{100 * float(value):.1f}%"


def rate_cell(row: pd.Series, name: str) -> str:
    """``31.2% (25.0–35.7) 84/279``, with ⚠ when n is under min_cell; ``–`` without any patient."""
    n = int(row[f"{name}_n"])
    if n == 0 or pd.isna(row[name]):
        return "–"
    text = (
        f"{100 * row[name]:.1f}% ({100 * row[f'{name}_low']:.1f}–{100 * row[f'{name}_high']:.1f}) "
        f"{int(row[f'{name}_k'])}/{n}"
    )
    return f"{text} {WARN}" if row[f"{name}_small"] else text


def mean_cell(row: pd.Series, name: str) -> str:
    """``16.7 (16.1–17.3)``; the mean alone when there is no interval (n < 2)."""
    if pd.isna(row[name]):
        return "–"
    if pd.isna(row[f"{name}_low"]):
        return f"{row[name]:.1f}"
    sign = "+" if name == "mean_change" and row[name] > 0 else ""
    return f"{sign}{row[name]:.1f} ({row[f'{name}_low']:.1f} to {row[f'{name}_high']:.1f})"


def cells(frame: pd.DataFrame, fmt: Callable[[pd.Series, str], str], name: str) -> list[str]:
    """One formatted text per row of a (small, aggregated) frame; empty for an empty frame."""
    return [fmt(row, name) for _, row in frame.iterrows()]


def mark_small(value: object) -> str:
    return SMALL_STYLE if isinstance(value, str) and value.endswith(WARN) else ""


def phase_display(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The phase table as the page shows it, one text cell per figure, in two parts that fit the page:
    scores, response and remission; then reliable change and recovery."""
    first = pd.DataFrame({"Scale": table["instrument"], "Phase": table["phase_label"]})
    scores = first.assign(
        n=[f"{n:,} {WARN}" if s else f"{n:,}" for n, s in zip(table["n"], table["small"], strict=True)],
        **{
            "Mean score (95% CI)": cells(table, mean_cell, "mean"),
            "Mean change (95% CI)": cells(table, mean_cell, "mean_change"),
        },
    )
    change = first.copy()
    for name, label in cohort.RATE_LABELS.items():
        target = scores if name in ("response", "remission") else change
        target[label] = cells(table, rate_cell, name)
    return scores, change[table["phase"] != "baseline"].reset_index(drop=True)


def rates_display(frame: pd.DataFrame, names: dict[str, str], first: dict[str, str]) -> pd.DataFrame:
    """``first`` columns as they are (renamed), then one text cell per rate in ``names``."""
    out = frame[list(first)].rename(columns=first).copy()
    for name, label in names.items():
        out[label] = cells(frame, rate_cell, name)
    return out


# --- showing and downloading -------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _csv(data: pd.DataFrame) -> Callable[[], bytes]:
    return lambda: csvsafe.to_csv_bytes(data)


def csv_button(data: pd.DataFrame, name: str, *, label: str = "Download table (CSV)") -> None:
    """The numbers as CSV, written when the button is clicked (not on every rerun)."""
    st.download_button(
        label,
        _csv(data),
        file_name=f"{_slug(name)}.csv",
        mime="text/csv",
        key=f"csv_{_slug(name)}",
        on_click="ignore",
        icon=":material/download:",
    )


def table(display: pd.DataFrame, data: pd.DataFrame, name: str, *, all_rows: bool = False) -> None:
    """A table as shown (cells from fewer than min_cell patients shaded) and its numbers as CSV.
    ``all_rows``: tall enough to show every row without scrolling."""
    height: int | str = 38 + 35 * len(display) if all_rows else "auto"
    st.dataframe(styled(display), hide_index=True, width="stretch", height=height)
    csv_button(data, name)


def styled(display: pd.DataFrame) -> pd.DataFrame | Styler:
    """The table with its cells from fewer than min_cell patients shaded: a pandas Styler only when there is
    such a cell (a Styler costs far more to send than the plain table, which then looks the same)."""
    small = any(isinstance(v, str) and v.endswith(WARN) for col in display.columns for v in display[col])
    return display.style.map(mark_small) if small else display


def _html(fig: go.Figure, title: str) -> Callable[[], str]:
    return lambda: chart_html.figure_document(fig, title)


def chart(fig: go.Figure, name: str, data: pd.DataFrame | None = None, *, key: str | None = None) -> None:
    """A figure (PNG from its toolbar's camera), a self-contained HTML copy, and its numbers as CSV.

    ``name`` names the files (with the population); ``key`` (default ``name``) names the chart on the page:
    the same key for both populations, so the completers / ITT switch updates the drawn chart in place
    instead of drawing a new one."""
    config = PLOTLY_CONFIG | {
        "toImageButtonOptions": PLOTLY_CONFIG["toImageButtonOptions"] | {"filename": _slug(name)}
    }
    st.plotly_chart(fig, width="stretch", config=config, key=f"fig_{_slug(key or name)}")
    row = st.container(horizontal=True)
    row.download_button(
        "Chart (HTML)",
        _html(fig, name),
        file_name=f"{_slug(name)}.html",
        mime="text/html",
        key=f"html_{_slug(name)}",
        on_click="ignore",
        icon=":material/download:",
        help="The interactive chart as one HTML file that opens offline. "
        "For a PNG use the camera in the chart's toolbar.",
    )
    if data is not None:
        with row:
            csv_button(data, name, label="Chart data (CSV)")


# --- the page's parts, built once per view -----------------------------------------------------------------


def headline(v: View, population: str) -> pd.DataFrame:
    return v.part(("headline", population), lambda: cohort.headline(v.rep, population))


def phase_parts(v: View, population: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The phase table's numbers (for its CSV) and its two parts as shown (:func:`phase_display`)."""

    def build() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        frame = cohort.phase_table(v.rep, population)
        scores, change = phase_display(frame)
        return frame.assign(population=population), scores, change

    return v.part(("phase table", population), build)


def trajectory_parts(
    v: View, population: str, axis: str, scales: tuple[str, ...], group_label: str | None
) -> tuple[pd.DataFrame, go.Figure]:
    def build() -> tuple[pd.DataFrame, go.Figure]:
        frame = cohort.trajectory(v.rep, population, axis)
        return frame, figs.trajectory(frame, by=axis, scales=scales, group_label=group_label)

    return v.part(("trajectory", population, axis, scales, group_label), build)


def shift_parts(
    v: View, population: str, scales: tuple[str, ...], endpoint_label: str
) -> tuple[pd.DataFrame, go.Figure]:
    def build() -> tuple[pd.DataFrame, go.Figure]:
        frame = cohort.shift_table(v.rep, population)
        return frame, figs.severity_shift(frame, scales=scales, endpoint_label=endpoint_label)

    return v.part(("severity shift", population, scales, endpoint_label), build)


def waterfall_parts(
    v: View, population: str, scales: tuple[str, ...], endpoint_label: str
) -> tuple[pd.DataFrame, go.Figure]:
    def build() -> tuple[pd.DataFrame, go.Figure]:
        rep = v.rep
        frame = rep.waterfall[rep.waterfall["population"] == population]
        fig = figs.waterfall(frame, scales=scales, thresholds=rep.thresholds, endpoint_label=endpoint_label)
        return frame, fig

    return v.part(("waterfall", population, scales, endpoint_label), build)


def funnel_parts(v: View) -> tuple[go.Figure, pd.DataFrame, str]:
    """The retention figure, its table as shown and its caption (the same for both populations)."""
    funnel = v.rep.funnel
    return v.part("funnel", lambda: (figs.funnel(funnel), funnel_display(funnel), funnel_caption(funnel)))


def breakdown_parts(
    v: View, population: str, scales: tuple[str, ...], group_label: str, endpoint_label: str
) -> tuple[pd.DataFrame, go.Figure, pd.DataFrame]:
    """The breakdown's numbers, figure and table as shown."""

    def build() -> tuple[pd.DataFrame, go.Figure, pd.DataFrame]:
        groups = cohort.breakdown_table(v.rep, population)
        fig = figs.breakdown(groups, scales=scales, group_label=group_label, endpoint_label=endpoint_label)
        first = {"instrument": "Scale", "group": group_label or "Group", "n": "n"}
        shown = rates_display(groups, {"response": "Response", "remission": "Remission"}, first)
        return groups.assign(population=population, dimension=v.rep.breakdown), fig, shown

    return v.part(("breakdown", population, scales, group_label, endpoint_label), build)


# --- sections ----------------------------------------------------------------------------------------------


def headline_cards(v: View, head: pd.DataFrame, population: str) -> None:
    """One card per scale: response and remission at the endpoint with n and the 95% interval, who was left
    out of remission (baseline below the clinical range) and, for ITT, who is not yet due; then the joint
    NHS Talking Therapies recovery when both of its scales are chosen."""
    if head.empty:
        st.info("No patient in this cohort has a baseline on the chosen scales.")
        return
    rep = v.rep
    out = v.part("left out", lambda: cohort.left_out(rep))
    for col, (_, row) in zip(st.columns(len(head)), head.iterrows(), strict=True):
        t = rep.thresholds[row["instrument"]]
        counts = out.get(row["instrument"], {"itt_not_yet_due": 0})
        small = f" {WARN} fewer than {rep.min_cell}" if row["small"] else ""
        with col.container(border=True):
            st.markdown(f"**{row['instrument']}** · n = {row['n']:,}{small}")
            a, b = st.columns(2)
            a.metric(
                "Response", pct(row["response"]), help=f"≥ {t['response_pct']}% reduction from baseline."
            )
            a.caption(rate_cell(row, "response"))
            b.metric(
                "Remission",
                pct(row["remission"]),
                help=f"Endpoint score below {t['remission_below']}, among patients whose baseline was in the "
                f"clinical range (≥ {t['caseness']}).",
            )
            b.caption(rate_cell(row, "remission"))
            notes = []
            below = int(row["n"]) - int(row["remission_n"])  # remission is undefined only for them
            if below:
                notes.append(
                    f"{below:,} of {int(row['n']):,} with a baseline below {t['caseness']} are left out of "
                    "remission and recovery (not in the clinical range at the start)."
                )
            if population == "itt" and counts["itt_not_yet_due"]:
                notes.append(f"{counts['itt_not_yet_due']:,} who dosed are not yet due for this endpoint.")
            if notes:
                st.caption(" ".join(notes))
    joint = v.part(("joint", population), lambda: cohort.joint_rate(rep, population))
    if joint is not None:
        codes = " and ".join(reg.JOINT_RECOVERY_SCALES)
        cutoffs = ", ".join(f"{c} ≥ {rep.thresholds[c]['caseness']}" for c in reg.JOINT_RECOVERY_SCALES)
        text = "–" if joint.rate is None else fmt_rate(joint)
        st.caption(
            f"Joint recovery (NHS Talking Therapies, {codes}): {text}. A case on either scale at baseline "
            f"({cutoffs}) and on neither at the endpoint; patients need a baseline on both scales."
        )


def fmt_rate(rate: stats.Rate) -> str:
    """``31.2% (95% CI 25.0–35.7), 84/279``, ⚠ when n is under min_cell is left to the caller."""
    lo, hi = rate.ci_low or 0.0, rate.ci_high or 0.0
    return f"{100 * (rate.rate or 0.0):.1f}% (95% CI {100 * lo:.1f}–{100 * hi:.1f}), {rate.k}/{rate.n}"


def funnel_display(funnel: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Stage": funnel["label"],
            "Patients": [f"{n:,}" for n in funnel["retained"]],
            "%": ["–" if pd.isna(p) else f"{p:.0f}%" for p in funnel["pct_enrolled"]],
            "Lost": [f"{n:,}" for n in funnel["lost"]],
            "Not yet due": [f"{n:,}" for n in funnel["not_yet_due"]],
            "Reached": [f"{n:,}" for n in funnel["reached"]],
        }
    )


def funnel_caption(funnel: pd.DataFrame) -> str:
    parts = [
        f"**{label}**: {text}" for label, text in zip(funnel["label"][1:], funnel["help"][1:], strict=True)
    ]
    return (
        "Each stage counts patients who also reached every stage before it. **Lost**: due for the stage on "
        "the data's last day and did not reach it; **not yet due**: may still reach it. " + " ".join(parts)
    )


@dataclass(frozen=True)
class Safety:
    """The safety section's tables (numbers and as shown) and the side-effects figure, for one population."""

    items: pd.DataFrame
    items_shown: pd.DataFrame
    deterioration: pd.DataFrame
    deterioration_shown: pd.DataFrame
    blood_pressure: pd.DataFrame
    blood_pressure_shown: pd.DataFrame
    side_effects: pd.DataFrame
    side_effects_fig: go.Figure
    dissociation: str


def _safety(rep: cohort.CohortReport, population: str) -> Safety:
    safe = cohort.safety_tables(rep, population)
    items, det, bp, fx = safe["items"], safe["deterioration"], safe["blood_pressure"], safe["side_effects"]
    return Safety(
        items,
        rates_display(items, {"rate": "Patients endorsing"}, {"instrument": "Scale", "timepoint": "At"}),
        det,
        rates_display(det, {"reliable_deterioration": "Reliable deterioration"}, {"instrument": "Scale"}),
        bp,
        rates_display(bp, {"rate": "Share"}, {"measure": "Measure"}),
        fx,
        figs.side_effects(fx),
        dissociation_text(rep.sessions),
    )


def safety_section(v: View, ctl: Controls) -> None:
    """Self-harm item, reliable deterioration and blood pressure (left); side effects (right)."""
    safe = v.part(("safety", ctl.population), lambda: _safety(v.rep, ctl.population))
    left, right = st.columns(2)
    with left:
        st.markdown(f"**{defs.SAFETY_ITEM_TEXT}**")
        st.caption("Only questionnaires that answered item 9 count, either way.")
        table(safe.items_shown, safe.items, f"safety items {ctl.population}")
        st.markdown(f"**Reliable deterioration at {ctl.endpoint_label.lower()}**")
        table(safe.deterioration_shown, safe.deterioration, f"reliable deterioration {ctl.population}")
        s = v.rep.sessions
        sys_bp, dia_bp = s.get("bp_sys_threshold") or 0, s.get("bp_dia_threshold") or 0
        st.markdown(
            f"**Blood pressure above {sys_bp:.0f}/{dia_bp:.0f} mmHg** (before or after a dose)",
            help=defs.BP_SOURCE,
        )
        table(safe.blood_pressure_shown, safe.blood_pressure, "blood pressure")
        st.markdown("**Dissociation during dosing (CADSS-6, 0–24)**", help=defs.DISSOCIATION_TEXT)
        st.caption(safe.dissociation)
    with right:
        chart(safe.side_effects_fig, "side effects", safe.side_effects)


def dissociation_text(s: dict[str, Any]) -> str:
    """Mean CADSS-6 total per recorded session with its 95% t-interval, or why there is none."""
    n = int(s.get("dissociation_recorded") or 0)
    if n == 0:
        return "No dissociation scores recorded for this cohort's sessions."
    sd = s.get("dissociation_sd")
    m = stats.t_interval(n, float(s["dissociation_mean"]), None if sd is None else float(sd))
    ci = "" if m.ci_low is None or m.ci_high is None else f" (95% CI {m.ci_low:.1f}–{m.ci_high:.1f})"
    return (
        f"Mean {m.mean or 0:.1f}{ci} over {n:,} of {int(s.get('sessions') or 0):,} sessions with a score "
        f"(higher is more dissociation). Source: {defs.CADSS6_SOURCE}"
    )


def published_section(v: View, head: pd.DataFrame, published: pd.DataFrame, ctl: Controls) -> None:
    """The comparison chart, a compact table and the full citations (``published``: the registry's results
    for the view's scales, so they are part of its key)."""
    fig = v.part(
        ("published comparison", ctl.population, ctl.population_label, ctl.endpoint_label),
        lambda: figs.published_comparison(
            head, published, population_label=ctl.population_label, endpoint_label=ctl.endpoint_label
        ),
    )
    chart(fig, f"published comparison {ctl.population}", key="published comparison")
    shown = pd.DataFrame(
        {
            "Study": published["study"],
            "Scale": published["instrument"],
            "Response": published["response"].map(pct),
            "Remission": published["remission"].map(pct),
            "Treatment": published["treatment"],
            "Measured": published["endpoint"],
            "Patients": published["population"],
        }
    )
    table(shown.drop(columns=["Patients"]), published, "published results")
    notes = published.drop_duplicates("study")
    st.caption(
        "  \n".join(
            f"**{study}** · {who}. {text}"
            for study, who, text in zip(notes["study"], notes["population"], notes["citation"], strict=True)
        )
    )
