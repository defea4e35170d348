"""What a person waits for in the browser: click → page idle, in Debian's chromium (Playwright).

    python bench/browser.py [--patients 50000] [--repeat 3] [--db FILE] [--out bench/browser_results.json]

Starts `streamlit run dashboard.py` on a database (a generated cohort of --patients, cached by run.py's
cohort cache, or --db), opens it in chromium and times, from the click (or the navigation) until the page is
idle — the script has finished (`data-test-script-state` is "notRunning"), no running indicator is shown, no
element is stale and the main area has drawn:
- each page from its sidebar link;
- a patient chosen on the caseload (the patient picker);
- a patient by deep link (``/patient_trends?patient=ID``) in a new tab;
- a filter change on clinic outcomes (completers ↔ intention-to-treat).
Reports the median and min-max of --repeat runs. Timings are never asserted in the test suite;
tests/test_bench.py runs a tiny version so the harness cannot rot.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.app_rss import _free_port  # noqa: E402

#: Sidebar link text → URL path, in the order visited.
PAGES: tuple[tuple[str, str], ...] = (
    ("Patient trends", "patient_trends"),
    ("Clinic outcomes", "clinic_outcomes"),
    ("Research export", "research_export"),
    ("Data import", "data_import"),
    ("Definitions", "definitions"),
    ("Settings", "settings"),
    ("Overview", ""),
)
#: Budgets at 50,000 patients (issue 14), seconds.
BUDGETS: dict[str, float] = {
    "page (any)": 1.0,
    "Patient trends": 0.7,
    "patient from the caseload": 0.5,
    "patient by deep link (new tab)": 1.5,
    "clinic outcomes filter change": 1.0,
}
#: At 500,000 patients and more (issue 14): everything a person waits for ≤ 2 s.
LARGE, LARGE_BUDGET = 500_000, 2.0


def budget_for(name: str, patients: int | None) -> float:
    if patients and patients >= LARGE:
        return LARGE_BUDGET
    return BUDGETS.get(name, BUDGETS["page (any)"])


IDLE_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  if (document.querySelector('[data-testid="stStatusWidget"]')) return false;
  if (document.querySelector('[data-stale="true"]')) return false;
  return !!document.querySelector('[data-testid="stMain"] [data-testid="stElementContainer"]');
}"""


