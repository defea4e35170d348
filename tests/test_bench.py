"""The benchmark harness runs end to end on a tiny cohort, so it cannot rot. No timings are asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_harness_runs_on_a_tiny_cohort_and_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            "bench/run.py",
            "--patients",
            "200",
            "--repeat",
            "1",
            "--cache",
            str(tmp_path / "cache"),
            "--out",
            str(out),
            "--no-app-rss",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    rows = doc["results"]["200"]["rows"]
    whole = ("cli load (whole process, new database)", "cli outcomes --out (whole process)")
    whole += ("peer: pandas outcomes script (whole process)", "cli export long parquet (whole process)")
    basic = ("generation", "load", "floor", "peer", "outcomes", "overview", "overview (page call)")
    for name in (*basic, *whole):
        assert rows[name]["n"] == 1 and rows[name]["median"] > 0, name
    assert doc["results"]["200"]["patients"] == 200
    assert "peer / outcomes" in doc["results"]["200"]["ratios"]
    assert "peer script / cli outcomes (whole processes)" in doc["results"]["200"]["ratios"]
    assert any(b["what"] == "load" for b in doc["budgets"])
    assert "budgets (at the largest size measured)" in proc.stdout


def test_browser_budgets_are_the_issues_by_size() -> None:
    from bench.browser import budget_for

    assert budget_for("patient from the caseload", 50_000) == 0.5
    assert budget_for("Patient trends", 50_000) == 0.7
    assert budget_for("Settings", 50_000) == 1.0
    assert budget_for("patient from the caseload", 500_000) == 2.0
    assert budget_for("patient by deep link (new tab)", None) == 1.5
