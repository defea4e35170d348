"""KAP Outcomes: ``streamlit run dashboard.py`` (optionally ``-- --db PATH``).

Sign-in comes first: once any account exists or organisation sign-in is configured, nothing but the sign-in
page runs until the person has signed in. The navigation then lists only the pages the role may open; any
other page's address shows "Not permitted" and is audited.
"""

from pathlib import Path

import streamlit as st

import kapui
from kapui import auth

# The icon is a file served by the app itself: a Material icon as page_icon makes the browser fetch the
# favicon from Google's font server on every page (fails offline, and tells a third party the app is open).
ICON = Path(__file__).resolve().parent / "kapui" / "assets" / "icon.png"
st.set_page_config(page_title="KAP Outcomes", page_icon=str(ICON), layout="wide")
kapui.keep_filter_state()

PAGES = {
    "": [("overview", "Overview", ":material/dashboard:")],
    "Clinicians": [("patient_trends", "Patient trends", ":material/monitor_heart:")],
    "Directors": [("clinic_outcomes", "Clinic outcomes", ":material/insights:")],
    "Researchers": [("research_export", "Research export", ":material/download:")],
    "Data": [
        ("data_import", "Data import", ":material/upload_file:"),
        ("definitions", "Definitions", ":material/menu_book:"),
        ("settings", "Settings", ":material/settings:"),
    ],
    "Administration": [
        ("users", "Users", ":material/group:"),
        ("audit", "Audit", ":material/fact_check:"),
    ],
}
STEMS = [stem for group in PAGES.values() for stem, _, _ in group]

path = kapui.database_path()
failure: Exception | None = None
try:
    who = auth.gate(path)
except Exception as exc:  # the database or the audit trail cannot be read: words only, no page runs
    failure, who = exc, None


if failure is not None:
    # Registered so that any address is known, but no page runs: the one-line error alone.
    st.navigation(
        [st.Page(f"pages/{stem}.py", default=stem == "overview") for stem in STEMS], position="hidden"
    )
    kapui.show_error(failure)
    st.stop()


def _sign_in_at(stem: str):
    def sign_in() -> None:
        auth.sign_in_page(path)

    sign_in.__name__ = f"sign_in_{stem}"
    return st.Page(sign_in, title="Sign in", url_path=stem, visibility="hidden")


if who is None:
    # Every address leads to the sign-in page (or the one-line error); no page behind it runs.
    def sign_in() -> None:
        auth.sign_in_page(path)

    page = st.navigation(
        [st.Page(sign_in, title="Sign in", default=True)] + [_sign_in_at(stem) for stem in STEMS],
        position="hidden",
    )
    page.run()
    st.stop()

nav: dict[str, list] = {}
hidden = []
first = next(stem for stem in STEMS if who.may_open(stem))
for group, items in PAGES.items():
    for stem, title, icon in items:
        entry = st.Page(f"pages/{stem}.py", title=title, icon=icon, default=stem == first)
        if who.may_open(stem):
            nav.setdefault(group, []).append(entry)
        else:  # known, so a typed or shared address is answered (refused below), never in the menu
            hidden.append(st.Page(f"pages/{stem}.py", title=title, icon=icon, visibility="hidden"))
nav[next(iter(nav))] += hidden
page = st.navigation(nav)
auth.sidebar(path, who)
try:
    if not who.may_open(page.url_path or first):
        auth.deny(
            path, f"page {page.url_path}", page.url_path, "Not permitted: your role cannot open this page."
        )
    with auth.through_gate():
        page.run()
except Exception as exc:  # every page: one line in words, the details only in the server log
    kapui.show_error(exc)
