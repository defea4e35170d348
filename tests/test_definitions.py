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
    assert table.loc["Safety", "PHQ-9"] == (
        "item 9 (thoughts that you would be better off dead, or of hurting yourself, LOINC 44260-8) > 0 "
        "flags the patient"
    )
    assert table.loc["Safety", "GAD-7"] == "—"
    assert table.loc["LOINC panel", "PCL-5"] == "101697-1"
    assert table.loc["LOINC total", "PHQ-9"] == "44261-6"
    assert table.loc["Sources", "PHQ-9"] == (
        "Kroenke 2001; Löwe 2004; NHS Talking Therapies for anxiety and depression"
    )
    assert table.loc["Sources", "PCL-5"] == "Blevins 2015; Bovin 2016; National Center for PTSD; Marx 2022"


def test_item_table_lists_each_item_with_its_loinc_code() -> None:
    items = defs.item_table(reg.PHQ9)
    assert len(items) == 9
    assert items.iloc[8].to_dict() == {
        "item": "item_9",
        "asks about": "Thoughts that you would be better off dead, or of hurting yourself",
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


def test_reliable_change_says_the_defaults_are_published_values_not_derived_indices() -> None:
    rc = next(d for d in defs.metric_definitions() if d.term == "Reliable improvement")
    assert reg.RELIABLE_CHANGE_FORMULA in rc.formula
    assert reg.RELIABLE_CHANGE_SOURCE in rc.source
    assert "PHQ-9 6 points, GAD-7 4 points, PCL-5 10 points" in rc.meaning
    assert "not indices computed from this clinic's data" in rc.meaning
    assert "PHQ-9 6 and GAD-7 4 are NHS Talking Therapies' reliable-improvement values" in rc.meaning
    assert "top of the National Center for PTSD's 5–10 point range" in rc.meaning
    assert "PCL-5 index of 15–18 points" in rc.meaning
    # The old text credited the defaults to Jacobson and Truax.
    assert "published rounded values of the Jacobson–Truax index" not in defs.markdown()


def test_cohort_and_flag_definitions_use_the_settings_in_force() -> None:
    current = ks.defaults()
    current.general.update(min_cell=5, overdue_days=21, bp_sys_threshold=150, bp_dia_threshold=95)
    small = next(d for d in defs.cohort_definitions(current) if d.term == "Small groups")
    assert small.formula == "n < 5 → suppressed"
    flags = {d.term: d for d in defs.flag_definitions(current)}
    assert flags["Overdue assessment"].formula == "days since the last questionnaire > 21"
    assert flags["Blood pressure"].formula == "systolic > 150 or diastolic > 95"
    assert flags["Overdue assessment"].meaning.startswith(
        "In dosing or integration and no questionnaire for more than 21 days (changed; default 28 days)"
    )
    assert "above 150 mmHg (changed; default 160 mmHg) systolic" in flags["Blood pressure"].meaning
    terms = [d.term for d in defs.cohort_definitions()]
    assert terms == [
        "Completers",
        "Intention-to-treat (ITT)",
        "Dosing complete",
        "Rates",
        "Means",
        "Small groups",
    ]


def test_benchmarks_name_the_n_their_rates_are_on_and_their_endpoint() -> None:
    table = defs.benchmark_table()
    assert table[["study", "scale", "endpoint", "response", "remission"]].to_dict("records") == [
        {
            "study": "McInnes et al. 2022",
            "scale": "PHQ-9",
            "endpoint": "14–31 days after induction",
            "response": "53.6%",
            "remission": "28.9%",
        },
        {
            "study": "Hull et al. 2022",
            "scale": "PHQ-9",
            "endpoint": "after the 4th session",
            "response": "62.8%",
            "remission": "32.6%",
        },
        {
            "study": "Hull et al. 2022",
            "scale": "GAD-7",
            "endpoint": "after the 4th session",
            "response": "62.9%",
            "remission": "31.3%",
        },
    ]
    mcinnes = table.iloc[0]
    # The 9,016 are the records; the rates are on the 537 analysed after induction.
    assert mcinnes["rates are on"].startswith("537 patients")
    assert "out of 9,016 patients in the records; the rates are on the 537" in mcinnes["rates are on"]
    assert "9,016" not in mcinnes["treatment"]
    assert mcinnes["remission is among"].startswith("all 537 analysed patients")
    assert table.iloc[1]["remission is among"].startswith("patients with a baseline ≥ 10 on that scale")
    text = defs.markdown()
    assert "Other studies' patients, for comparison only" in text
    assert "doi:10.1016/j.jad.2021.12.097" in text and "doi:10.1016/j.jad.2022.07.004" in text


def test_pcl5_diagnosis_rule_comes_from_the_registry() -> None:
    d = defs.pcl5_diagnosis()
    assert "B = items 1–5, C = items 6–7, D = items 8–14, E = items 15–20" in d.meaning
    assert "items scored ≥ 2 in at least 1 B, 1 C, 2 D, 2 E" in d.meaning


@pytest.mark.parametrize(
    ("source", "short"),
    [
        ("Kroenke K, Spitzer RL, Williams JB. The PHQ-9. J Gen Intern Med 2001;16:606-13.", "Kroenke 2001"),
        ("National Center for PTSD. Using the PTSD Checklist for DSM-5 (PCL-5).", "National Center for PTSD"),
        (reg.NHS_TALKING_THERAPIES, "NHS Talking Therapies for anxiety and depression"),
        (reg.MARX_2022, "Marx 2022"),
    ],
)
def test_short_citation_is_first_author_and_year(source: str, short: str) -> None:
    assert defs.short_citation(source) == short


def test_definitions_of_a_database_show_its_settings(base_db: Path) -> None:
    ks.update(base_db, thresholds={"GAD-7": {"reliable_change": 5}})
    table = defs.registry_table(ks.load(base_db)).set_index("")
    assert table.loc["Reliable change", "GAD-7"] == "5 points (changed; default 4 points)"


THRESHOLD_CASES = [(i, key) for i in reg.INSTRUMENTS for key in reg.THRESHOLD_KEYS]


@pytest.mark.parametrize(("inst", "key"), THRESHOLD_CASES, ids=lambda v: getattr(v, "code", v))
def test_every_threshold_names_a_listed_source_or_says_it_is_a_convention(
    inst: reg.Instrument, key: str
) -> None:
    source = inst.threshold_sources.get(key, "")
    assert source, f"{inst.code} {key} has no source"
    cited = [defs.short_citation(s) for s in inst.sources if defs.short_citation(s) in source]
    assert cited or source.startswith(reg.CONVENTION), f"{inst.code} {key}: {source!r} cites nothing listed"


def test_threshold_sources_are_registry_data_for_exactly_the_thresholds() -> None:
    for inst in reg.INSTRUMENTS:
        assert set(inst.threshold_sources) == set(reg.THRESHOLD_KEYS), inst.code


def test_each_threshold_source_says_where_the_number_comes_from() -> None:
    src = {(i.code, k): i.threshold_sources[k] for i in reg.INSTRUMENTS for k in reg.THRESHOLD_KEYS}
    assert src["PHQ-9", "reliable_change"].startswith(
        "NHS Talking Therapies for anxiety and depression: reliable improvement (6 points)"
    )
    assert src["GAD-7", "reliable_change"].startswith(
        "NHS Talking Therapies for anxiety and depression: reliable improvement (4 points)"
    )
    assert src["GAD-7", "caseness"].startswith(
        "NHS Talking Therapies for anxiety and depression: caseness (GAD-7 ≥ 8)"
    )
    assert "Spitzer 2006's line at 10" in src["GAD-7", "caseness"]
    assert "5–10 point change is reliable" in src["PCL-5", "reliable_change"]
    assert "10 is the top of that range" in src["PCL-5", "reliable_change"]
    assert "Marx 2022 report a PCL-5 reliable change index of 15–18 points" in src["PCL-5", "reliable_change"]
    assert src["PCL-5", "response_pct"].startswith(reg.CONVENTION)
    assert src["PCL-5", "remission_below"].startswith(reg.CONVENTION)
    assert "31–33" in src["PCL-5", "caseness"]


def test_threshold_sources_table_lists_every_source_with_the_rule_in_force() -> None:
    current = ks.defaults()
    current.thresholds["PCL-5"]["reliable_change"] = 15
    table = defs.threshold_sources_table(current)
    assert len(table) == len(reg.INSTRUMENTS) * len(reg.THRESHOLD_KEYS)
    row = table[(table["scale"] == "PCL-5") & (table["threshold"] == "Reliable change")].iloc[0]
    assert (row["in force"], row["default"]) == ("15 points", "10 points")
    assert row["source of the default"] == reg.PCL5.threshold_sources["reliable_change"]
    text = defs.markdown(current)
    for inst in reg.INSTRUMENTS:
        for source in inst.threshold_sources.values():
            assert source in text


def test_changed_general_settings_show_their_default() -> None:
    current = ks.defaults()
    current.general.update(baseline_max_days=60, dosing_complete_sessions=6, min_cell=5)
    metric = {d.term: d for d in defs.metric_definitions(current)}
    assert "no more than 60 days before the first dose (changed; default 90 days before the first dose)" in (
        metric["Baseline"].meaning
    )
    cohort_defs = {d.term: d for d in defs.cohort_definitions(current)}
    assert cohort_defs["Dosing complete"].meaning.startswith(
        "At least 6 sessions (changed; default 4 sessions)"
    )
    assert cohort_defs["Dosing complete"].formula == "dosing sessions ≥ 6"
    assert "fewer than 5 patients (changed; default 11 patients)" in cohort_defs["Small groups"].meaning
    table = defs.settings_table(current).set_index("key")
    assert table.loc["baseline_max_days", ["in force", "default", "changed"]].tolist() == [
        "60 days before the first dose",
        "90 days before the first dose",
        "changed",
    ]
    assert table.loc["integration_window_days", "changed"] == ""
    untouched = {d.term: d for d in defs.metric_definitions()}
    assert "no more than 90 days before the first dose (baseline_max_days" in untouched["Baseline"].meaning


def test_outcome_definitions_say_when_a_measure_is_undefined() -> None:
    metric = {d.term: d for d in defs.metric_definitions()}
    assert "Undefined unless the baseline is above 0" in metric["Response"].meaning
    assert "Undefined unless the baseline is in the clinical range" in metric["Remission"].meaning
    assert "Undefined when the baseline is below the clinical range or missing" in metric["Recovery"].meaning
    assert (
        "PHQ-9 10 and GAD-7 8 are NHS Talking Therapies' caseness"
        in metric["Clinical range (caseness)"].meaning
    )
    joint = metric["Joint recovery (NHS Talking Therapies)"]
    assert "a case on PHQ-9 or GAD-7 at baseline" in joint.meaning
    assert "a case on neither at the endpoint" in joint.meaning
    assert joint.formula == (
        "(baseline PHQ-9 ≥ cutoff or baseline GAD-7 ≥ cutoff) and endpoint PHQ-9 < cutoff and endpoint "
        "GAD-7 < cutoff"
    )
    assert joint.source == reg.NHS_TALKING_THERAPIES
    prorated = metric["Prorated total"]
    assert (
        "at most 2 items unanswered" in prorated.meaning and "A PCL-5 is never prorated" in prorated.meaning
    )
    assert "Item 9 of the PHQ-9 (the safety item) is never filled in" in prorated.meaning


def test_itt_counts_only_patients_due_on_the_last_day() -> None:
    current = ks.defaults()
    current.general["integration_window_days"] = 56
    itt = next(d for d in defs.cohort_definitions(current) if d.term == "Intention-to-treat (ITT)")
    assert "due for that endpoint on the data's last day" in itt.meaning
    assert "end of integration once no session in the last 14 days" in itt.meaning
    assert "the integration window (56 days (changed; default 84 days)) after the last session" in itt.meaning


def test_safety_blood_pressure_and_dissociation_name_their_sources() -> None:
    flags = {d.term: d for d in defs.flag_definitions()}
    safety = flags["Safety"]
    assert safety.meaning.startswith(
        "PHQ-9 item 9 (thoughts that you would be better off dead, or of hurting yourself) answered above 0"
    )
    assert "complete a risk assessment" in safety.meaning
    assert "unknown never clears a flag" in safety.meaning
    assert flags["Blood pressure"].source.startswith("this product's convention: no citable guidance")
    (cadss,) = defs.session_definitions()
    assert cadss.term == "Dissociation (CADSS-6)"
    assert "CADSS-6 total (0–24" in cadss.meaning
    assert cadss.source.startswith("Rodrigues NB") and "J Affect Disord 2021;282:160-4." in cadss.source
    assert "## Dosing sessions" in defs.markdown()
