"""Clinic outcomes: aggregate treatment response of a cohort, for clinic directors."""

import streamlit as st

import kapui
from kapdata import benchmarks, cohort
from kapui import clinic

path = kapui.initialise()
filt = kapui.sidebar_filters(path)

st.title("Clinic outcomes")
ctl = clinic.controls()
if not ctl.scales:
    st.info("Choose at least one scale.")
    st.stop()
axis = st.session_state.get("co_axis", "phase")
choices = clinic.Choices(filt, ctl.scales, ctl.endpoint, ctl.breakdown, axis == "week")
view = clinic.view(path, kapui.data_version(path), choices)
rep = view.rep
pop, end, who = ctl.population, ctl.endpoint_label, ctl.population_label.lower()
st.info(
    f"**{cohort.POPULATION_HELP[pop]}** Every outcome figure on this page is for "
    "this group; the retention and dosing-session counts do not depend on it. "
    f"Data up to {rep.as_of or '–'}.",
    icon=":material/groups:",
)

# Headline
tiles = view.part("tiles", rep.tiles)
c = st.columns(5)
helps = view.part("helps", lambda: dict(zip(rep.funnel["stage"], rep.funnel["help"], strict=True)))
c[0].metric("Patients in cohort", f"{tiles['enrolled']:,}", help=helps["enrolled"])
c[1].metric("Started dosing", f"{tiles['first_dose']:,}", help=helps["first_dose"])
c[2].metric("Finished dosing", f"{tiles['dosing_complete']:,}", help=helps["dosing_complete"])
c[3].metric("Reached integration", f"{tiles['integration']:,}", help=helps["integration"])
c[4].metric("Reached follow-up", f"{tiles['follow_up']:,}", help=helps["follow_up"])
st.subheader(f"Response and remission at {end.lower()} · {who}")
head = clinic.headline(view, pop)
clinic.headline_cards(view, head, pop)

# Phase table
st.subheader(f"Outcomes by phase · {who}")
st.caption(
    f"Rates: % (Wilson 95% CI) k/n; means with a 95% t-interval. {clinic.WARN} shaded: fewer than "
    f"{rep.min_cell} patients (min_cell, a setting), read with care. Remission, recovery and reliable "
    "recovery count only patients who started in the clinical range (as NHS Talking Therapies); response "
    "needs a baseline above 0."
)
table, scores, change = clinic.phase_parts(view, pop)
st.dataframe(clinic.styled(scores), hide_index=True, height=38 + 35 * len(scores))
clinic.table(change, table, f"phase table {pop}", all_rows=True)

# Trajectory
st.subheader(f"Mean trajectory · {who}")
st.radio(
    "Trajectory by",
    ("phase", "week"),
    format_func={"phase": "by phase", "week": "by week since first dose"}.get,
    horizontal=True,
    key="co_axis",
    label_visibility="collapsed",
)
group_label = cohort.DIMENSION_LABELS[ctl.breakdown] if ctl.breakdown else None
traj, fig = clinic.trajectory_parts(view, pop, axis, ctl.scales, group_label)
clinic.chart(fig, f"trajectory by {axis} {pop}", traj, key="trajectory")
if axis == "week":
    st.caption(
        "Completers: the scores seen each week. Intention-to-treat: each patient's last score carried "
        "forward through the weeks the data can cover. Open markers: fewer than min_cell patients."
    )

# Severity shift and waterfall
st.subheader(f"Severity shift and change per patient · {who}")
shift, fig = clinic.shift_parts(view, pop, ctl.scales, end)
clinic.chart(fig, f"severity shift {pop}", shift, key="severity shift")
fall, fig = clinic.waterfall_parts(view, pop, ctl.scales, end)
clinic.chart(fig, f"waterfall {pop}", fall, key="waterfall")

# Retention
st.subheader("Retention through the phases")
fig, shown, caption = clinic.funnel_parts(view)
left, right = st.columns(2)
with left:
    clinic.chart(fig, "retention funnel")
with right:
    clinic.table(shown, rep.funnel, "retention")
    st.caption(caption)

# Breakdown
st.subheader(f"Breakdown · {who}")
if ctl.breakdown is None:
    st.caption("Choose a breakdown above (clinic, provider, route or condition) to compare groups.")
else:
    groups, fig, shown = clinic.breakdown_parts(view, pop, ctl.scales, group_label or "", end)
    clinic.chart(fig, f"breakdown {ctl.breakdown} {pop}", key="breakdown")
    clinic.table(shown, groups, f"breakdown {ctl.breakdown}")

# Safety
st.subheader(f"Safety · {who}")
clinic.safety_section(view, ctl)

# Published results, beside (never inside) the clinic's figures
st.subheader("Published results beside this cohort")
st.caption(
    "Other studies' results, not this clinic's data, and never part of the figures above. Both analysed "
    "patients with enough data after the induction course (closest to **completers**); their patients, "
    "routes and endpoints differ from yours, so read them as a rough guide."
)
published = benchmarks.published(ctl.scales)
if published.empty:
    st.caption("No published results for the chosen scales.")
else:
    clinic.published_section(view, head, published, ctl)
