"""The mapping step of the data import page (AppTest): a spreadsheet with the clinic's own headers is mapped,
previewed, saved by name, offered again next month, and then validated and committed like a native file.

Every test writes to its own database (``own_db`` of test_data_import_page: patients P1, P2; batches 1–3).
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import kapui
from kapdata import db
from kapdata.ingest import mapping as mp
from tests.conftest import snapshot

from .test_data_import_page import XLSX_MIME, frame_with, import_page, own_db, upload  # noqa: F401

OWN = (
    "Pseudonym,Measure,Visit date,Score\n"
    "P1,PHQ9 Depression,01/02/2025,5\n"
    "P2,GAD7 Anxiety,03/02/2025,4\n"
    "P1,GAD7 Anxiety,15/03/2025,9\n"
)
NEXT_MONTH = "Pseudonym,Measure,Visit date,Score\nP2,PHQ9 Depression,02/04/2025,11\n"


@pytest.fixture()
def db_file(own_db: Path) -> Path:  # noqa: F811
    return own_db


#: The rows OWN holds, read through its mapping (hand-computed: day/month/year dates, the scale names).
OWN_ROWS = [
    ("P1", "PHQ-9", "2025-02-01", 5),
    ("P2", "GAD-7", "2025-02-03", 4),
    ("P1", "GAD-7", "2025-03-15", 9),
]


def widget(items, suffix: str):
    """The one widget whose key ends with ``suffix`` (the mapping editor keys its widgets per file)."""
    found = [w for w in items if w.key and w.key.endswith(suffix)]
    assert len(found) == 1, [w.key for w in items]
    return found[0]


def map_own_file(at: AppTest) -> AppTest:
    """Map OWN by hand (whatever the suggestions were): kind, layout, columns, values, date format."""
    widget(at.selectbox, "_kind").set_value("scores").run()
    widget(at.radio, "_layout").set_value("long").run()
    for target, header in (
        ("patient_id", "Pseudonym"),
        ("instrument", "Measure"),
        ("assessed_on", "Visit date"),
        ("total", "Score"),
    ):
        widget(at.selectbox, f"_col_{target}").set_value(header).run()
    for source, code in (("PHQ9 Depression", "PHQ-9"), ("GAD7 Anxiety", "GAD-7")):
        next(s for s in at.selectbox if s.label == source).set_value(code).run()
    widget(at.text_input, "_date_format").set_value("%d/%m/%Y").run()
    assert not at.exception, at.exception
    return at


def scores_of_batch(path: Path, batch: int) -> list[tuple[str, str, str, int]]:
    with db.reader(path) as con:
        rows = con.execute(
            "SELECT patient_id, instrument, strftime(assessed_on, '%Y-%m-%d'), total FROM scores "
            "WHERE batch_id = ? ORDER BY assessed_on, patient_id, instrument",
            [batch],
        ).fetchall()
    return [(str(a), str(b), str(c), int(d)) for a, b, c, d in rows]


def test_a_spreadsheet_with_its_own_headers_gets_the_mapping_editor_with_the_suggestions(
    db_file: Path,
) -> None:
    at = upload(import_page(), ("clinic_export.csv", OWN))
    assert [s.value for s in at.subheader if s.value.startswith("Mapping:")] == [
        "Mapping: clinic\\_export\\.csv"
    ]
    # Every contract column of a scores file has a selectbox offering the file's headers.
    picker = widget(at.selectbox, "_col_patient_id")
    assert picker.options == ["— not in the file —", "Pseudonym", "Measure", "Visit date", "Score"]
    # The suggested match is preselected.
    headers = ["Pseudonym", "Measure", "Visit date", "Score"]
    frame = pd.read_csv(io.StringIO(OWN), dtype=str)
    suggested = mp.suggest(headers, {h: frame[h].tolist() for h in headers})
    for target, header in suggested.columns.items():
        if target in ("patient_id", "instrument", "assessed_on", "total"):
            assert widget(at.selectbox, f"_col_{target}").value == header


def test_a_mapped_file_previews_validates_and_commits_like_a_native_file(db_file: Path) -> None:
    before = snapshot(db_file)
    at = map_own_file(upload(import_page(), ("clinic_export.csv", OWN)))
    preview = frame_with(at, "assessed_on")
    assert preview[["patient_id", "instrument", "total"]].values.tolist() == [
        [p, i, str(t)] for p, i, _, t in OWN_ROWS
    ]
    per_file = frame_with(at, "taken as")
    assert per_file[["file", "taken as", "rows read", "valid", "rejected"]].values.tolist() == [
        ["clinic_export.csv", "scores", 3, 3, 0]
    ]
    assert any(s.value == "No errors: every row passes." for s in at.success)
    assert snapshot(db_file) == before  # checked only
    at.button(key="import_commit").click().run()
    assert not at.exception, at.exception
    assert at.success[0].value == "Loaded 3 rows as batch 4."
    assert scores_of_batch(db_file, 4) == OWN_ROWS


def test_a_value_the_mapping_leaves_as_written_is_rejected_row_by_row(db_file: Path) -> None:
    at = map_own_file(upload(import_page(), ("clinic_export.csv", OWN)))
    next(s for s in at.selectbox if s.label == "GAD7 Anxiety").set_value("(as written)").run()
    report = frame_with(at, "reason")
    errors = report[report["severity"] == "error"]
    assert errors[["row", "column", "value"]].values.tolist() == [
        ["3", "instrument", "GAD7 Anxiety"],
        ["4", "instrument", "GAD7 Anxiety"],
    ]
    assert at.button(key="import_commit").disabled


def test_a_saved_mapping_is_offered_and_chosen_when_the_same_headers_come_back(db_file: Path) -> None:
    at = map_own_file(upload(import_page(), ("clinic_export.csv", OWN)))
    widget(at.text_input, "_name").set_value("clinic monthly").run()
    widget(at.button, "_save").click().run()
    assert not at.exception, at.exception
    assert any(s.value.startswith("Saved as “clinic monthly”") for s in at.success)
    with db.reader(db_file) as con:
        assert [name for name, _ in mp.saved(con)] == ["clinic monthly"]
        assert mp.for_headers(con, ["Pseudonym", "Measure", "Visit date", "Score"])[0] == "clinic monthly"
    # Next month, a new session: the same headers come back and the saved mapping is chosen, untouched.
    at = upload(import_page(), ("export_april.csv", NEXT_MONTH))
    assert any("The saved mapping “clinic monthly” was made for these headers" in i.value for i in at.info)
    assert widget(at.selectbox, "_start").value == "clinic monthly"
    assert widget(at.text_input, "_date_format").value == "%d/%m/%Y"
    assert frame_with(at, "taken as")[["taken as", "valid", "rejected"]].values.tolist() == [["scores", 1, 0]]
    at.button(key="import_commit").click().run()
    assert scores_of_batch(db_file, 4) == [("P2", "PHQ-9", "2025-04-02", 11)]


def test_a_native_file_can_be_mapped_on_request_and_is_not_otherwise(db_file: Path) -> None:
    native = "patient_id,instrument,assessed_on,total\nP1,PHQ-9,2025-05-01,7\n"
    at = upload(import_page(), ("native.csv", native))
    assert not [s for s in at.subheader if s.value.startswith("Mapping:")]
    widget(at.toggle, "_on").set_value(True).run()
    assert [s.value for s in at.subheader if s.value.startswith("Mapping:")] == ["Mapping: native\\.csv"]


def test_a_wide_visit_file_loads_one_score_per_scale(db_file: Path) -> None:
    wide = "Pseudonym,Visit date,PHQ-9 total,GAD-7 total\nP1,2025-05-01,12,9\nP2,2025-05-02,3,\n"
    at = upload(import_page(), ("visits.csv", wide))
    widget(at.selectbox, "_kind").set_value("scores").run()
    widget(at.radio, "_layout").set_value("wide").run()
    widget(at.selectbox, "_wide_col_patient_id").set_value("Pseudonym").run()
    widget(at.selectbox, "_wide_col_assessed_on").set_value("Visit date").run()
    widget(at.selectbox, "_PHQ9_col_total").set_value("PHQ-9 total").run()
    widget(at.selectbox, "_GAD7_col_total").set_value("GAD-7 total").run()
    assert not at.exception, at.exception
    # One part per scale, each its own batch; P2's empty GAD-7 cell is no score (three scores, not four).
    assert frame_with(at, "taken as")[
        ["file", "taken as", "rows read", "valid", "rejected"]
    ].values.tolist() == [
        ["visits.csv (PHQ-9)", "scores", 2, 2, 0],
        ["visits.csv (GAD-7)", "scores", 1, 1, 0],
    ]
    at.button(key="import_commit").click().run()
    assert not at.exception, at.exception
    assert at.success[0].value == "Loaded 3 rows as batches 4, 5."
    assert scores_of_batch(db_file, 4) + scores_of_batch(db_file, 5) == [
        ("P1", "PHQ-9", "2025-05-01", 12),
        ("P2", "PHQ-9", "2025-05-02", 3),
        ("P1", "GAD-7", "2025-05-01", 9),
    ]


def test_an_xlsx_with_its_own_headers_is_mapped_too(db_file: Path) -> None:
    book = io.BytesIO()
    pd.read_csv(io.StringIO(OWN), dtype=str).to_excel(book, index=False)
    at = import_page()
    at.file_uploader[0].set_value([("clinic.xlsx", book.getvalue(), XLSX_MIME)])
    at.run()
    at = map_own_file(at)
    assert frame_with(at, "taken as")[["taken as", "valid"]].values.tolist() == [["scores", 3]]


def test_values_of_an_identifier_like_column_are_never_shown(db_file: Path) -> None:
    text = "Pseudonym,Patient name,Visit date,Score\nP1,Alex Doe,2025-05-01,5\n"
    at = upload(import_page(), ("names.csv", text))
    widget(at.selectbox, "_kind").set_value("scores").run()
    widget(at.radio, "_layout").set_value("long").run()
    widget(at.selectbox, "_col_instrument").set_value("Patient name").run()
    assert not at.exception, at.exception
    shown = [s.label for s in at.selectbox] + [str(d.value.to_csv()) for d in at.dataframe]
    shown += [str(e.value) for e in (*at.markdown, *at.caption, *at.warning, *at.error, *at.info)]
    assert not any("Alex Doe" in text for text in shown)


REDCAP = (
    "record_id,redcap_event_name,redcap_repeat_instrument,phq9_date,"
    + ",".join(f"phq9_{n}" for n in range(1, 10))
    + "\n101,baseline_arm_1,,2025-01-10,2,2,2,2,2,2,2,2,0\n"
    "101,month_3_arm_1,,2025-04-10,1,1,1,1,1,0,0,0,0\n"
)


def test_a_redcap_export_is_offered_as_the_redcap_layout_with_its_events_table(db_file: Path) -> None:
    at = upload(import_page(), ("redcap_export.csv", REDCAP))
    assert widget(at.radio, "_layout").value == "redcap"
    # REDCap's own field names are preselected: the record, the event, the PHQ-9 date and items.
    assert widget(at.selectbox, "_redcap_col_patient_id").value == "record_id"
    assert widget(at.selectbox, "_redcap_col_event").value == "redcap_event_name"
    assert widget(at.selectbox, "_date_PHQ9").value == "phq9_date"
    assert widget(at.selectbox, "_PHQ9_col_item_9").value == "phq9_9"
    # The events → phase table lists the export's events.
    for event, phase in (("baseline_arm_1", "preparation"), ("month_3_arm_1", "follow-up")):
        next(s for s in at.selectbox if s.label == kapui.md_escape(event)).set_value(phase).run()
    at.checkbox(key="import_new_patients").check().run()  # record 101 is a new patient
    assert not at.exception, at.exception
    assert frame_with(at, "taken as")[["taken as", "rows read", "valid", "rejected"]].values.tolist() == [
        ["scores", 2, 2, 0]
    ]
    at.button(key="import_commit").click().run()
    assert not at.exception, at.exception
    with db.reader(db_file) as con:
        rows = con.execute(
            "SELECT patient_id, strftime(assessed_on, '%Y-%m-%d'), total, phase FROM scores "
            "WHERE batch_id = 4 "
            "ORDER BY assessed_on"
        ).fetchall()
    # Items 2×8 = 16 and 1×5 = 5; the record id is replaced by a keyed pseudonym (never stored as 101).
    assert [r[1:] for r in rows] == [("2025-01-10", 16, "preparation"), ("2025-04-10", 5, "follow-up")]
    assert rows[0][0] == rows[1][0] != "101"
    assert rows[0][0].startswith("R") and len(rows[0][0]) == 11


def test_a_file_value_shown_as_a_value_map_label_is_text_not_markdown(db_file: Path) -> None:
    beacon = "![x](https://example.invalid/b.png)"
    text = OWN.replace("GAD7 Anxiety", beacon)
    at = upload(import_page(), ("clinic_export.csv", text))
    widget(at.selectbox, "_col_instrument").set_value("Measure").run()
    labels = [s.label for s in at.selectbox]
    assert beacon not in labels  # it would render as an image fetched from that host
    assert kapui.md_escape(beacon) in labels
