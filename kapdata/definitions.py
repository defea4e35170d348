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

from kapdata import benchmarks as bm
from kapdata import db, phases
from kapdata import instruments as reg
from kapdata.settings import GENERAL, GENERAL_BY_KEY, THRESHOLDS_BY_KEY, Settings, defaults


@dataclass(frozen=True)
class Definition:
    term: str
    meaning: str  # plain words
    formula: str = ""
    source: str = ""


WILSON_SOURCE = (
    "Wilson EB. Probable inference, the law of succession, and statistical inference. J Am Stat Assoc "
    "1927;22:209-12. Newcombe RG. Two-sided confidence intervals for the single proportion. Stat Med 1998."
)
NHS_TT_SOURCE = reg.NHS_TALKING_THERAPIES
PRORATING_SOURCE = (
    "NHS Data Dictionary and NHS Talking Therapies: PHQ-9 and GAD-7 scoring with up to two items missing; "
    "Arrieta J, et al. J Clin Psychol 2017 (doi:10.1002/jclp.22390)."
)
CADSS6_SOURCE = (
    "Rodrigues NB, McIntyre RS, Lipsitz O, et al. A simplified 6-item clinician administered dissociative "
    "symptom scale (CADSS-6) for monitoring dissociative effects of sub-anesthetic ketamine infusions. "
    "J Affect Disord 2021;282:160-4."
)
#: The blood-pressure flag: no ketamine-session guidance the product could cite gives 160/100 mmHg.
BP_SOURCE = (
    f"{reg.CONVENTION}: no citable guidance for ketamine sessions gives these numbers; set them to the "
    "clinic's own protocol on the Settings page"
)
#: The wording of the PHQ-9 safety line (also for the clinic page's safety panel).
SAFETY_ITEM_TEXT = (
    "PHQ-9 item 9 (thoughts that you would be better off dead, or of hurting yourself) answered above 0"
)
#: The dissociation line of the safety panel and its definition.
DISSOCIATION_TEXT = (
    "Dissociation during a dosing session, recorded as the CADSS-6 total (0–24: six items of the "
    "Clinician-Administered Dissociative States Scale, each 0–4), as the clinic enters it in the sessions "
    "file"
)


def short_citation(source: str) -> str:
    """``"Kroenke K, ... 2001;16:606-13."`` → ``"Kroenke 2001"``; no year → up to the first full stop or
    colon (``"NHS Talking Therapies for anxiety and depression"``)."""
    year = re.search(r"\b(19|20)\d{2}\b", source)
    if not year:
        return source.split(".")[0].split(":")[0]
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


def _general(settings: Settings, key: str) -> str:
    """A general setting in force with its unit, and its default beside it when changed: ``90 days``,
    ``60 days (changed; default 90 days)``."""
    spec = GENERAL_BY_KEY[key]
    value = int(settings.general[key])
    default = int(db.DEFAULT_SETTINGS[key])
    text = f"{value} {spec.unit}"
    return text if value == default else f"{text} (changed; default {default} {spec.unit})"


#: The thresholds' names in the table of their sources.
THRESHOLD_NAMES: dict[str, str] = {
    "caseness": "Clinical range (caseness)",
    "response_pct": "Response",
    "remission_below": "Remission",
    "reliable_change": "Reliable change",
}


def threshold_sources_table(settings: Settings | None = None) -> pd.DataFrame:
    """Where each threshold comes from: a row per scale × threshold with the rule in force, its default and
    the source (a publication of the scale's sources, or this product's convention)."""
    s = settings or defaults()
    rows = []
    for inst in reg.INSTRUMENTS:
        for key in reg.THRESHOLD_KEYS:
            spec = THRESHOLDS_BY_KEY[key]
            rows.append(
                {
                    "scale": inst.code,
                    "threshold": THRESHOLD_NAMES[key],
                    "in force": spec.describe(s.thresholds[inst.code][key]),
                    "default": spec.describe(int(getattr(inst, key))),
                    "source of the default": inst.threshold_sources.get(key, ""),
                }
            )
    return pd.DataFrame(rows)


def settings_table(settings: Settings | None = None) -> pd.DataFrame:
    """The general settings in force beside their defaults (a changed one says so)."""
    s = settings or defaults()
    return pd.DataFrame(
        {
            "setting": [spec.label for spec in GENERAL],
            "key": [spec.key for spec in GENERAL],
            "in force": [f"{int(s.general[spec.key])} {spec.unit}" for spec in GENERAL],
            "default": [f"{int(db.DEFAULT_SETTINGS[spec.key])} {spec.unit}" for spec in GENERAL],
            "changed": [
                "changed" if int(s.general[spec.key]) != int(db.DEFAULT_SETTINGS[spec.key]) else ""
                for spec in GENERAL
            ],
            "what it does": [spec.help for spec in GENERAL],
        }
    )


