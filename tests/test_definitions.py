"""The definitions (kapdata.definitions) are generated from the registry and the settings in force."""

from __future__ import annotations

from pathlib import Path

import pytest

from kapdata import definitions as defs
from kapdata import instruments as reg
from kapdata import settings as ks


@pytest.mark.parametrize("inst", reg.INSTRUMENTS, ids=lambda i: i.code)
def test_every_registry_entry_appears_in_the_definitions(inst: reg.Instrument) -> None:
    text = defs.markdown()
    must = [
        inst.code,
        inst.title,
        inst.construct,
        f"{inst.n_items} × {inst.item_min}–{inst.item_max}",
        f"{inst.total_min}–{inst.total_max}",
        f"total ≥ {inst.caseness}",
        f"≥ {inst.response_pct}% reduction from baseline",
        f"endpoint < {inst.remission_below}",
        f"{inst.reliable_change} points",
        inst.loinc_panel,
        inst.loinc_total,
        *inst.loinc_items.values(),
        *inst.item_labels,
        *inst.sources,
        *(f"{b.low}–{b.high} {b.label}" for b in inst.bands),
        *(f"item {n} ({inst.item_labels[n - 1].lower()}" for n in inst.safety_items),
        *(f"{name} items {items[0]}–{items[-1]}" for name, items in inst.subscales.items()),
    ]
    missing = [m for m in must if m not in text]
    assert missing == []


def test_registry_table_has_a_column_per_scale_with_its_values() -> None:
    table = defs.registry_table().set_index("")
    assert list(table.columns) == list(reg.BY_CODE)
    assert list(table.index) == list(defs.REGISTRY_ROWS)
    assert table.loc["Items × range", "PCL-5"] == "20 × 0–4"
    assert table.loc["Total range", "GAD-7"] == "0–21"
    assert table.loc["Severity bands", "GAD-7"] == "0–4 minimal; 5–9 mild; 10–14 moderate; 15–21 severe"
    assert table.loc["Severity bands", "PCL-5"].startswith("none validated")
    assert table.loc["Clinical range", "PHQ-9"] == "total ≥ 10"
    assert table.loc["Clinical range", "PCL-5"] == "total ≥ 33 (probable PTSD)"
    assert table.loc["Response", "PCL-5"] == "≥ 30% reduction from baseline"
    assert table.loc["Remission", "PHQ-9"] == "endpoint < 5"
    assert table.loc["Reliable change", "GAD-7"] == "4 points"
    assert (
        table.loc["Safety", "PHQ-9"] == "item 9 (thoughts of self-harm, LOINC 44260-8) > 0 flags the patient"
    )
    assert table.loc["Safety", "GAD-7"] == "—"
    assert table.loc["LOINC panel", "PCL-5"] == "101697-1"
    assert table.loc["LOINC total", "PHQ-9"] == "44261-6"
    assert table.loc["Sources", "PHQ-9"] == "Kroenke 2001; Löwe 2004"


def test_item_table_lists_each_item_with_its_loinc_code() -> None:
    items = defs.item_table(reg.PHQ9)
    assert len(items) == 9
    assert items.iloc[8].to_dict() == {
        "item": "item_9",
        "asks about": "Thoughts of self-harm",
        "answers": "0–3",
        "LOINC": "44260-8",
        "safety item": "yes",
    }
    assert list(defs.item_table(reg.PCL5)["LOINC"].unique()) == ["—"]


def test_thresholds_in_force_show_with_their_default() -> None:
    current = ks.defaults()
    current.thresholds["PHQ-9"]["response_pct"] = 40
    current.general["integration_window_days"] = 60
    table = defs.registry_table(current).set_index("")
    assert table.loc["Response", "PHQ-9"] == (
        "≥ 40% reduction from baseline (changed; default ≥ 50% reduction from baseline)"
    )
    assert table.loc["Response", "GAD-7"] == "≥ 50% reduction from baseline"
    text = defs.markdown(current)
    assert "PHQ-9 ≥ 40% reduction from baseline" in text
    assert "Up to 60 days after the last dosing session (changed; default 84 days)" in text
    assert "last session < assessed_on ≤ last session + 60 days" in text


