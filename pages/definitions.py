"""Definitions (placeholder while the page is built; replaced by its issue's work)."""

import streamlit as st

st.title("Definitions")
st.info("This page is being built.")
