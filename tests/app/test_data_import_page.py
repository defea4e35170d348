"""The data import page (AppTest): upload → validation report → commit or quarantine; history and undo.

Tests that write use their own database in tmp_path (the shared ``app_db`` stays read-only). It holds:
patients P1, P2; sessions P1 2025-03-01 and 2025-03-15, P2 2025-03-02; PHQ-9 scores P1 18 (2025-02-20),
P1 8 (2025-04-01), P2 15 (2025-02-25) — loaded as batches 1 (patients), 2 (sessions), 3 (scores).
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import kapui
from kapdata import db, ingest
from tests.conftest import snapshot

from .conftest import ROOT, counts

XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PATIENTS = "patient_id,clinic,provider,age_band,sex,primary_condition,route\n"
GOOD_SCORES = (
    "patient_id,instrument,assessed_on,total\n"
    "P1,GAD-7,2025-02-20,12\n"
    "P1,GAD-7,2025-04-01,5\n"
    "P3,PHQ-9,2025-05-01,10\n"
    "P1,PHQ-9,2025-04-01,8\n"
)
BAD_SCORES = (
    "patient_id,instrument,assessed_on,total\n"
    "P1,GAD-7,2025-02-20,12\n"
    "P1,PHQ-9,2025-04-20,30\n"
    "P2,BDI,2025-03-01,5\n"
    "P2,GAD-7,2025-13-01,5\n"
)
BAD_REPORT = [
    ["bad_scores.csv", "3", "total", "30", "total out of range: PHQ-9 totals are 0-27", "error"],
    [
        "bad_scores.csv",
        "4",
        "instrument",
        "BDI",
        "unknown instrument; expected one of PHQ-9, GAD-7, PCL-5",
        "error",
    ],
    [
        "bad_scores.csv",
        "5",
        "assessed_on",
        "2025-13-01",
        "not a date: expected YYYY-MM-DD or an ISO date-time such as 2026-06-01T09:30:00+01:00",
        "error",
    ],
]


@pytest.fixture()
def own_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "patients.csv").write_text(
        PATIENTS + "P1,North,PRV-1,25-34,female,MDD,IV\nP2,North,PRV-2,35-44,male,PTSD,IM\n"
    )
    (folder / "sessions.csv").write_text(
        "patient_id,session_date\nP1,2025-03-01\nP1,2025-03-15\nP2,2025-03-02\n"
    )
    (folder / "scores.csv").write_text(
        "patient_id,instrument,assessed_on,total\nP1,PHQ-9,2025-02-20,18\nP1,PHQ-9,2025-04-01,8\n"
        "P2,PHQ-9,2025-02-25,15\n"
    )
    path = tmp_path / "kap.duckdb"
    ingest.load_files([folder / n for n in ("patients.csv", "sessions.csv", "scores.csv")], path)
    monkeypatch.setenv("KAP_DB", str(path))
    monkeypatch.chdir(ROOT)
    return path


def import_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
    at.run()
    return at.switch_page("pages/data_import.py").run()


def upload(at: AppTest, *files: tuple[str, str]) -> AppTest:
    at.file_uploader[0].set_value([(name, text.encode(), "text/csv") for name, text in files])
    at.run()
    assert not at.exception, at.exception
    return at


def frame_with(at: AppTest, column: str) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if column in d.value.columns)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_import_page_states_the_upload_limit_and_lists_the_history(app_env: Path) -> None:
    at = import_page()
    assert not at.exception, at.exception
    assert at.file_uploader[0].accept_multiple_files
    assert set(at.file_uploader[0].allowed_type) == {".csv", ".parquet", ".xlsx", ".json", ".ndjson"}
    # What is accepted is said in visible text under the widget, not only in its tooltip.
    caption = next(c.value for c in at.caption if "Up to 200 MB per file" in c.value)
    for said in ("CSV", "Parquet", "`.xlsx`", "FHIR R4 `.json`", "`.ndjson`", "column mapping"):
        assert said in caption
    # The FHIR option appears only when a FHIR file is uploaded; new patients are off by default.
    assert not [c for c in at.checkbox if c.label == "These FHIR ids are already pseudonymous"]
    assert at.checkbox(key="import_new_patients").value is False
    history = frame_with(at, "sha256")
    assert list(history["batch"]) == [3, 2, 1]
    assert list(history["kind"]) == ["scores", "sessions", "patients"]
    assert list(history["status"]) == ["active"] * 3


def test_clean_upload_shows_counts_and_kind_and_leaves_the_database_unchanged(own_db: Path) -> None:
    before = snapshot(own_db)
    at = upload(tick_new_patients(import_page()), ("new_scores.csv", GOOD_SCORES))
    assert metrics(at) == {
        "Rows read": "4",
        "Valid": "4",
        "Rejected": "0",
        "Already present": "1",
        "New rows": "3",
        "New patients": "1",
    }
    per_file = frame_with(at, "taken as")
    assert per_file.iloc[0][["file", "taken as", "status"]].tolist() == ["new_scores.csv", "scores", "ready"]
    assert any(s.value == "No errors: every row passes." for s in at.success)
    report = frame_with(at, "reason")
    assert report.values.tolist() == [
        [
            "new_scores.csv",
            "",
            "patient_id",
            "",
            "1 patient(s) are in no patients file; created with unknown attributes: P3",
            "info",
        ]
    ]
    # File names are escaped for Markdown (shown as typed, never rendered)
    assert any(e.label.startswith("Preview: new\\_scores\\.csv (taken as scores)") for e in at.expander)
    assert not at.button(key="import_commit").disabled
    assert snapshot(own_db) == before


def test_bad_upload_shows_every_problem_and_cannot_be_committed(own_db: Path) -> None:
    before = snapshot(own_db)
    at = upload(import_page(), ("bad_scores.csv", BAD_SCORES))
    assert frame_with(at, "reason").values.tolist() == BAD_REPORT
    assert at.error[0].value.startswith("3 problem(s) in 3 row(s).")
    assert metrics(at)["Valid"] == "1"
    assert metrics(at)["Rejected"] == "3"
    assert at.button(key="import_commit").disabled
    assert "Download the report (CSV)" in [b.label for b in at.download_button]
    assert snapshot(own_db) == before


def test_commit_loads_the_rows_and_every_page_shows_them_at_once(own_db: Path) -> None:
    at = upload(tick_new_patients(import_page()), ("new_scores.csv", GOOD_SCORES))
    overview_before = counts(own_db)
    at.button(key="import_commit").click().run()
    assert not at.exception, at.exception
    assert at.success[0].value == "Loaded 3 rows as batch 4."
    assert [t.value for t in at.text if "new_scores.csv" in t.value] == [
        "• new_scores.csv: taken as scores; 4 rows read, 3 loaded, 1 already present, 0 quarantined, "
        "1 new patients with unknown attributes (batch 4)."
    ]
    assert counts(own_db) == {
        "patients": overview_before["patients"] + 1,
        "scores": overview_before["scores"] + 3,
        "sessions": overview_before["sessions"],
    }
    # The uploader starts empty again, and the history shows the new batch.
    assert at.file_uploader[0].value == []
    assert frame_with(at, "sha256").iloc[0][["batch", "file", "loaded"]].tolist() == [4, "new_scores.csv", 3]
    at.switch_page("pages/overview.py").run()
    assert metrics(at)["Questionnaires"] == "6"
    assert metrics(at)["Patients"] == "3"


def test_quarantine_loads_the_valid_rows_and_offers_the_rejected_ones(own_db: Path) -> None:
    at = upload(import_page(), ("bad_scores.csv", BAD_SCORES))
    box = next(c for c in at.checkbox if c.label == "Load the valid rows and quarantine the rest")
    box.check().run()
    assert not at.button(key="import_commit").disabled
    at.button(key="import_commit").click().run()
    assert not at.exception, at.exception
    assert at.success[0].value.startswith("Loaded 1 rows as batch 4. 3 rows were quarantined")
    assert counts(own_db)["scores"] == 4
    rejects = at.session_state["import_outcome"].rejects
    assert [name for name, _ in rejects] == ["bad_scores.rejects.csv"]
    frame = pd.read_csv(io.BytesIO(rejects[0][1]), dtype=str)
    assert frame["_row"].tolist() == ["3", "4", "5"]
    assert frame["patient_id"].tolist() == ["P1", "P2", "P2"]
    # the file name is text (Markdown escaped): it shows as "bad_scores.rejects.csv"
    assert (
        at.download_button[0].label
        == f"Download quarantined rows: {kapui.md_escape('bad_scores.rejects.csv')}"
    )


def test_file_with_an_identifier_column_is_refused_and_cannot_be_quarantined(own_db: Path) -> None:
    before = snapshot(own_db)
    bad = "patient_id,first_name,clinic\nP9,Alex,North\n"
    at = upload(import_page(), ("ids.csv", bad), ("new_scores.csv", GOOD_SCORES))
    assert any(w.value.startswith("Refused as a whole: ids\\.csv.") for w in at.warning)
    assert not [c for c in at.checkbox if c.label.startswith("Load the valid rows")]
    assert at.button(key="import_commit").disabled
    statuses = dict(frame_with(at, "taken as")[["file", "status"]].values.tolist())
    assert statuses["ids.csv"] == "refused: see the report"
    assert statuses["new_scores.csv"] == "waits: the load is refused while another file is"
    assert snapshot(own_db) == before


def test_reimporting_a_loaded_file_has_nothing_to_load(own_db: Path) -> None:
    text = (
        "patient_id,instrument,assessed_on,total\nP1,PHQ-9,2025-02-20,18\nP1,PHQ-9,2025-04-01,8\n"
        "P2,PHQ-9,2025-02-25,15\n"
    )
    at = upload(import_page(), ("scores.csv", text))
    assert frame_with(at, "taken as").iloc[0]["status"] == "already loaded (batch 3): nothing to do"
    assert any(i.value.startswith("Nothing new to load") for i in at.info)
    assert at.button(key="import_commit").disabled


def test_failure_during_commit_leaves_the_database_as_it_was(own_db: Path, monkeypatch) -> None:
    before = snapshot(own_db)
    at = upload(tick_new_patients(import_page()), ("new_scores.csv", GOOD_SCORES))

    def broken(con) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(ingest.db, "bump_data_version", broken)
    at.button(key="import_commit").click().run()
    assert not at.exception, at.exception
    # In words, never the error's own text (it can hold engine messages and paths).
    assert at.error[0].value == (
        "Import failed: the database is unchanged. Something went wrong; the details are in the server's "
        "log. Reload the page to try again."
    )
    assert snapshot(own_db) == before


def test_undo_needs_confirmation_then_removes_the_batch(own_db: Path) -> None:
    at = import_page()
    at.selectbox(key="undo_batch").set_value(3).run()
    assert at.button(key="undo_go").disabled
    before = counts(own_db)
    at.checkbox(key="undo_confirm_3").check().run()
    assert not at.button(key="undo_go").disabled
    at.button(key="undo_go").click().run()
    assert not at.exception, at.exception
    assert at.success[0].value == "Batch 3 undone: 3 scores, 0 sessions and 0 patients removed."
    assert counts(own_db) == {**before, "scores": 0}
    history = frame_with(at, "sha256")
    assert history.loc[history["batch"] == 3, "status"].iloc[0].startswith("undone ")
    assert not [o for o in at.selectbox(key="undo_batch").options if o.startswith("batch 3 ")]


def test_xlsx_and_parquet_uploads_are_recognised_and_previewed(own_db: Path) -> None:
    frame = pd.read_csv(io.StringIO(GOOD_SCORES), dtype=str)
    parquet, xlsx = io.BytesIO(), io.BytesIO()
    frame.to_parquet(parquet, index=False)
    frame.rename(columns={"patient_id": "Patient ID"}).to_excel(xlsx, index=False)
    at = tick_new_patients(import_page())
    at.file_uploader[0].set_value(
        [
            ("more.xlsx", xlsx.getvalue(), XLSX_MIME),
            ("more.parquet", parquet.getvalue(), "application/octet-stream"),
        ]
    )
    at.run()
    assert not at.exception, at.exception
    per_file = frame_with(at, "taken as")
    assert per_file[["file", "taken as", "rows read", "valid"]].values.tolist() == [
        ["more.xlsx", "scores", 4, 4],
        ["more.parquet", "scores", 4, 4],
    ]
    previews = [d.value for d in at.dataframe if "instrument" in d.value.columns]
    assert [list(p.index) for p in previews] == [[2, 3, 4, 5], [1, 2, 3, 4]]  # the report's row numbers
    assert previews[1].iloc[0].tolist() == ["P1", "GAD-7", "2025-02-20", "12"]


def test_two_xlsx_files_can_be_loaded_together(own_db: Path) -> None:
    frame = pd.read_csv(io.StringIO(GOOD_SCORES), dtype=str)
    first, second = io.BytesIO(), io.BytesIO()
    frame.iloc[:2].to_excel(first, index=False)
    frame.iloc[2:].to_excel(second, index=False)
    at = import_page()
    at.file_uploader[0].set_value(
        [("a.xlsx", first.getvalue(), XLSX_MIME), ("b.xlsx", second.getvalue(), XLSX_MIME)]
    )
    at.run()
    assert frame_with(at, "taken as")["taken as"].tolist() == ["scores", "scores"]


def _import_folders() -> set[str]:
    import tempfile

    return {p.name for p in Path(tempfile.gettempdir()).glob("kap-import-*")}


def test_refused_file_preview_never_shows_its_identifier_columns_and_uploads_leave_the_disk(
    own_db: Path,
) -> None:
    before = snapshot(own_db)
    folders = _import_folders()
    bad = "patient_id,pt_name,emailaddress,clinic\nP9,Alex Doe,alex@example.org,North\n"
    at = upload(import_page(), ("ids.csv", bad))
    shown = [d.value for d in at.dataframe]
    preview = next(f for f in shown if "clinic" in f.columns and "patient_id" in f.columns)
    assert list(preview.columns) == ["patient_id", "clinic"]
    assert not any("Alex Doe" in f.to_csv() or "alex@example.org" in f.to_csv() for f in shown)
    assert _import_folders() == folders  # the staged upload was deleted when validation ended
    assert snapshot(own_db) == before


def test_unreadable_upload_is_explained_in_words_without_engine_text_or_temp_path(own_db: Path) -> None:
    text = "patient_id,instrument,assessed_on,total\nP1,PHQ-9,2025-01-05,3\nP2,PHQ-9,2025-01-05,3,9\n"
    at = upload(import_page(), ("odd.csv", text))
    report = frame_with(at, "reason")
    assert report["reason"].tolist() == [
        "row 3 has 5 fields, more than the 4 columns of the header: a value holding a comma must be in "
        "double quotes, and every row needs one field per column"
    ]
    everything = " ".join(str(e.value) for e in (*at.error, *at.warning, *at.caption, *at.text))
    everything += report.to_csv()
    for leak in ("kap-import-", "Invalid Input Error", "sniffing", "Error when"):
        assert leak not in everything


def test_commit_after_validation_stages_the_uploads_again_and_deletes_them(own_db: Path) -> None:
    folders = _import_folders()
    at = upload(tick_new_patients(import_page()), ("new_scores.csv", GOOD_SCORES))
    at.button(key="import_commit").click().run()
    assert not at.exception, at.exception
    assert [s.value for s in at.success] == ["Loaded 3 rows as batch 4."]
    assert _import_folders() == folders


# ------------------------------------------------------------------------------ issue 13: data-manager safety


def tick_new_patients(at: AppTest) -> AppTest:
    at.checkbox(key="import_new_patients").check().run()
    assert not at.exception, at.exception
    return at


def test_a_score_for_an_unknown_patient_is_an_error_unless_new_patients_are_asked_for(own_db: Path) -> None:
    before = snapshot(own_db)
    at = upload(import_page(), ("new_scores.csv", GOOD_SCORES))  # row 4 is P3: in no file, not in the db
    report = frame_with(at, "reason")
    errors = report[report["severity"] == "error"]
    assert errors[["file", "row", "column", "value"]].values.tolist() == [
        ["new_scores.csv", "4", "patient_id", "P3"]
    ]
    assert at.error[0].value.startswith("1 problem(s) in 1 row(s).")
    assert metrics(at)["Rejected"] == "1"
    assert metrics(at)["New patients"] == "0"
    assert any("tick **Create new patients**" in i.value for i in at.info)
    assert at.button(key="import_commit").disabled
    # Ticked: the same file is clean and P3 is created, with unknown attributes.
    tick_new_patients(at)
    assert metrics(at)["Rejected"] == "0"
    assert metrics(at)["New patients"] == "1"
    assert not at.button(key="import_commit").disabled
    assert snapshot(own_db) == before
    at.button(key="import_commit").click().run()
    assert at.success[0].value == "Loaded 3 rows as batch 4."
    assert counts(own_db)["patients"] == 3
    # The next load starts from the safe default again.
    box = at.checkbox(key="import_new_patients")
    assert box.value is False and box.proto.set_value


def test_a_patients_file_in_the_same_load_makes_its_patients_known(own_db: Path) -> None:
    at = upload(
        import_page(), ("p3.csv", PATIENTS + "P3,South,PRV-3,45-54,female,GAD,IV\n"), ("s.csv", GOOD_SCORES)
    )
    assert not [e for e in at.error]
    assert metrics(at)["New patients"] == "1"  # P3, from its patients file
    assert not at.button(key="import_commit").disabled


def test_the_problem_headline_counts_the_rows_the_rejected_count_adds_up(own_db: Path) -> None:
    # A scores file without assessed_on is refused as a whole after its 3 rows were read: never "1 row".
    refused = "patient_id,instrument,total\nP1,PHQ-9,5\nP1,PHQ-9,6\nP2,PHQ-9,7\n"
    at = upload(import_page(), ("no_dates.csv", refused))
    assert metrics(at)["Rejected"] == "3"
    assert at.error[0].value.startswith("1 problem(s) in 1 file refused as a whole (3 rows).")
    # With a file of row errors beside it: 3 rows of errors + 3 rows refused = Rejected 6.
    at = upload(import_page(), ("no_dates.csv", refused), ("bad_scores.csv", BAD_SCORES))
    assert metrics(at)["Rejected"] == "6"
    assert at.error[0].value.startswith("4 problem(s) in 3 row(s) and 1 file refused as a whole (3 rows).")
    # A file refused on its header alone: its rows were never read, and the headline says so.
    at = upload(import_page(), ("ids.csv", "patient_id,first_name\nP9,Alex\n"))
    assert metrics(at)["Rejected"] == "0"
    assert at.error[0].value.startswith("1 problem(s) in 1 file refused as a whole (its rows were not read).")


def _confirmation(at: AppTest) -> str:
    boxes = [c.label for c in at.checkbox if c.label.startswith("Yes, remove ")]
    assert len(boxes) == 1
    return boxes[0]


def test_after_an_undo_the_batch_box_and_the_confirmation_name_the_same_batch(own_db: Path) -> None:
    at = import_page()
    at.selectbox(key="undo_batch").set_value(3).run()
    at.checkbox(key="undo_confirm_3").check().run()
    at.button(key="undo_go").click().run()
    assert not at.exception, at.exception
    box = at.selectbox(key="undo_batch")
    # A browser keeps showing the box's last choice (batch 3) unless the server sends the new one: the server
    # must send it, and it must be the batch the confirmation names.
    assert box.proto.set_value
    assert box.proto.raw_value == box.options[0]
    assert box.options[0].startswith("batch 2 · sessions.csv")
    assert box.value == 2
    assert _confirmation(at) == f"Yes, remove {kapui.md_escape(box.options[0])} from the database"
    assert at.checkbox(key="undo_confirm_2").value is False  # a new confirmation, not ticked


def test_after_a_commit_the_batch_box_names_the_new_batch_like_its_confirmation(own_db: Path) -> None:
    at = import_page()
    at.selectbox(key="undo_batch").set_value(1).run()
    at = upload(at, ("new_scores.csv", GOOD_SCORES.replace("P3,", "P2,")))
    at.button(key="import_commit").click().run()
    assert not at.exception, at.exception
    box = at.selectbox(key="undo_batch")
    assert box.value == 4
    assert box.proto.set_value and box.proto.raw_value == box.options[0]
    assert _confirmation(at) == f"Yes, remove {kapui.md_escape(box.options[0])} from the database"


def test_templates_for_the_three_native_files_download_from_the_page(app_env: Path) -> None:
    at = import_page()
    labels = [b.label for b in at.download_button]
    assert labels[:3] == ["Template: patients.csv", "Template: sessions.csv", "Template: scores.csv"]
    assert set(ingest.templates()) == {"patients.csv", "sessions.csv", "scores.csv"}


FHIR_BUNDLE = """{"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {
  "resourceType": "Observation", "id": "o1", "status": "final",
  "code": {"coding": [{"system": "http://loinc.org", "code": "44261-6"}]},
  "subject": {"reference": "Patient/P1"}, "effectiveDateTime": "2025-05-30T21:34:39+12:00",
  "valueQuantity": {"value": 7}}}]}"""


def test_a_fhir_bundle_is_accepted_with_the_pseudonymous_ids_option(own_db: Path) -> None:
    at = import_page()
    at.file_uploader[0].set_value([("ehr_bundle.json", FHIR_BUNDLE.encode(), "application/json")])
    at.run()
    assert not at.exception, at.exception
    box = next(c for c in at.checkbox if c.label == "These FHIR ids are already pseudonymous")
    assert box.value is False
    box.check().run()
    # P1 is taken as it is (already in the database): one PHQ-9 of 30 May (its own local date).
    per_file = frame_with(at, "taken as")
    assert per_file[["file", "taken as", "rows read", "valid", "rejected"]].values.tolist() == [
        ["ehr_bundle.json", "scores", 1, 1, 0]
    ]
    assert metrics(at)["New patients"] == "0"
    at.button(key="import_commit").click().run()
    assert not at.exception, at.exception
    assert at.success[0].value == "Loaded 1 rows as batch 4."
    with db.reader(own_db) as con:
        row = con.execute(
            "SELECT patient_id, instrument, strftime(assessed_on, '%Y-%m-%d'), total FROM scores "
            "WHERE batch_id = 4"
        ).fetchall()
    assert row == [("P1", "PHQ-9", "2025-05-30", 7)]
