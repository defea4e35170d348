"""Upload through the data import page in a real browser, against our own `streamlit run` and database.

The shared ``app_url`` server must stay read-only, so this module starts its own on a tmp database holding
patients P1, P2 and one PHQ-9 score each.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from kapdata import db, ingest
from tests.conftest import snapshot

from .conftest import ROOT, _free_port, wait_rendered

pytestmark = pytest.mark.e2e

GOOD_SCORES = (
    "patient_id,instrument,assessed_on,total\n"
    "P1,GAD-7,2025-02-20,12\n"
    "P2,GAD-7,2025-02-21,7\n"
    "P2,PHQ-9,2025-04-01,9\n"
)
BAD_SCORES = "patient_id,instrument,assessed_on,total\nP1,GAD-7,2025-02-22,40\n"


@pytest.fixture(scope="module")
def import_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("import_e2e")
    patients = folder / "patients.csv"
    patients.write_text(
        "patient_id,clinic,provider,age_band,sex,primary_condition,route\n"
        "P1,North,PRV-1,25-34,female,MDD,IV\nP2,North,PRV-2,35-44,male,PTSD,IM\n"
    )
    scores = folder / "scores.csv"
    scores.write_text(
        "patient_id,instrument,assessed_on,total\nP1,PHQ-9,2025-02-20,18\nP2,PHQ-9,2025-02-25,15\n"
    )
    path = folder / "kap.duckdb"
    ingest.load_files([patients, scores], path)
    return path


@pytest.fixture(scope="module")
def import_url(import_db: Path) -> Iterator[str]:
    """`streamlit run` on our own database (the pattern of conftest's ``app_url``)."""
    port = _free_port()
    env = dict(os.environ, KAP_DB=str(import_db))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "dashboard.py",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--server.address",
            "127.0.0.1",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        out = proc.stdout.read().decode() if proc.stdout else ""
        raise RuntimeError("streamlit did not start:\n" + out)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def open_import_page(page, url: str) -> None:
    # Through the navigation, as a user does (a first deep link can reach Streamlit before the entry
    # point has declared its pages).
    page.goto(url)
    wait_rendered(page)
    page.get_by_role("link", name="Data import").click()
    page.get_by_text("Patients, sessions or scores files").wait_for(timeout=30000)
    wait_rendered(page)


def score_count(path: Path) -> int:
    with db.reader(path) as con:
        row = con.execute("SELECT count(*) FROM scores").fetchone()
    assert row is not None
    return int(row[0])


def test_bad_file_uploaded_in_a_browser_shows_the_report_and_changes_nothing(
    import_url: str, import_db: Path, page, tmp_path: Path
) -> None:
    before = snapshot(import_db)
    bad = tmp_path / "bad_scores.csv"
    bad.write_text(BAD_SCORES)
    open_import_page(page, import_url)
    page.locator('[data-testid="stFileUploader"] input[type=file]').set_input_files(str(bad))
    page.get_by_text("1 problem(s) in 1 row(s).").wait_for(timeout=30000)
    # The report is a canvas data grid: its cells are in the page for screen readers, not painted as text.
    page.get_by_text("total out of range: GAD-7 totals are 0-21").first.wait_for(
        state="attached", timeout=30000
    )
    assert page.get_by_role("button", name="Commit to the database").is_disabled()
    assert snapshot(import_db) == before


def test_file_uploaded_in_a_browser_is_validated_and_committed(
    import_url: str, import_db: Path, page, tmp_path: Path
) -> None:
    before = score_count(import_db)
    upload = tmp_path / "more_scores.csv"
    upload.write_text(GOOD_SCORES)
    open_import_page(page, import_url)
    page.locator('[data-testid="stFileUploader"] input[type=file]').set_input_files(str(upload))
    page.get_by_text("No errors: every row passes.").wait_for(timeout=30000)
    assert score_count(import_db) == before  # validated only
    page.get_by_role("button", name="Commit to the database").click()
    page.get_by_text("Loaded 3 rows as batch").wait_for(timeout=60000)
    wait_rendered(page)
    assert score_count(import_db) == before + 3
    assert page.get_by_text("more_scores.csv: taken as scores; 3 rows read, 3 loaded").count() == 1


CLINIC_EXPORT = (
    "Pseudonym,Measure,Visit date,Score\n"
    "P1,PHQ9 Depression,01/02/2025,5\n"
    "P2,GAD7 Anxiety,03/02/2025,4\n"
    "P1,GAD7 Anxiety,15/03/2025,9\n"
)


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the selectbox labelled ``label`` (Streamlit's own listbox), as a user does. A click
    that lands while the page is redrawn can leave the list closed: then click again."""
    for _attempt in range(5):
        page.get_by_role("combobox", name=label, exact=True).click()
        item = page.get_by_role("option", name=option, exact=True)
        try:
            item.wait_for(state="visible", timeout=3000)
        except PlaywrightTimeout:
            continue
        item.click()
        break
    wait_rendered(page)
    assert page.get_by_role("combobox", name=label, exact=True).input_value() == option


def test_a_spreadsheet_with_its_own_headers_is_mapped_previewed_and_committed_in_a_browser(
    import_url: str, import_db: Path, page, tmp_path: Path
) -> None:
    before = score_count(import_db)
    upload = tmp_path / "clinic_export.csv"
    upload.write_text(CLINIC_EXPORT)
    open_import_page(page, import_url)
    page.locator('[data-testid="stFileUploader"] input[type=file]').set_input_files(str(upload))
    page.get_by_text("Mapping: clinic_export.csv").wait_for(timeout=30000)
    wait_rendered(page)
    for target, header in (
        ("patient_id", "Pseudonym"),
        ("instrument", "Measure"),
        ("assessed_on", "Visit date"),
        ("total", "Score"),
    ):
        choose(page, target, header)
    choose(page, "PHQ9 Depression", "PHQ-9")
    choose(page, "GAD7 Anxiety", "GAD-7")
    date_format = page.get_by_role("textbox", name="Date format", exact=True)
    date_format.fill("%d/%m/%Y")
    date_format.press("Enter")
    wait_rendered(page)
    # The preview is a data grid (canvas): its cells are in the page for screen readers.
    page.get_by_text("No errors: every row passes.").wait_for(timeout=30000)
    page.get_by_text("2025-03-15").first.wait_for(state="attached", timeout=30000)
    assert score_count(import_db) == before  # previewed and checked only
    page.get_by_role("button", name="Commit to the database").click()
    page.get_by_text("Loaded 3 rows as batch").wait_for(timeout=60000)
    wait_rendered(page)
    assert score_count(import_db) == before + 3
    with db.reader(import_db) as con:
        rows = con.execute(
            "SELECT patient_id, instrument, strftime(assessed_on, '%Y-%m-%d'), total FROM scores "
            "WHERE batch_id = (SELECT max(batch_id) FROM batches) ORDER BY assessed_on"
        ).fetchall()
    assert rows == [
        ("P1", "PHQ-9", "2025-02-01", 5),
        ("P2", "GAD-7", "2025-02-03", 4),
        ("P1", "GAD-7", "2025-03-15", 9),
    ]


def test_after_an_undo_in_a_browser_the_batch_box_and_the_confirmation_name_the_same_batch(
    import_url: str, import_db: Path, page
) -> None:
    open_import_page(page, import_url)
    page.get_by_text("Undo a batch").click()
    box = page.get_by_role("combobox", name="Batch", exact=True)
    box.wait_for(timeout=30000)
    undone = box.input_value()
    assert undone.startswith("batch ")
    page.get_by_text(f"Yes, remove {undone} from the database").click()
    wait_rendered(page)
    page.get_by_role("button", name="Undo batch").click()
    page.get_by_text(f"Batch {undone.split(' ')[1]} undone:").wait_for(timeout=30000)
    wait_rendered(page)
    if not box.is_visible():
        page.get_by_text("Undo a batch").click()
    shown = box.input_value()
    assert shown != undone
    # The browser shows the batch the confirmation names (before the fix it kept showing the undone one).
    page.get_by_text(f"Yes, remove {shown} from the database").wait_for(timeout=30000)
