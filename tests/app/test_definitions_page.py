"""The definitions page (AppTest): generated from the registry and the settings in force."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from kapdata import definitions as defs
from kapdata import ingest, sample
from kapdata import instruments as reg
from kapdata import settings as ks

from .conftest import ROOT


def definitions_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/definitions.py").run()
    assert not at.exception, at.exception
    return at


def page_text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [t.value.to_csv() for t in at.table] + [d.value.to_csv() for d in at.dataframe]
    return "\n".join(parts)


def test_every_registry_entry_appears_on_the_page(app_env: Path) -> None:
    at = definitions_page()
    scales = at.table[0].value
    assert list(scales.columns) == list(reg.BY_CODE)
    text = page_text(at)
    for inst in reg.INSTRUMENTS:
        for needle in (
            inst.title,
            inst.loinc_panel,
            inst.loinc_total,
            *inst.loinc_items.values(),
            *inst.item_labels,
            *inst.sources,
            *inst.threshold_sources.values(),
            *(f"{b.low}–{b.high} {b.label}" for b in inst.bands),
        ):
            assert needle in text, f"{inst.code}: {needle!r} is not on the page"


def test_page_shows_phase_rules_formula_and_benchmarks(app_env: Path) -> None:
    at = definitions_page()
    text = page_text(at)
    assert reg.RELIABLE_CHANGE_FORMULA in text
    assert reg.RELIABLE_CHANGE_SOURCE in text
    assert defs.CADSS6_SOURCE in text and defs.BP_SOURCE in text and defs.PRORATING_SOURCE in text
    assert "**Joint recovery (NHS Talking Therapies).**" in text
    assert "**integration.** Up to 84 days after the last dosing session" in text
    assert "Intention-to-treat (ITT)" in text and "Wilson 95% score interval" in text
    benchmarks = at.table[1].value
    assert list(benchmarks.index) == ["McInnes et al. 2022", "Hull et al. 2022", "Hull et al. 2022"]
    assert benchmarks["response"].tolist() == ["53.6%", "62.8%", "62.9%"]
    assert benchmarks["endpoint"].tolist()[:2] == ["14–31 days after induction", "after the 4th session"]
    assert benchmarks["rates are on"].iloc[0].startswith("537 patients")
    assert any(c.value.startswith("Other studies' patients, for comparison only") for c in at.caption)
    assert any(c.value.endswith("doi:10.1016/j.jad.2021.12.097") for c in at.caption)
    assert at.download_button[0].label == "Download these definitions (Markdown)"


def test_page_shows_a_changed_threshold_with_its_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "kap.duckdb"
    ingest.load_files(sample.write_sample(20, tmp_path / "csv", seed=1), path)
    ks.update(
        path,
        general={"integration_window_days": 56, "baseline_max_days": 60, "dosing_complete_sessions": 6},
        thresholds={"PCL-5": {"response_pct": 40}},
    )
    monkeypatch.setenv("KAP_DB", str(path))
    monkeypatch.chdir(ROOT)
    at = definitions_page()
    scales = at.table[0].value
    assert scales.loc["Response", "PCL-5"] == (
        "≥ 40% reduction from baseline (changed; default ≥ 30% reduction from baseline)"
    )
    text = page_text(at)
    assert "Up to 56 days after the last dosing session (changed; default 84 days)" in text
    assert (
        "no more than 60 days before the first dose (changed; default 90 days before the first dose)" in text
    )
    assert "**Dosing complete.** At least 6 sessions (changed; default 4 sessions)" in text
    settings = next(d.value for d in at.dataframe if "setting" in d.value.columns).set_index("setting")
    assert settings.loc["Baseline at most", ["in force", "default", "changed"]].tolist() == [
        "60 days before the first dose",
        "90 days before the first dose",
        "changed",
    ]
    assert settings.loc["Integration window", "changed"] == "changed"
    assert settings.loc["Smallest reportable group", "changed"] == ""
    sources = next(d.value for d in at.dataframe if "source of the default" in d.value.columns)
    pcl5_response = sources[(sources["scale"] == "PCL-5") & (sources["threshold"] == "Response")].iloc[0]
    assert (pcl5_response["in force"], pcl5_response["default"]) == (
        "≥ 40% reduction from baseline",
        "≥ 30% reduction from baseline",
    )
    assert defs.registry_table(ks.load(path)).set_index("").equals(scales)
