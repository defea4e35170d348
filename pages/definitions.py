"""Definitions: every metric, threshold and phase rule in plain words, generated from the scale registry."""

import streamlit as st

import kapui
from kapdata import benchmarks
from kapdata import definitions as defs
from kapdata import instruments as reg
from kapui import data

path = kapui.initialise()
current = data.current_settings(path, kapui.data_version(path))


def show(items: list[defs.Definition]) -> None:
    for d in items:
        text = f"**{d.term}.** {d.meaning}"
        if d.formula:
            text += f"  \n`{d.formula}`"
        if d.source:
            text += f"  \n*Source:* {d.source}"
        st.markdown(text)


st.title("Definitions")
st.caption(
    "Generated from the scale registry and the thresholds in force in this database, so it always says "
    "what the numbers are computed from. A value changed on the Settings page shows here with its default."
)
st.download_button(
    "Download these definitions (Markdown)",
    defs.markdown(current),
    file_name="kap-definitions.md",
    mime="text/markdown",
)

st.subheader("Settings in force")
st.caption(
    "The general settings the definitions below use, each beside its default; change them on the Settings "
    "page."
)
st.dataframe(defs.settings_table(current).drop(columns=["key"]), hide_index=True, width="stretch")

st.subheader("Phases of care")
st.caption("Each questionnaire is placed in a phase from the patient's dosing sessions.")
show(defs.phase_rules(current))

st.subheader("Scales")
st.table(defs.registry_table(current).set_index(""))
st.markdown("**Where each threshold comes from**")
st.caption(
    "The source of each default: a publication listed in full under the scale's sources, or this product's "
    "convention where no publication gives the number."
)
st.dataframe(defs.threshold_sources_table(current), hide_index=True, width="stretch")
for inst in reg.INSTRUMENTS:
    with st.expander(f"{inst.code} items, LOINC codes and sources"):
        st.dataframe(defs.item_table(inst), hide_index=True, width="stretch")
        st.markdown("\n".join(f"- {src}" for src in inst.sources))

left, right = st.columns(2, gap="large")
with left:
    st.subheader("Outcome measures (per patient)")
    show(defs.metric_definitions(current))
    show([defs.pcl5_diagnosis()])
with right:
    st.subheader("Clinic-level numbers")
    show(defs.cohort_definitions(current))
    st.subheader("Flags on a patient")
    show(defs.flag_definitions(current))
    st.subheader("Dosing sessions")
    show(defs.session_definitions())

st.subheader("Published results from other studies")
st.caption(benchmarks.COMPARISON_NOTE)
st.table(defs.benchmark_table().set_index("study"))
for citation in defs.benchmark_citations():
    st.caption(citation)
