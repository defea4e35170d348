"""Every definition the numbers rest on, in plain words, generated from the scale registry and the settings.

Nothing here is typed twice: the scales table comes from :mod:`kapdata.instruments`, the thresholds and the
integration window from the settings in force (:mod:`kapdata.settings`), so the definitions page can never
say something other than what the views compute. A threshold changed on the settings page shows here with
its default beside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from kapdata import db
from kapdata import instruments as reg
from kapdata.settings import THRESHOLDS_BY_KEY, Settings, defaults


@dataclass(frozen=True)
class Definition:
    term: str
    meaning: str  # plain words
    formula: str = ""
    source: str = ""


@dataclass(frozen=True)
class Benchmark:
    """A published result the clinic's own can be placed beside: another study, not this clinic's data."""

    study: str
    treatment: str
    instrument: str
    response_pct: float
    remission_pct: float
    citation: str


WILSON_SOURCE = (
    "Wilson EB. Probable inference, the law of succession, and statistical inference. J Am Stat Assoc "
    "1927;22:209-12. Newcombe RG. Two-sided confidence intervals for the single proportion. Stat Med 1998."
)
NHS_TT_SOURCE = "NHS Talking Therapies for anxiety and depression manual (NHS England): recovery measures."
MCINNES_2022 = (
    "McInnes LA, et al. A retrospective analysis of ketamine intravenous therapy for depression in "
    "real-world care settings. J Affect Disord 2022."
)
HULL_2022 = (
    "Hull TD, et al. At-home, sublingual ketamine telehealth is a safe and effective treatment for "
    "moderate to severe anxiety and depression: findings from a large, prospective, open-label "
    "effectiveness trial. J Affect Disord 2022."
)

#: Published results (DESIGN §5). Other studies' patients: shown beside the clinic's own, never mixed in.
BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        "McInnes et al. 2022",
        "IV ketamine, 9,016 patients across 178 practices",
        "PHQ-9",
        53.6,
        28.9,
        MCINNES_2022,
    ),
    Benchmark("Hull et al. 2022", "At-home sublingual KAP, 4 sessions", "PHQ-9", 62.8, 32.6, HULL_2022),
    Benchmark("Hull et al. 2022", "At-home sublingual KAP, 4 sessions", "GAD-7", 62.9, 31.3, HULL_2022),
)


def short_citation(source: str) -> str:
    """``"Kroenke K, ... 2001;16:606-13."`` → ``"Kroenke 2001"``; no year → up to the first full stop."""
    year = re.search(r"\b(19|20)\d{2}\b", source)
    if not year:
        return source.split(".")[0]
    return f"{source.split()[0].rstrip(',')} {year.group(0)}"


def _in_force(settings: Settings, inst: reg.Instrument, key: str) -> str:
    """The rule in words, with the registry default beside it when the setting differs."""
    spec = THRESHOLDS_BY_KEY[key]
    value = settings.thresholds[inst.code][key]
    default = int(getattr(inst, key))
    text = spec.describe(value)
    return text if value == default else f"{text} (changed; default {spec.describe(default)})"


def _bands(inst: reg.Instrument) -> str:
    if not inst.bands:
        return "none validated; the clinical-range threshold is shown instead"
    return "; ".join(f"{b.low}–{b.high} {b.label}" for b in inst.bands)


def _caseness_name(inst: reg.Instrument) -> str:
    """``"probable PTSD (PCL-5 ≥ 33; ...)"`` → ``"probable PTSD"`` (the label's numbers are the defaults)."""
    return inst.caseness_label.split(" (")[0]


def _safety(inst: reg.Instrument) -> str:
    if not inst.safety_items:
        return "—"
    parts = []
    for n in inst.safety_items:
        label = inst.item_labels[n - 1] if len(inst.item_labels) >= n else ""
        loinc = f", LOINC {inst.loinc_items[n]}" if n in inst.loinc_items else ""
        parts.append(f"item {n} ({label.lower()}{loinc}) > 0 flags the patient")
    return "; ".join(parts)


def _subscales(inst: reg.Instrument) -> str:
    if not inst.subscales:
        return "—"
    return ", ".join(
        f"{name} items {items[0]}–{items[-1]}" if len(items) > 1 else f"{name} item {items[0]}"
        for name, items in inst.subscales.items()
    )


#: The rows of the scales table, in order.
REGISTRY_ROWS: tuple[str, ...] = (
    "Measures",
    "Items × range",
    "Total range",
    "Severity bands",
    "Clinical range",
    "Response",
    "Remission",
    "Reliable change",
    "Safety",
    "Subscales",
    "LOINC panel",
    "LOINC total",
    "LOINC items",
    "Sources",
)


def registry_table(settings: Settings | None = None) -> pd.DataFrame:
    """The scale registry as a table: a row per property, a column per scale (laid out as in DESIGN §5)."""
    s = settings or defaults()
    columns: dict[str, list[str]] = {"": list(REGISTRY_ROWS)}
    for inst in reg.INSTRUMENTS:
        caseness = _in_force(s, inst, "caseness")
        name = _caseness_name(inst)
        if name != "clinical range":
            caseness += f" ({name})"
        columns[inst.code] = [
            f"{inst.construct} — {inst.title}",
            f"{inst.n_items} × {inst.item_min}–{inst.item_max}",
            f"{inst.total_min}–{inst.total_max}",
            _bands(inst),
            caseness,
            _in_force(s, inst, "response_pct"),
            _in_force(s, inst, "remission_below"),
            _in_force(s, inst, "reliable_change"),
            _safety(inst),
            _subscales(inst),
            inst.loinc_panel,
            inst.loinc_total,
            f"{len(inst.loinc_items)} item codes (see the items)" if inst.loinc_items else "—",
            "; ".join(short_citation(src) for src in inst.sources),
        ]
    return pd.DataFrame(columns)


def item_table(inst: reg.Instrument) -> pd.DataFrame:
    """One scale's items: number, short wording, answer range, LOINC code where the registry has one."""
    return pd.DataFrame(
        {
            "item": [f"item_{n}" for n in range(1, inst.n_items + 1)],
            "asks about": [
                inst.item_labels[n - 1] if len(inst.item_labels) >= n else ""
                for n in range(1, inst.n_items + 1)
            ],
            "answers": [f"{inst.item_min}–{inst.item_max}"] * inst.n_items,
            "LOINC": [inst.loinc_items.get(n, "—") for n in range(1, inst.n_items + 1)],
            "safety item": ["yes" if n in inst.safety_items else "" for n in range(1, inst.n_items + 1)],
        }
    )


def phase_rules(settings: Settings | None = None) -> list[Definition]:
    """DESIGN §4 with the integration window in force."""
    s = settings or defaults()
    window = s.general["integration_window_days"]
    default = int(db.DEFAULT_SETTINGS["integration_window_days"])
    changed = "" if window == default else f" (changed; default {default} days)"
    return [
        Definition(
            "preparation",
            "On or before the patient's first dosing session: baseline questionnaires are completed before "
            "the first dose, so one on the day of the first dose counts as preparation. A patient with no "
            "dosing sessions is in preparation.",
            "assessed_on ≤ first session",
        ),
        Definition(
            "dosing",
            "After the first dosing session and on or before the last one.",
            "first session < assessed_on ≤ last session",
        ),
        Definition(
            "integration",
            f"Up to {window} days after the last dosing session{changed}: the integration window, a setting.",
            f"last session < assessed_on ≤ last session + {window} days",
        ),
        Definition(
            "follow-up",
            f"More than {window} days after the last dosing session.",
            f"assessed_on > last session + {window} days",
        ),
        Definition(
            "explicit phase",
            "A questionnaire that arrives with its own phase keeps it: an explicit phase wins over every "
            "rule above. A date-time counts on its own local date; its time orders two questionnaires of "
            "one day.",
        ),
    ]


def _per_scale(settings: Settings, key: str) -> str:
    """``"PHQ-9 ≥ 50% reduction from baseline, GAD-7 ..."``."""
    spec = THRESHOLDS_BY_KEY[key]
    return ", ".join(f"{i.code} {spec.describe(settings.thresholds[i.code][key])}" for i in reg.INSTRUMENTS)


def metric_definitions(settings: Settings | None = None) -> list[Definition]:
    """Per-patient outcome measures (DESIGN §5) with the thresholds in force."""
    s = settings or defaults()
    scale_sources = "each scale's sources (the Sources row of the scales table)"
    rc = reg.RELIABLE_CHANGE_FORMULA
    return [
        Definition(
            "Baseline",
            "The last score of the scale in preparation. Without a baseline no change is computed; the "
            "patient is counted as having no baseline, never silently dropped.",
            "baseline = last preparation score",
        ),
        Definition(
            "Phase endpoint",
            "The last score of the scale in that phase (dosing, integration or follow-up).",
            "endpoint = last score in the phase",
        ),
        Definition(
            "Latest",
            "The last score of the scale after the baseline, that is the last one outside preparation.",
            "latest = last score not in preparation",
        ),
        Definition(
            "Change",
            "Endpoint minus baseline, in points: negative is better.",
            "change = endpoint − baseline",
        ),
        Definition(
            "% change",
            "Change as a percentage of the baseline; undefined when the baseline is 0.",
            "% change = 100 × change ÷ baseline",
        ),
        Definition(
            "Response",
            "A reduction from baseline of at least the scale's response percentage: "
            f"{_per_scale(s, 'response_pct')}. Undefined when the baseline is 0.",
            "100 × (baseline − endpoint) ÷ baseline ≥ response %",
            scale_sources,
        ),
        Definition(
            "Remission",
            f"An endpoint below the remission threshold: {_per_scale(s, 'remission_below')}.",
            "endpoint < remission threshold",
            scale_sources,
        ),
        Definition(
            "Reliable improvement",
            "A fall of at least the reliable change index (RC), more than measurement error alone would "
            f"explain: {_per_scale(s, 'reliable_change')}. The defaults are the published rounded values of "
            f"the Jacobson–Truax index {rc}, where SD₁ is the baseline standard deviation and r the "
            "test–retest reliability.",
            f"change ≤ −RC; {rc}",
            reg.RELIABLE_CHANGE_SOURCE,
        ),
        Definition(
            "Reliable deterioration",
            f"A rise of at least the reliable change index: {_per_scale(s, 'reliable_change')}.",
            "change ≥ +RC",
            reg.RELIABLE_CHANGE_SOURCE,
        ),
        Definition(
            "Clinical range (caseness)",
            f"A total at or above the scale's cutoff: {_per_scale(s, 'caseness')} "
            "(for the PCL-5: probable PTSD; 31–33 in the literature).",
            "total ≥ cutoff",
            scale_sources,
        ),
        Definition(
            "Recovery",
            "Baseline in the clinical range and endpoint below it.",
            "baseline ≥ cutoff and endpoint < cutoff",
            NHS_TT_SOURCE,
        ),
        Definition(
            "Reliable recovery",
            "Recovery and reliable improvement together.",
            "recovery and change ≤ −RC",
            NHS_TT_SOURCE,
        ),
    ]


def cohort_definitions(settings: Settings | None = None) -> list[Definition]:
    """How clinic-level numbers are built: completers, intention-to-treat, intervals, small groups."""
    s = settings or defaults()
    min_cell = s.general["min_cell"]
    return [
        Definition(
            "Completers",
            "At a phase: the patients with a baseline and a score of the scale in that phase.",
            "baseline present and endpoint present",
        ),
        Definition(
            "Intention-to-treat (ITT)",
            "Every patient with a baseline who had at least one dosing session. A missing endpoint carries "
            "the last observation forward, the baseline included, so no data after baseline counts as no "
            "response.",
            "endpoint = the phase's, else the last earlier phase's, else the baseline",
        ),
        Definition(
            "Rates",
            "Each rate is shown as k of n patients with a Wilson 95% score interval.",
            "(p + z²/2n ± z √(p(1 − p)/n + z²/4n²)) ÷ (1 + z²/n), z = 1.96",
            WILSON_SOURCE,
        ),
        Definition(
            "Means",
            "Each mean is shown with a 95% Student-t interval.",
            "mean ± t(0.975, n − 1) × SD ÷ √n",
        ),
        Definition(
            "Small groups",
            f"A figure built from fewer than {min_cell} patients (min_cell, a setting) is suppressed in "
            "research views and exports and marked in the director's views.",
            f"n < {min_cell} → suppressed",
        ),
    ]


def flag_definitions(settings: Settings | None = None) -> list[Definition]:
    """What raises a flag on a patient (the clinician's caseload), with the settings in force."""
    s = settings or defaults()
    g = s.general
    safety = "; ".join(f"{i.code} {_safety(i)}" for i in reg.INSTRUMENTS if i.safety_items)
    return [
        Definition(
            "Safety",
            f"{safety}, at the latest questionnaire of that scale. Always ranked first.",
            "safety item > 0",
            "; ".join(
                short_citation(src) for i in reg.INSTRUMENTS if i.safety_items for src in i.sources[:1]
            ),
        ),
        Definition(
            "Reliable deterioration",
            "Reliable deterioration at the latest score on any scale.",
            "change ≥ +RC",
            reg.RELIABLE_CHANGE_SOURCE,
        ),
        Definition(
            "Overdue assessment",
            f"In dosing or integration and no questionnaire for more than {g['overdue_days']} days "
            "(overdue_days, a setting).",
            f"days since the last questionnaire > {g['overdue_days']}",
        ),
        Definition(
            "Blood pressure",
            f"A reading before or after a dose above {g['bp_sys_threshold']} mmHg systolic or "
            f"{g['bp_dia_threshold']} mmHg diastolic (settings) is highlighted.",
            f"systolic > {g['bp_sys_threshold']} or diastolic > {g['bp_dia_threshold']}",
        ),
    ]


def pcl5_diagnosis() -> Definition:
    """The provisional DSM-5 PTSD rule over the PCL-5 clusters (from the registry)."""
    subscales = reg.PCL5.subscales
    clusters = ", ".join(f"{c} = items {items[0]}–{items[-1]}" for c, items in subscales.items())
    need = ", ".join(f"{n} {c}" for c, n in reg.PCL5_DSM5_RULE.items())
    return Definition(
        "PCL-5 clusters and provisional PTSD diagnosis",
        f"Cluster subscores when the items are present: {clusters}. A provisional DSM-5 diagnosis needs "
        f"items scored ≥ {reg.PCL5_DSM5_ITEM_THRESHOLD} in at least {need}.",
        "cluster score = sum of its items",
        "National Center for PTSD",
    )


def benchmark_table() -> pd.DataFrame:
    """Published results of other studies (not this clinic's patients), with citations."""
    return pd.DataFrame(
        {
            "study": [b.study for b in BENCHMARKS],
            "treatment": [b.treatment for b in BENCHMARKS],
            "scale": [b.instrument for b in BENCHMARKS],
            "response": [f"{b.response_pct:.1f}%" for b in BENCHMARKS],
            "remission": [f"{b.remission_pct:.1f}%" for b in BENCHMARKS],
        }
    )


def _md_table(frame: pd.DataFrame) -> str:
    def cell(v: object) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *rows])


