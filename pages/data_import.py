"""Data import (placeholder while the page is built; replaced by its issue's work)."""

import streamlit as st

st.title("Data import")
st.info("This page is being built.")