def test_phase_rules_follow_design_order_with_the_window_in_force() -> None:
    rules = defs.phase_rules()
    assert [r.term for r in rules] == ["preparation", "dosing", "integration", "follow-up", "explicit phase"]
    assert rules[2].formula == "last session < assessed_on ≤ last session + 84 days"
    assert rules[3].meaning == "More than 84 days after the last dosing session."


def test_reliable_change_formula_and_source_come_from_the_registry() -> None:
    rc = next(d for d in defs.metric_definitions() if d.term == "Reliable improvement")
    assert reg.RELIABLE_CHANGE_FORMULA in rc.formula
    assert rc.source == reg.RELIABLE_CHANGE_SOURCE
    assert "PHQ-9 6 points, GAD-7 4 points, PCL-5 10 points" in rc.meaning


def test_cohort_and_flag_definitions_use_the_settings_in_force() -> None:
    current = ks.defaults()
    current.general.update(min_cell=5, overdue_days=21, bp_sys_threshold=150, bp_dia_threshold=95)
    small = next(d for d in defs.cohort_definitions(current) if d.term == "Small groups")
    assert small.formula == "n < 5 → suppressed"
    flags = {d.term: d for d in defs.flag_definitions(current)}
    assert flags["Overdue assessment"].formula == "days since the last questionnaire > 21"
    assert flags["Blood pressure"].formula == "systolic > 150 or diastolic > 95"
    terms = [d.term for d in defs.cohort_definitions()]
    assert terms == ["Completers", "Intention-to-treat (ITT)", "Rates", "Means", "Small groups"]


def test_benchmarks_are_the_published_rows_labelled_as_other_studies() -> None:
    table = defs.benchmark_table()
    assert table.to_dict("records") == [
        {
            "study": "McInnes et al. 2022",
            "treatment": "IV ketamine, 9,016 patients across 178 practices",
            "scale": "PHQ-9",
            "response": "53.6%",
            "remission": "28.9%",
        },
        {
            "study": "Hull et al. 2022",
            "treatment": "At-home sublingual KAP, 4 sessions",
            "scale": "PHQ-9",
            "response": "62.8%",
            "remission": "32.6%",
        },
        {
            "study": "Hull et al. 2022",
            "treatment": "At-home sublingual KAP, 4 sessions",
            "scale": "GAD-7",
            "response": "62.9%",
            "remission": "31.3%",
        },
    ]
    assert "Other studies' patients, for comparison only" in defs.markdown()


def test_pcl5_diagnosis_rule_comes_from_the_registry() -> None:
    d = defs.pcl5_diagnosis()
    assert "B = items 1–5, C = items 6–7, D = items 8–14, E = items 15–20" in d.meaning
    assert "items scored ≥ 2 in at least 1 B, 1 C, 2 D, 2 E" in d.meaning


@pytest.mark.parametrize(
    ("source", "short"),
    [
        ("Kroenke K, Spitzer RL, Williams JB. The PHQ-9. J Gen Intern Med 2001;16:606-13.", "Kroenke 2001"),
        ("National Center for PTSD. Using the PTSD Checklist for DSM-5 (PCL-5).", "National Center for PTSD"),
    ],
)
def test_short_citation_is_first_author_and_year(source: str, short: str) -> None:
    assert defs.short_citation(source) == short


def test_definitions_of_a_database_show_its_settings(base_db: Path) -> None:
    ks.update(base_db, thresholds={"GAD-7": {"reliable_change": 5}})
    table = defs.registry_table(ks.load(base_db)).set_index("")
    assert table.loc["Reliable change", "GAD-7"] == "5 points (changed; default 4 points)"