def start_app(db_file: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = dict(os.environ, KAP_DB=str(db_file))
    cmd = [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.port", str(port)]
    cmd += ["--server.headless", "true", "--server.address", "127.0.0.1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("streamlit did not start")


def _wait_idle(page: Any, timeout_ms: int = 120_000) -> None:
    # The click's rerun may take a moment to start: wait for it to leave "notRunning" (briefly), then idle.
    with contextlib.suppress(Exception):  # it may have finished already
        page.wait_for_function(
            "() => document.querySelector('[data-testid=\"stApp\"]')"
            "?.getAttribute('data-test-script-state') !== 'notRunning'",
            timeout=300,
        )
    page.wait_for_function(IDLE_JS, timeout=timeout_ms)


def _timed(action: Any, page: Any) -> float:
    start = time.perf_counter()
    action()
    _wait_idle(page)
    return time.perf_counter() - start


def _stats(times: list[float]) -> dict[str, float]:
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "n": len(times)}


def _on_page(page: Any, url: str, url_path: str) -> bool:
    """Whether ``page`` shows the page at ``url_path`` (query parameters aside)."""
    return page.url.split("?", 1)[0].rstrip("/") == f"{url}/{url_path}".rstrip("/")


def nav(page: Any, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"] a').filter(has_text=title).first.click()
    _wait_idle(page)


def measure(
    db_file: Path, patient_id: str, repeat: int, only: frozenset[str] = frozenset()
) -> dict[str, dict[str, float]]:
    """Click → idle timings; ``only`` (measurement names, case-insensitive) limits what is measured."""
    from playwright.sync_api import sync_playwright

    def wanted(name: str) -> bool:
        return not only or name.lower() in only

    proc, url = start_app(db_file)
    times: dict[str, list[float]] = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
            )
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.goto(url + "/")
            _wait_idle(page)
            # One untimed pass warms the server's caches, as for a person who is not the first of the day.
            for rep in range(repeat + 1):
                for title, url_path in PAGES:
                    if not wanted(title):
                        continue
                    if _on_page(page, url, url_path):  # a link to the page shown reruns it: come from another
                        nav(page, "Definitions" if title != "Definitions" else "Overview")
                    link = page.locator('[data-testid="stSidebarNav"] a').filter(has_text=title).first
                    took = _timed(link.click, page)
                    if rep:
                        times.setdefault(title, []).append(took)
                # A patient from the caseload: click its first row, as a person does.
                if wanted("patient from the caseload"):
                    nav(page, "Patient trends")
                    if "patient=" in page.url:  # the link kept the patient view (--only): to the list
                        page.get_by_role("button", name="← Caseload").click()
                        _wait_idle(page)
                    grid = page.locator('[data-testid="stDataFrame"]').first
                    grid.wait_for(timeout=60_000)
                    box = grid.bounding_box()
                    assert box is not None
                    took = _timed(lambda box=box: page.mouse.click(box["x"] + 18, box["y"] + 52), page)
                    heading = page.get_by_role("heading", name="Patient ")
                    heading.filter(has_not_text="trends").first.wait_for()
                    if rep:
                        times.setdefault("patient from the caseload", []).append(took)
                # A filter change on clinic outcomes: completers <-> intention-to-treat.
                if wanted("clinic outcomes filter change"):
                    nav(page, "Clinic outcomes")
                    choice = "Intention-to-treat" if rep % 2 == 0 else "Completers"
                    radio = page.get_by_text(choice, exact=True).first
                    took = _timed(radio.click, page)
                    if rep:
                        times.setdefault("clinic outcomes filter change", []).append(took)
                # A patient by deep link in a new tab.
                if wanted("patient by deep link (new tab)"):
                    tab = context.new_page()
                    target = f"{url}/patient_trends?patient={patient_id}"
                    took = _timed(lambda tab=tab, target=target: tab.goto(target), tab)
                    tab.get_by_text(f"Patient {patient_id}").first.wait_for(timeout=60_000)
                    tab.close()
                    if rep:
                        times.setdefault("patient by deep link (new tab)", []).append(took)
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {name: _stats(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=50000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--db", help="measure this database instead of a generated cohort")
    ap.add_argument("--cache", default=str(ROOT / "bench" / "cache"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "browser_results.json"))
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated measurement names to time (e.g. 'Patient trends,patient from the caseload')",
    )
    a = ap.parse_args(argv)
    only = frozenset(x.strip().lower() for x in a.only.split(",") if x.strip())
    from bench.run import cohort_files
    from kapdata import db, ingest

    with tempfile.TemporaryDirectory(prefix="kap-browser-bench-") as work:
        if a.db:
            db_file = Path(a.db)
        else:
            db_file = Path(work) / "kap.duckdb"
            ingest.load_files(cohort_files(a.patients, Path(a.cache)), db_file)
        with db.reader(db_file) as con:
            row = con.execute("SELECT patient_id FROM scores ORDER BY patient_id LIMIT 1 OFFSET 7").fetchone()
        patient_id = row[0] if row else ""
        results = measure(db_file, patient_id, a.repeat, only)
    print(f"{'measurement':<34} {'median s':>9} {'min':>7} {'max':>7}  budget")
    for name, r in results.items():
        budget = budget_for(name, None if a.db else a.patients)
        mark = "ok" if r["median"] <= budget else "OVER"
        print(f"{name:<34} {r['median']:>9.3f} {r['min']:>7.3f} {r['max']:>7.3f}  {budget:.1f} {mark}")
    Path(a.out).write_text(
        json.dumps({"patients": a.patients if not a.db else None, "results": results}, indent=2)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
