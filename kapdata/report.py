"""A self-contained HTML progress report of one patient, to share in an integration session and to print.

Self-contained: Plotly's JavaScript is inlined once (no CDN, no external file), styles are inline, and a
print stylesheet keeps charts and tables whole on A4 pages. Everything shown comes from a
:class:`kapdata.patient.PatientView`; every value is HTML-escaped.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from kapdata import definitions as defs
from kapdata import instruments as reg
from kapdata import patient as pt
from kapdata.charts import html as chart_html
from kapdata.charts import patient as charts

#: Printable width of an A4 page with 14 mm margins, in CSS pixels.
CHART_WIDTH = 680

STYLE = """
:root { --ink: #212121; --muted: #616161; --line: #d0d7de; --bad: #c62828; --good: #2e7d32; }
* { box-sizing: border-box; }
body { font-family: "Source Sans Pro", Arial, sans-serif; color: var(--ink); margin: 0 auto; padding: 24px;
       max-width: 760px; font-size: 14px; line-height: 1.4; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 22px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 3px; }
h3 { font-size: 15px; margin: 14px 0 6px; }
p.meta { color: var(--muted); margin: 0 0 12px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 10px; font-size: 12.5px; }
th, td { border: 1px solid var(--line); padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.high { background: #ffebee; color: var(--bad); font-weight: 600; }
td.yes { color: var(--good); font-weight: 600; }
td.bad { color: var(--bad); font-weight: 600; }
.flags { border: 2px solid var(--bad); background: #fff5f5; padding: 6px 10px; margin: 8px 0; }
.flags.none { border-color: var(--line); background: #fafafa; }
.chart { margin: 8px 0 14px; }
dl { font-size: 12.5px; margin: 0; }
dt { font-weight: 600; margin-top: 6px; }
dd { margin: 0 0 0 14px; color: #424242; }
dd .src { color: var(--muted); }
footer { color: var(--muted); font-size: 11.5px; margin-top: 24px; border-top: 1px solid var(--line);
         padding-top: 6px; }
@page { size: A4; margin: 14mm; }
@media print {
  body { padding: 0; max-width: none; font-size: 11pt; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  h2, h3 { break-after: avoid; page-break-after: avoid; }
  .chart, table, .flags, dl { break-inside: avoid; page-break-inside: avoid; }
  .modebar-container { display: none !important; }
  .pagebreak { break-before: page; page-break-before: always; }
}
"""

#: The outcome columns of the summary, with their headings and the definition key for each.
OUTCOME_HEADINGS: tuple[tuple[str, str], ...] = (
    ("response", "Response"),
    ("remission", "Remission"),
    ("reliable_improvement", "Reliable improvement"),
    ("reliable_deterioration", "Reliable deterioration"),
    ("recovery", "Recovery"),
    ("reliable_recovery", "Reliable recovery"),
)


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def fmt_number(value: Any, *, signed: bool = False, pct: bool = False) -> str:
    """``–`` when missing; ``+3`` / ``-8`` with ``signed``; ``-47%`` with ``pct``."""
    if _missing(value):
        return "–"
    number = float(value)
    if pct:
        text = f"{number:+.0f}%" if round(number) else "0%"
    elif signed:
        text = f"{number:+.0f}" if round(number) else "0"
    else:
        text = f"{number:.0f}" if number.is_integer() else f"{number:.1f}"
    return text.replace("-", "−")


def fmt_flag(value: Any) -> str:
    return "–" if _missing(value) else ("yes" if bool(value) else "no")


def fmt_date(value: Any) -> str:
    if _missing(value):
        return "–"
    return pd.Timestamp(value).strftime("%Y-%m-%d")


def _table(headings: Sequence[str], rows: Iterable[Sequence[tuple[str, str]]]) -> str:
    """Rows of (text, css class) cells; the text is escaped here."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headings)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{cls}">{_e(text)}</td>' if cls else f"<td>{_e(text)}</td>" for text, cls in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def fmt_total(value: Any, prorated: Any) -> str:
    """A total, marked ``prorated`` when it was computed from the answered items."""
    text = fmt_number(value)
    return f"{text} prorated" if not _missing(prorated) and bool(prorated) and text != "–" else text


def fmt_outcome(state: str) -> str:
    """``yes`` / ``no`` / ``not defined (baseline below clinical range)`` / ``–`` (no later score yet)."""
    if state == pt.MET:
        return "yes"
    if state == pt.NOT_MET:
        return "no"
    if state == pt.NO_LATER_SCORE:
        return "–"
    return state.replace("not defined: ", "not defined (") + ")"


def _ack_text(ack: Any) -> str:
    if not ack:
        return ""
    note = f": {ack['note']}" if ack.get("note") else ""
    return f" — acknowledged by {ack['who']} on {fmt_date(ack['stamp'])}{note}"


def _flags_html(status: dict[str, Any]) -> str:
    safety_on = fmt_date(status.get("safety_on"))
    parts = [
        (
            "flag_safety",
            f"Safety: {status.get('safety_detail') or ''} on {safety_on} (“{pt.SAFETY_ITEM_WORDING}” "
            "answered above 0): complete a risk assessment" + _ack_text(status.get("safety_ack")),
        ),
        (
            "flag_deterioration",
            f"Reliable deterioration: {status.get('deteriorated_scales') or ''}"
            + _ack_text(status.get("deterioration_ack")),
        ),
        (
            "flag_overdue",
            f"Overdue: {status.get('days_since_score') or '–'} days since the last questionnaire",
        ),
        ("flag_no_baseline", "No baseline: dosing started without a preparation questionnaire"),
        ("discharged", f"Discharged on {fmt_date(status.get('discharged_at'))} (kept in every outcome)"),
    ]
    shown = [text for key, text in parts if status.get(key)]
    if not shown:
        return '<div class="flags none">No flags.</div>'
    return '<div class="flags"><b>Flags</b><ul>' + "".join(f"<li>{_e(t)}</li>" for t in shown) + "</ul></div>"


def _summary_html(view: pt.PatientView) -> str:
    """Two tables: the numbers per scale, then each outcome (rows) per scale (columns) at the latest score."""
    summary = pt.scale_summary(view).to_dict(orient="records")
    numbers = [
        [
            (r["instrument"], ""),
            (
                "–"
                if _missing(r["baseline"])
                else f"{fmt_total(r['baseline'], r['baseline_prorated'])} ({fmt_date(r['baseline_on'])})",
                "",
            ),
            (f"{fmt_total(r['latest'], r['latest_prorated'])} ({fmt_date(r['latest_on'])})", ""),
            ("–" if _missing(r["band"]) else r["band"], ""),
            (fmt_number(r["change"], signed=True), "num"),
            (fmt_number(r["pct_change"], pct=True), "num"),
        ]
        for r in summary
    ]
    outcomes = []
    states = [pt.outcome_states(r) for r in summary]
    for key, heading in OUTCOME_HEADINGS:
        cells = [(heading, "")]
        for state in states:
            text = fmt_outcome(state[key])
            cells.append(
                (text, ("bad" if key == "reliable_deterioration" else "yes") if text == "yes" else "")
            )
        outcomes.append(cells)
    return _table(["Scale", "Baseline", "Latest", "Severity", "Change", "% change"], numbers) + _table(
        ["At the latest score", *(r["instrument"] for r in summary)], outcomes
    )


def _phases_html(view: pt.PatientView) -> str:
    frame = view.outcomes[view.outcomes["phase"] != "latest"]
    frame = frame[frame["endpoint"].notna()]
    if frame.empty:
        return "<p>No scores after baseline yet.</p>"
    rows = [
        [
            (r["instrument"], ""),
            (r["phase"], ""),
            (f"{fmt_total(r['endpoint'], r['endpoint_prorated'])} ({fmt_date(r['endpoint_on'])})", ""),
            (fmt_number(r["change"], signed=True), "num"),
            (fmt_number(r["pct_change"], pct=True), "num"),
            (fmt_outcome(pt.outcome_states(r)["response"]), ""),
            (fmt_outcome(pt.outcome_states(r)["remission"]), ""),
        ]
        for r in frame.to_dict(orient="records")
    ]
    return _table(
        ["Scale", "Phase", "Last score in phase", "Change", "% change", "Response", "Remission"], rows
    )


def _assessments_html(view: pt.PatientView) -> str:
    rows = [
        [
            (fmt_date(r["assessed_on"]), ""),
            (r["instrument"], ""),
            (fmt_total(r["total"], r["prorated"]), "num"),
            ("–" if _missing(r["band"]) else r["band"], ""),
            (r["phase"], ""),
            (
                "" if _missing(r["safety_answer"]) else r["safety_answer"],
                "high" if not _missing(r["safety"]) and bool(r["safety"]) else "",
            ),
        ]
        for r in pt.assessment_table(view).to_dict(orient="records")
    ]
    return _table(["Date", "Scale", "Total", "Severity", "Phase", "Safety item"], rows)


def _sessions_html(view: pt.PatientView) -> str:
    if view.sessions.empty:
        return "<p>No dosing sessions recorded.</p>"
    rows = []
    for r in pt.session_log(view).to_dict(orient="records"):
        rows.append(
            [
                (str(r["session_no"]), "num"),
                (fmt_date(r["session_date"]), ""),
                (r["route"] or "–", ""),
                (r["dose"], ""),
                (r["bp_pre"], "high" if r["bp_high_pre"] else ""),
                (r["bp_post"], "high" if r["bp_high_post"] else ""),
                (fmt_number(r["dissociation"]), "num"),
                (r["side_effects"] if not _missing(r["side_effects"]) else "", ""),
            ]
        )
    headings = [
        "#",
        "Date",
        "Route",
        "Dose",
        "BP before",
        "BP after",
        "Dissociation (CADSS-6)",
        "Side effects",
    ]
    return _table(headings, rows)


def _pcl5_html(view: pt.PatientView) -> str:
    frame = view.pcl5()
    if frame.empty:
        return ""
    rows = [
        [
            (fmt_date(r["assessed_on"]), ""),
            (r["phase"], ""),
            (fmt_number(r["total"]), "num"),
            *((f"{fmt_number(r[f'cluster_{c}'])} ({fmt_number(r[f'endorsed_{c}'])})", "num") for c in "BCDE"),
            (fmt_flag(r["dsm5_met"]), "bad" if r["dsm5_met"] else ""),
        ]
        for r in frame.to_dict(orient="records")
    ]
    headings = [
        "Date",
        "Phase",
        "Total",
        "B (endorsed)",
        "C (endorsed)",
        "D (endorsed)",
        "E (endorsed)",
        "DSM-5 rule met",
    ]
    return "<h3>PCL-5 clusters</h3>" + _table(headings, rows)


def _definitions_html(view: pt.PatientView) -> str:
    """The definitions in force (from :mod:`kapdata.definitions`), then every source in full."""
    help_text = pt.help_texts(view.settings)
    entries = [
        defs.Definition("Current phase (as of the report's date)", help_text["phase"]),
        *defs.phase_rules(view.settings),
        *defs.metric_definitions(view.settings),
        *defs.flag_definitions(view.settings),
        defs.pcl5_diagnosis(),
    ]
    items = "".join(
        f"<dt>{_e(d.term)}</dt><dd>{_e(d.meaning)}"
        + (f" <i>{_e(d.formula)}</i>" if d.formula else "")
        + (f' <span class="src">({_e(d.source)})</span>' if d.source else "")
        + "</dd>"
        for d in entries
    )
    sources = dict.fromkeys(  # each source once, in order (NHS Talking Therapies backs two scales)
        [s for i in reg.INSTRUMENTS for s in i.sources] + [reg.RELIABLE_CHANGE_SOURCE, defs.NHS_TT_SOURCE]
    )
    refs = "".join(f"<li>{_e(s)}</li>" for s in sources)
    return f"<dl>{items}</dl><h3>Sources</h3><ul>{refs}</ul>"


def progress_report(view: pt.PatientView, *, generated: dt.datetime | None = None) -> str:
    """The whole report as one self-contained HTML document (about 0.6 MB for one patient: plotly.js is
    inlined once, compressed; see :mod:`kapdata.charts.html`). Opens and prints offline; fetches nothing."""
    s = view.status
    charts_html = []
    figures: list[tuple[go.Figure, str]] = []
    for code in view.scales:
        fig = charts.score_trend(view, code, height=380, width=CHART_WIDTH)
        div_id = f"chart-{reg.get(code).key.lower()}"
        figures.append((fig, div_id))
        charts_html.append(f'<div class="chart"><div id="{div_id}" style="height:380px"></div></div>')
    stamp = (generated or dt.datetime.now()).strftime("%Y-%m-%d %H:%M")
    sessions = f"{s['n_sessions']} dosing session" + ("" if s["n_sessions"] == 1 else "s")
    if s["first_session"]:
        sessions += f" ({fmt_date(s['first_session'])} to {fmt_date(s['last_session'])})"
    meta = " · ".join(
        _e(x)
        for x in (
            f"Clinic {s['clinic'] or '–'}",
            f"provider {s['provider'] or '–'}",
            f"route {s['route'] or '–'}",
            f"{s['primary_condition'] or '–'}",
            f"current phase {s['phase']} (day {fmt_number(s['days_in_phase'])})",
            sessions,
        )
    )
    body = [
        f"<h1>Progress report · patient {_e(view.patient_id)}</h1>",
        f'<p class="meta">{meta}<br>As of {fmt_date(view.today)}. Pseudonymous ID; no personal details.</p>',
        _flags_html(s),
        "<h2>Scores: baseline and latest</h2>",
        _summary_html(view),
        "<h2>Over time</h2>",
        *charts_html,
        "<h2>By phase</h2>",
        _phases_html(view),
        _pcl5_html(view),
        '<h2 class="pagebreak">Questionnaires</h2>',
        _assessments_html(view),
        "<h2>Dosing sessions</h2>",
        _sessions_html(view),
        "<h2>Definitions</h2>",
        _definitions_html(view),
        f"<footer>KAP Outcomes · generated {_e(stamp)} · thresholds and settings as stored in the database "
        "at that time.</footer>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Progress report {_e(view.patient_id)}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{STYLE}</style></head><body>"
        + "\n".join(body)
        + chart_html.figure_scripts(figures)
        + "</body></html>"
    )
