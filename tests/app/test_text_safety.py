"""Text a user or a file supplied is shown as text: Markdown in it is never rendered."""

from __future__ import annotations

import re

from streamlit.testing.v1 import AppTest

import kapui

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


def test_a_clinic_name_with_a_link_and_an_image_is_shown_as_text_in_the_patient_view(tmp_path, monkeypatch):
    from kapui import patient as ui
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

    clinic = "[Clinic](https://evil.example) ![b](http://tracker.example/p.png)"
    db_file = tmp_path / "kap.duckdb"
    load(
        db_file,
        write_text(
            tmp_path / "patients.csv",
            csv_lines(PATIENTS_HEADER, [("X1", clinic, "PR1", "25-34", "female", "MDD", "IV")]),
        ),
        write_text(
            tmp_path / "sessions.csv", csv_lines(SESSIONS_HEADER, sessions_rows("X1", ["2025-03-01"]))
        ),
        write_text(tmp_path / "scores.csv", csv_lines(SCORES_HEADER, [("X1", "PHQ-9", "2025-02-20", 14)])),
    )
    monkeypatch.setenv("KAP_DB", str(db_file))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)
    at.query_params[ui.PARAM] = "X1"
    at.run()
    at.switch_page("pages/patient_trends.py").run()
    assert not at.exception, at.exception
    shown = [m.value for m in at.markdown if "Clinic" in m.value and "evil" in m.value]
    assert shown, "the header strip shows the clinic"
    for value in shown:
        assert "](https" not in value and "![" not in value  # no link or image syntax survives unescaped
        assert kapui.md_escape(clinic) in value
