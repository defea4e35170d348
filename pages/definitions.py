"""Definitions: every metric, threshold and phase rule in plain words, generated from the scale registry."""

import streamlit as st

import kapui
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

st.subheader("Phases of care")
st.caption("Each questionnaire is placed in a phase from the patient's dosing sessions.")
show(defs.phase_rules(current))

st.subheader("Scales")
st.table(defs.registry_table(current).set_index(""))
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

st.subheader("Published results from other studies")
st.caption(
    "Other studies' patients, for comparison only: not this clinic's data, and different settings, "
    "populations and follow-up times."
)
st.table(defs.benchmark_table().set_index("study"))
for citation in dict.fromkeys(b.citation for b in defs.BENCHMARKS):
    st.caption(citation)
