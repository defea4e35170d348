"""The Research export page in a real browser: the download is a .zip with data, dictionary and manifest."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from kapdata import db

from .conftest import wait_rendered

pytestmark = pytest.mark.e2e


def metric_value(page, label: str) -> str:
    metric = page.locator('[data-testid="stMetric"]', has_text=label).first
    metric.wait_for(timeout=30000)
    return metric.locator('[data-testid="stMetricValue"]').inner_text().strip()


def download_zip(page, tmp_path: Path) -> zipfile.ZipFile:
    button = page.get_by_role("button", name="Download .zip")
    button.wait_for(timeout=30000)
    with page.expect_download(timeout=60000) as info:
        button.click()
    target = tmp_path / info.value.suggested_filename
    info.value.save_as(target)
    return zipfile.ZipFile(io.BytesIO(target.read_bytes()))


def test_research_export_downloads_a_deidentified_zip(
    app_url: str, page, e2e_db: Path, tmp_path: Path
) -> None:
    page.goto(app_url + "/research_export")
    wait_rendered(page)
    rows = metric_value(page, "Rows")
    with download_zip(page, tmp_path) as zf:
        assert zf.namelist() == ["data.csv", "data_dictionary.csv", "table1.csv", "manifest.json"]
        manifest = json.loads(zf.read("manifest.json"))
        data = zf.read("data.csv")
    assert f"{manifest['rows']:,}" == rows
    assert manifest["shape"] == "long"
    assert manifest["files"]["data.csv"]["sha256"] == hashlib.sha256(data).hexdigest()
    frame = pd.read_csv(io.BytesIO(data), dtype=str)
    with db.reader(e2e_db) as con:
        source_ids = {r[0] for r in con.execute("SELECT patient_id FROM patients").fetchall()}
    assert frame["patient_id"].str.fullmatch(r"P\d{4}").all()
    assert not source_ids & set(frame["patient_id"])


def test_research_export_wide_parquet_download(app_url: str, page, tmp_path: Path) -> None:
    page.goto(app_url + "/research_export")
    wait_rendered(page)
    page.get_by_role("radio", name="Wide", exact=True).click()
    page.get_by_role("radio", name="Parquet", exact=True).click()
    # The button's label changes on the run that registers the wide Parquet download.
    page.get_by_role("button", name="Download .zip (wide, Parquet)").wait_for(timeout=30000)
    with download_zip(page, tmp_path) as zf:
        assert zf.namelist() == ["data.parquet", "data_dictionary.csv", "table1.csv", "manifest.json"]
        frame = pd.read_parquet(io.BytesIO(zf.read("data.parquet")))
        manifest = json.loads(zf.read("manifest.json"))
    assert (manifest["shape"], manifest["format"], manifest["rows"]) == ("wide", "parquet", len(frame))
    assert {"baseline", "latest", "latest_response"} <= set(frame.columns)
