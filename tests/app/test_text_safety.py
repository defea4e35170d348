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