def metric_definitions(settings: Settings | None = None) -> list[Definition]:
    """Per-patient outcome measures (DESIGN §5) with the thresholds in force."""
    s = settings or defaults()
    scale_sources = "each threshold's source (the table of threshold sources)"
    rc = reg.RELIABLE_CHANGE_FORMULA
    joint = " and ".join(reg.JOINT_RECOVERY_SCALES)
    return [
        Definition(
            "Baseline",
            "The last score of the scale in preparation, taken no more than "
            f"{_general(s, 'baseline_max_days')} (baseline_max_days, a setting); an older preparation score "
            "is not a baseline. Without a baseline no change is computed; the patient is counted as having "
            "no baseline, never silently dropped.",
            "baseline = last preparation score with first dose − assessed_on ≤ baseline_max_days",
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
            "Prorated total",
            "A PHQ-9 or GAD-7 with at most 2 items unanswered gets a prorated total: the mean of the "
            "answered items times the number of items, rounded to the nearest whole number. Item 9 of the "
            "PHQ-9 (the safety item) is never filled in, so an unanswered item 9 leaves the safety flag "
            "unknown. A PCL-5 is never prorated. Outcomes built on a prorated score say so "
            "(baseline_prorated, endpoint_prorated).",
            "prorated total = round(mean of answered items × number of items), when ≤ 2 are missing",
            PRORATING_SOURCE,
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
            f"{_per_scale(s, 'response_pct')}. Undefined unless the baseline is above 0.",
            "100 × (baseline − endpoint) ÷ baseline ≥ response %",
            scale_sources,
        ),
        Definition(
            "Remission",
            f"An endpoint below the remission threshold: {_per_scale(s, 'remission_below')}. Undefined "
            "unless the baseline is in the clinical range (a patient who started below it cannot remit), "
            "and when there is no baseline.",
            "baseline ≥ cutoff and endpoint < remission threshold",
            scale_sources,
        ),
        Definition(
            "Reliable improvement",
            "A fall of at least the reliable change (RC), more than measurement error alone would explain: "
            f"{_per_scale(s, 'reliable_change')}. The defaults are published values, not indices computed "
            "from this clinic's data: PHQ-9 6 and GAD-7 4 are NHS Talking Therapies' reliable-improvement "
            "values; PCL-5 10 is the top of the National Center for PTSD's 5–10 point range (Marx et al. "
            "2022 report a PCL-5 index of 15–18 points in veterans). The idea is Jacobson and Truax's "
            f"reliable change index, {rc}, where SD₁ is the baseline standard deviation and r the "
            "test–retest reliability.",
            f"change ≤ −RC; {rc}",
            f"{scale_sources}; {reg.RELIABLE_CHANGE_SOURCE}",
        ),
        Definition(
            "Reliable deterioration",
            f"A rise of at least the reliable change: {_per_scale(s, 'reliable_change')}.",
            "change ≥ +RC",
            scale_sources,
        ),
        Definition(
            "Clinical range (caseness)",
            f"A total at or above the scale's cutoff: {_per_scale(s, 'caseness')}. PHQ-9 10 and GAD-7 8 are "
            "NHS Talking Therapies' caseness (the GAD-7 severity bands keep the moderate line at 10, Spitzer "
            "2006); for the PCL-5, probable PTSD (31–33 in the literature, National Center for PTSD).",
            "total ≥ cutoff",
            scale_sources,
        ),
        Definition(
            "Recovery",
            "Per scale: baseline in the clinical range and endpoint below it. Undefined when the baseline is "
            "below the clinical range or missing, so its n counts only patients who started in the clinical "
            "range.",
            "baseline ≥ cutoff and endpoint < cutoff",
            NHS_TT_SOURCE,
        ),
        Definition(
            "Reliable recovery",
            "Recovery and reliable improvement together; undefined when recovery is.",
            "recovery and change ≤ −RC",
            NHS_TT_SOURCE,
        ),
        Definition(
            "Joint recovery (NHS Talking Therapies)",
            f"The NHS measure across {joint}, shown beside the per-scale recovery: a case on "
            f"{joint.replace(' and ', ' or ')} at baseline (either total at or above its cutoff), and a "
            "case on neither at the endpoint. It needs a baseline on both scales (and, for completers, an "
            "endpoint on both).",
            f"(baseline {reg.JOINT_RECOVERY_SCALES[0]} ≥ cutoff or baseline {reg.JOINT_RECOVERY_SCALES[1]} ≥ "
            f"cutoff) and endpoint {reg.JOINT_RECOVERY_SCALES[0]} < cutoff and endpoint "
            f"{reg.JOINT_RECOVERY_SCALES[1]} < cutoff",
            NHS_TT_SOURCE,
        ),
    ]


