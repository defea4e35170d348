"""KAP Outcomes: ``streamlit run dashboard.py`` (optionally ``-- --db PATH``)."""

import streamlit as st

import kapui

st.set_page_config(page_title="KAP Outcomes", page_icon=":material/monitoring:", layout="wide")
kapui.initialise()
kapui.keep_filter_state()

page = st.navigation(
    {
        "": [st.Page("pages/overview.py", title="Overview", icon=":material/dashboard:", default=True)],
    }
)
page.run()
