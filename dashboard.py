"""KAP Outcomes: ``streamlit run dashboard.py`` (optionally ``-- --db PATH``)."""

from pathlib import Path

import streamlit as st

import kapui

# The icon is a file served by the app itself: a Material icon as page_icon makes the browser fetch the
# favicon from Google's font server on every page (fails offline, and tells a third party the app is open).
ICON = Path(__file__).resolve().parent / "kapui" / "assets" / "icon.png"
st.set_page_config(page_title="KAP Outcomes", page_icon=str(ICON), layout="wide")
kapui.keep_filter_state()

page = st.navigation(
    {
        "": [st.Page("pages/overview.py", title="Overview", icon=":material/dashboard:", default=True)],
        "Clinicians": [
            st.Page("pages/patient_trends.py", title="Patient trends", icon=":material/monitor_heart:"),
        ],
        "Directors": [
            st.Page("pages/clinic_outcomes.py", title="Clinic outcomes", icon=":material/insights:"),
        ],
        "Researchers": [
            st.Page("pages/research_export.py", title="Research export", icon=":material/download:"),
        ],
        "Data": [
            st.Page("pages/data_import.py", title="Data import", icon=":material/upload_file:"),
            st.Page("pages/definitions.py", title="Definitions", icon=":material/menu_book:"),
            st.Page("pages/settings.py", title="Settings", icon=":material/settings:"),
        ],
    }
)
try:
    kapui.initialise()
    page.run()
except Exception as exc:  # every page: one line in words, the details only in the server log
    kapui.show_error(exc)
