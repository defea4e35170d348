"""The Research export page (AppTest): filters, preview, k-anonymity, Table 1 and the .zip download."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from kapdata import db
from kapdata import export as ex

from .conftest import ROOT

PAGE = "pages/research_export.py"


def open_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[Callable[[], bytes]]:
    """What each run's download button would serve when clicked (its deferred callable)."""
    seen: list[Callable[[], bytes]] = []
    original = MediaFileManager.add_deferred

    def record(
        self: MediaFileManager, data_callable: Callable[[], bytes], *args: object, **kw: object
    ) -> str:
        seen.append(data_callable)
        return original(self, data_callable, *args, **kw)

    monkeypatch.setattr(MediaFileManager, "add_deferred", record)
    return seen


def test_preview_counts_match_kapdata(app_env: Path) -> None:
    at = open_page()
    with db.reader(app_env) as con:
        expected = ex.preview(con, ex.ExportSpec())
    shown = metrics(at)
    assert shown["Rows"] == f"{expected.rows:,}"
    assert shown["Patients"] == f"{expected.patients:,}"
    assert shown["Columns"] == str(len(expected.columns))
    assert shown["k-anonymity"] == f"{expected.k_anonymity.k:,}"
    head = at.dataframe[0].value
    assert list(head.columns) == expected.columns
    assert head["patient_id"].str.fullmatch(r"P\d{4}").all()


def test_download_serves_a_zip_with_data_dictionary_and_manifest(app_env: Path, downloads) -> None:
    at = open_page()
    assert at.get("download_button")[0].proto.label.startswith("Download .zip (long, CSV)")
    data = downloads[-1]()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.namelist() == ["data.csv", "data_dictionary.csv", "table1.csv", "manifest.json"]
        manifest = json.loads(zf.read("manifest.json"))
        csv_bytes = zf.read("data.csv")
    assert manifest["files"]["data.csv"]["sha256"] == hashlib.sha256(csv_bytes).hexdigest()
    assert f"{manifest['rows']:,}" == metrics(at)["Rows"]
    frame = pd.read_csv(io.BytesIO(csv_bytes), dtype=str)
    with db.reader(app_env) as con:
        source_ids = {r[0] for r in con.execute("SELECT patient_id FROM patients").fetchall()}
    assert not source_ids & set(frame["patient_id"])
    assert manifest["calendar_dates_included"] is False


def test_choosing_wide_parquet_and_a_scale_changes_preview_and_download(app_env: Path, downloads) -> None:
    at = open_page()
    at.segmented_control(key="rx_shape").set_value("wide")
    at.segmented_control(key="rx_format").set_value("parquet")
    at.multiselect(key="rx_scales").set_value(["PHQ-9"])
    at.run()
    assert not at.exception, at.exception
    with db.reader(app_env) as con:
        expected = ex.preview(con, ex.ExportSpec(shape="wide", file_format="parquet", instruments=("PHQ-9",)))
    assert metrics(at)["Rows"] == f"{expected.rows:,}"
    assert set(at.dataframe[0].value["instrument"]) == {"PHQ-9"}
    with zipfile.ZipFile(io.BytesIO(downloads[-1]())) as zf:
        assert zf.namelist() == ["data.parquet", "data_dictionary.csv", "table1.csv", "manifest.json"]
        frame = pd.read_parquet(io.BytesIO(zf.read("data.parquet")))
    assert len(frame) == expected.rows
    assert "dosing_response" in frame


def test_default_columns_pass_the_floor(app_env: Path) -> None:
    at = open_page()
    with db.reader(app_env) as con:
        default = ex.preview(con, ex.ExportSpec()).k_anonymity
        every = ex.preview(con, ex.ExportSpec(quasi_identifiers=ex.QUASI_IDENTIFIERS)).k_anonymity
    assert every.refused and default.left_out_by_default == every.suggested_drop  # all five would fail
    assert at.pills(key="rx_qis").value == list(default.quasi_identifiers)
    assert int(metrics(at)["k-anonymity"].replace(",", "")) >= ex.K_THRESHOLD
    assert not at.error
    assert at.get("download_button")[0].proto.label.startswith("Download .zip")


def test_an_export_under_the_floor_has_no_download_and_offers_to_leave_columns_out(app_env: Path) -> None:
    at = open_page()
    at.pills(key="rx_qis").set_value(list(ex.QUASI_IDENTIFIERS)).run()
    assert not at.exception, at.exception
    with db.reader(app_env) as con:
        suggested = ex.preview(con, ex.ExportSpec(quasi_identifiers=ex.QUASI_IDENTIFIERS)).k_anonymity
    assert suggested.refused and suggested.suggested_drop
    assert not at.get("download_button")
    assert any(e.value == "Download refused: k-anonymity under the floor." for e in at.error)
    assert any(e.value.startswith("export refused: k-anonymity is") for e in at.error)
    at.button(key="rx_leave_out").click().run()
    assert not at.exception, at.exception
    kept = [q for q in ex.QUASI_IDENTIFIERS if q not in suggested.suggested_drop]
    assert at.pills(key="rx_qis").value == kept
    assert not at.error
    assert at.get("download_button")
    assert [c for c in at.dataframe[0].value.columns if c in ex.QUASI_IDENTIFIERS] == kept


def test_week_level_days_on_the_page(app_env: Path) -> None:
    at = open_page()
    at.segmented_control(key="rx_dates").set_value("week").run()
    assert not at.exception, at.exception
    columns = at.dataframe[0].value.columns
    assert "week" in columns and "day" not in columns


def test_table1_suppresses_small_groups_and_says_so(app_env: Path) -> None:
    at = open_page()
    table1 = at.dataframe[1].value
    assert table1.iloc[0].tolist()[:2] == ["Patients", "all"]
    assert (table1["Patients"] == "<11").any()
    assert any("shown as “<11”" in c.value for c in at.caption)


def test_calendar_dates_warn_and_outcomes_hide_quasi_identifiers(app_env: Path) -> None:
    at = open_page()
    at.segmented_control(key="rx_dates").set_value("calendar").run()
    assert any("Calendar dates make patients easier to re-identify" in w.value for w in at.warning)
    assert "assessed_on" in at.dataframe[0].value
    at.segmented_control(key="rx_shape").set_value("outcomes").run()
    assert not at.exception, at.exception
    assert len(at.pills) == 0
    assert list(at.dataframe[0].value.columns[:3]) == ["patient_id", "instrument", "phase"]


def test_filters_that_match_nothing_say_so_and_disable_the_download(app_env: Path) -> None:
    at = open_page()
    at.number_input(key="rx_min").set_value(1000).run()
    assert not at.exception, at.exception
    assert metrics(at)["Rows"] == "0"
    assert metrics(at)["k-anonymity"] == "–"
    assert any("No data matches these filters" in i.value for i in at.info)
    assert at.get("download_button")[0].proto.disabled
