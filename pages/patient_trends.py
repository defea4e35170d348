"""Patient trends (placeholder while the page is built; replaced by its issue's work)."""

import streamlit as st

st.title("Patient trends")
st.info("This page is being built.")