def _md_definitions(items: list[Definition]) -> str:
    lines = []
    for d in items:
        text = f"- **{d.term}**: {d.meaning}"
        if d.formula:
            text += f" `{d.formula}`"
        if d.source:
            text += f" Source: {d.source}"
        lines.append(text)
    return "\n".join(lines)


def markdown(settings: Settings | None = None) -> str:
    """The whole definitions page as one Markdown document (what the page offers for download)."""
    s = settings or defaults()
    parts = [
        "# KAP Outcomes: definitions in force",
        "Generated from the scale registry and this database's settings"
        + (f" (last changed {s.changed_at})." if s.changed_at else "."),
        "## Phases",
        _md_definitions(phase_rules(s)),
        "## Scales",
        _md_table(registry_table(s)),
    ]
    for inst in reg.INSTRUMENTS:
        parts += [f"### {inst.code} items", _md_table(item_table(inst)), f"Sources for the {inst.code}:"]
        parts.append("\n".join(f"- {src}" for src in inst.sources))
    parts += [
        "## Outcome measures (per patient)",
        _md_definitions(metric_definitions(s)),
        _md_definitions([pcl5_diagnosis()]),
        "## Clinic-level numbers",
        _md_definitions(cohort_definitions(s)),
        "## Flags",
        _md_definitions(flag_definitions(s)),
        "## Published results from other studies",
        "Other studies' patients, for comparison only; not this clinic's data.",
        _md_table(benchmark_table()),
        "\n".join(f"- {c}" for c in dict.fromkeys(b.citation for b in BENCHMARKS)),
    ]
    return "\n\n".join(parts) + "\n"
