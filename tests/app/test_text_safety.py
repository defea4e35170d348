"""Text a user or a file supplied is shown as text: Markdown in it is never rendered."""

from __future__ import annotations

import re

from streamlit.testing.v1 import AppTest

import kapui
from tests.conftest import (
    PATIENTS_HEADER,
    SCORES_HEADER,
    SESSIONS_HEADER,
    csv_lines,
    load,
    sessions_rows,
    write_text,
)

from .conftest import ROOT

HOSTILE = "![beacon](http://tracker.example/p.png) [click](https://evil.example) www.evil.example :red[x] *b*"


def test_md_escape_leaves_no_markdown_construct() -> None:
    text = kapui.md_escape(HOSTILE)
    # every special character is escaped: no image, link, autolink, directive or emphasis survives
    assert re.search(r"(?<!\\)[\[\]()!*:]", text) is None
    assert text.replace("\\", "") == HOSTILE


def test_an_escaped_message_renders_as_the_characters_it_is() -> None:
    def page() -> None:
        import streamlit as st

        import kapui

        st.error(kapui.md_escape("![beacon](http://tracker.example/p.png) [click](https://evil.example)"))

    at = AppTest.from_function(page).run()
    shown = at.error[0].value
    assert "\\!\\[beacon\\]" in shown and "\\(http\\://tracker" in shown


def _patient_page(monkeypatch, db_file, patient_id: str) -> AppTest:
    """The app on ``db_file``, opened at one patient by its link."""
    from kapui import patient as ui

    monkeypatch.setenv("KAP_DB", str(db_file))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
    at.query_params[ui.PARAM] = patient_id
    at.run()
    at.switch_page("pages/patient_trends.py").run()
    assert not at.exception, at.exception
    return at


def test_a_clinic_name_with_a_link_and_an_image_is_shown_as_text_in_the_patient_view(tmp_path, monkeypatch):
    clinic = "[Clinic](https://evil.example) ![b](http://tracker.example/p.png)"
    at = _patient_page(monkeypatch, _small_db(tmp_path, clinic=clinic), "X1")
    shown = [m.value for m in at.markdown if "Clinic" in m.value and "evil" in m.value]
    assert shown, "the header strip shows the clinic"
    for value in shown:
        assert "](https" not in value and "![" not in value  # no link or image syntax survives unescaped
        assert kapui.md_escape(clinic) in value


def _small_db(
    tmp_path, patient_id: str = "X1", patients_name: str = "patients.csv", clinic: str = "Northside"
):
    """One patient, one session, one PHQ-9: a database for the page tests of this module."""
    db_file = tmp_path / "kap.duckdb"
    load(
        db_file,
        write_text(
            tmp_path / patients_name,
            csv_lines(PATIENTS_HEADER, [(patient_id, clinic, "PR1", "25-34", "female", "MDD", "IV")]),
        ),
        write_text(
            tmp_path / "sessions.csv", csv_lines(SESSIONS_HEADER, sessions_rows(patient_id, ["2025-03-01"]))
        ),
        write_text(
            tmp_path / "scores.csv", csv_lines(SCORES_HEADER, [(patient_id, "PHQ-9", "2025-02-20", 14)])
        ),
    )
    return db_file


def test_a_patient_id_with_underscores_is_its_own_characters_in_the_title(tmp_path, monkeypatch):
    at = _patient_page(monkeypatch, _small_db(tmp_path, "__K9__"), "__K9__")
    assert [t.value for t in at.title] == ["Patient \\_\\_K9\\_\\_"]  # not "Patient **K9**" (bold)


def test_a_file_name_with_markdown_is_text_in_the_undo_confirmation(tmp_path, monkeypatch):

    name = "![b](https:tracker.example?b.png) **www.evil.example**.csv"
    monkeypatch.setenv("KAP_DB", str(_small_db(tmp_path, patients_name=name)))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60).run()
    at.switch_page("pages/data_import.py").run()
    assert not at.exception, at.exception
    at.selectbox(key="undo_batch").set_value(1).run()  # batch 1: the patients file
    [label] = [c.label for c in at.checkbox if c.label.startswith("Yes, remove ")]
    assert kapui.md_escape(name) in label and "![" not in label and "**" not in label


def test_a_typed_e_mail_with_markdown_is_text_in_the_users_page_message(tmp_path, monkeypatch):
    import datetime as dt

    from kapdata import accounts

    db_file = _small_db(tmp_path)
    accounts.add(db_file, "admin@clinic.example", "admin", (), "correct horse battery")
    monkeypatch.setenv("KAP_DB", str(db_file))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    at.session_state["_kap_auth"] = {
        "email": "admin@clinic.example",
        "source": "local",
        "signed_in_at": now,
        "last_seen": now,
    }
    at.run()
    at.switch_page("pages/users.py").run()
    hostile = "![x](https://tracker.example/p.png)@a.bc"
    at.text_input(key=next(t.key for t in at.text_input if t.label == "E-mail")).input(hostile)
    next(b for b in at.button if b.label == "Add account").click().run()
    assert not at.exception, at.exception
    [shown] = [s.value for s in at.success]
    assert kapui.md_escape(hostile) in shown and "![" not in shown