def cohort_definitions(settings: Settings | None = None) -> list[Definition]:
    """How clinic-level numbers are built: completers, intention-to-treat, intervals, small groups."""
    s = settings or defaults()
    min_cell = s.general["min_cell"]
    window = _general(s, "integration_window_days")
    return [
        Definition(
            "Completers",
            "At a phase: the patients with a baseline and a score of the scale in that phase.",
            "baseline present and endpoint present",
        ),
        Definition(
            "Intention-to-treat (ITT)",
            "The patients with a baseline who had at least one dosing session and are due for that endpoint "
            "on the data's last day (the newest date in the database): end of dosing and latest once dosed; "
            f"end of integration once no session in the last {phases.DOSING_ACTIVE_DAYS} days; follow-up "
            f"once the integration window ({window}) after the last session has passed; in any phase, once "
            "the patient has a score in it (every completer is in ITT). A patient not yet "
            "due is left out rather than counted as a non-responder. A missing endpoint carries the last "
            "observation forward, the baseline included, so no data after baseline counts as no response.",
            "due on the last day; endpoint = the phase's, else the last earlier phase's, else the baseline",
        ),
        Definition(
            "Dosing complete",
            f"At least {_general(s, 'dosing_complete_sessions')} (dosing_complete_sessions, a setting): a "
            "full induction course in the retention funnel.",
            f"dosing sessions ≥ {s.general['dosing_complete_sessions']}",
        ),
        Definition(
            "Rates",
            "Each rate is shown as k of n patients with a Wilson 95% score interval. n is the patients the "
            "rate is defined for: response needs a baseline above 0; remission, recovery and reliable "
            "recovery a baseline in the clinical range. So n can be smaller than the completers.",
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
            f"A figure built from fewer than {_general(s, 'min_cell')} (min_cell, a setting) is suppressed "
            "in research views and exports and marked in the director's views.",
            f"n < {min_cell} → suppressed",
        ),
    ]


def flag_definitions(settings: Settings | None = None) -> list[Definition]:
    """What raises a flag on a patient (the clinician's caseload), with the settings in force."""
    s = settings or defaults()
    g = s.general
    return [
        Definition(
            "Safety",
            f"{SAFETY_ITEM_TEXT} at the latest PHQ-9 flags the patient, always ranked first: the flag tells "
            "the clinician to complete a risk assessment. An unanswered item 9 is unknown, and unknown never "
            "clears a flag: it is shown as unknown, not as safe.",
            "item 9 > 0 → flag; item 9 missing → unknown",
            short_citation(reg.KROENKE_2001),
        ),
        Definition(
            "Reliable deterioration",
            "Reliable deterioration at the latest score on any scale.",
            "change ≥ +RC",
            "each threshold's source (the table of threshold sources)",
        ),
        Definition(
            "Overdue assessment",
            f"In dosing or integration and no questionnaire for more than {_general(s, 'overdue_days')} "
            "(overdue_days, a setting).",
            f"days since the last questionnaire > {g['overdue_days']}",
        ),
        Definition(
            "Blood pressure",
            f"A reading before or after a dose above {_general(s, 'bp_sys_threshold')} systolic or "
            f"{_general(s, 'bp_dia_threshold')} diastolic (settings) is highlighted.",
            f"systolic > {g['bp_sys_threshold']} or diastolic > {g['bp_dia_threshold']}",
            BP_SOURCE,
        ),
    ]


def session_definitions() -> list[Definition]:
    """What the dosing-session safety figures record."""
    return [
        Definition(
            "Dissociation (CADSS-6)",
            f"{DISSOCIATION_TEXT}; shown as the clinic's data, with no threshold of its own. The CADSS-6 "
            "uses items 1, 2, 6, 7, 15 and 22 of the 23-item CADSS.",
            "CADSS-6 total = sum of 6 items, 0–24",
            CADSS6_SOURCE,
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
    """Published results of other studies (not this clinic's patients) from :mod:`kapdata.benchmarks`, each
    with the patients its rates are on and its endpoint."""
    table = bm.published()
    return pd.DataFrame(
        {
            "study": table["study"],
            "treatment": table["treatment"],
            "scale": table["instrument"],
            "rates are on": table["population"],
            "endpoint": table["endpoint"],
            "response": [f"{100 * r:.1f}%" for r in table["response"]],
            "remission": [f"{100 * r:.1f}%" for r in table["remission"]],
            "remission is among": table["remission_denominator"],
        }
    )


def benchmark_citations() -> list[str]:
    """Each published study's full citation with its DOI, once."""
    return [f"{s.citation} doi:{s.doi}" for s in bm.STUDIES]


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
        "## Settings",
        _md_table(settings_table(s).drop(columns=["key"])),
        "## Phases",
        _md_definitions(phase_rules(s)),
        "## Scales",
        _md_table(registry_table(s)),
        "## Where each threshold comes from",
        _md_table(threshold_sources_table(s)),
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
        "## Dosing sessions",
        _md_definitions(session_definitions()),
        "## Published results from other studies",
        bm.COMPARISON_NOTE,
        _md_table(benchmark_table()),
        "\n".join(f"- {c}" for c in benchmark_citations()),
    ]
    return "\n\n".join(parts) + "\n"
