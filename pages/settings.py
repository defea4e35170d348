"""Settings (placeholder while the page is built; replaced by its issue's work)."""

import streamlit as st

st.title("Settings")
st.info("This page is being built.")
