"""The browser benchmark (bench/browser.py) runs end to end on a tiny cohort, so it cannot rot.
No timings are asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.browser import PAGES

ROOT = Path(__file__).resolve().parents[2]


def test_browser_benchmark_times_every_measurement_on_a_tiny_cohort(tmp_path: Path) -> None:
    out = tmp_path / "browser.json"
    cmd = [sys.executable, "bench/browser.py", "--patients", "120", "--repeat", "1"]
    cmd += ["--cache", str(tmp_path / "cache"), "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    expected = {title for title, _ in PAGES}
    expected |= {"patient from the caseload", "clinic outcomes filter change"}
    expected |= {"patient by deep link (new tab)"}
    assert set(results) == expected
    assert all(r["n"] == 1 and r["median"] > 0 for r in results.values())
