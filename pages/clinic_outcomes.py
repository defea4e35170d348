"""Clinic outcomes: aggregate treatment response of a cohort, for clinic directors."""

import streamlit as st

import kapui
from kapdata import benchmarks, cohort
from kapdata.charts import cohort as figs
from kapui import clinic

path = kapui.initialise()
filt = kapui.sidebar_filters(path)

st.title("Clinic outcomes")
ctl = clinic.controls()
if not ctl.scales:
    st.info("Choose at least one scale.")
    st.stop()
axis = st.session_state.get("co_axis", "phase")
rep = clinic.report(
    path, kapui.data_version(path), filt, ctl.scales, ctl.endpoint, ctl.breakdown, axis == "week"
)
pop, end, who = ctl.population, ctl.endpoint_label, ctl.population_label.lower()
st.info(
    f"**{cohort.POPULATION_HELP[pop]}** Every outcome figure on this page is for "
    "this group; the retention and dosing-session counts do not depend on it. "
    f"Data up to {rep.as_of or '–'}.",
    icon=":material/groups:",
)

# Headline
tiles = rep.tiles()
c = st.columns(5)
helps = dict(zip(rep.funnel["stage"], rep.funnel["help"], strict=True))
c[0].metric("Patients in cohort", f"{tiles['enrolled']:,}", help=helps["enrolled"])
c[1].metric("Started dosing", f"{tiles['first_dose']:,}", help=helps["first_dose"])
c[2].metric("Finished dosing", f"{tiles['dosing_complete']:,}", help=helps["dosing_complete"])
c[3].metric("Reached integration", f"{tiles['integration']:,}", help=helps["integration"])
c[4].metric("Reached follow-up", f"{tiles['follow_up']:,}", help=helps["follow_up"])
st.subheader(f"Response and remission at {end.lower()} · {who}")
head = cohort.headline(rep, pop)
clinic.headline_cards(rep, head, pop)

# Phase table
st.subheader(f"Outcomes by phase · {who}")
st.caption(
    f"Rates: % (Wilson 95% CI) k/n; means with a 95% t-interval. {clinic.WARN} shaded: fewer than "
    f"{rep.min_cell} patients (min_cell, a setting), read with care. Remission, recovery and reliable "
    "recovery count only patients who started in the clinical range (as NHS Talking Therapies); response "
    "needs a baseline above 0."
)
table = cohort.phase_table(rep, pop)
scores, change = clinic.phase_display(table)
st.dataframe(scores.style.map(clinic.mark_small), hide_index=True, height=38 + 35 * len(scores))
clinic.table(change, table.assign(population=pop), f"phase table {pop}", all_rows=True)

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
traj = cohort.trajectory(rep, pop, axis)
group_label = cohort.DIMENSION_LABELS[ctl.breakdown] if ctl.breakdown else None
fig = figs.trajectory(traj, by=axis, scales=ctl.scales, group_label=group_label)
clinic.chart(fig, f"trajectory by {axis} {pop}", traj)
if axis == "week":
    st.caption(
        "Completers: the scores seen each week. Intention-to-treat: each patient's last score carried "
        "forward through the weeks the data can cover. Open markers: fewer than min_cell patients."
    )

# Severity shift and waterfall
st.subheader(f"Severity shift and change per patient · {who}")
shift = cohort.shift_table(rep, pop)
clinic.chart(
    figs.severity_shift(shift, scales=ctl.scales, endpoint_label=end), f"severity shift {pop}", shift
)
fall = rep.waterfall[rep.waterfall["population"] == pop]
fig = figs.waterfall(fall, scales=ctl.scales, thresholds=rep.thresholds, endpoint_label=end)
clinic.chart(fig, f"waterfall {pop}", fall)

# Retention
st.subheader("Retention through the phases")
left, right = st.columns(2)
with left:
    clinic.chart(figs.funnel(rep.funnel), "retention funnel")
with right:
    clinic.table(clinic.funnel_display(rep.funnel), rep.funnel, "retention")
    st.caption(clinic.funnel_caption(rep.funnel))

# Breakdown
st.subheader(f"Breakdown · {who}")
if ctl.breakdown is None:
    st.caption("Choose a breakdown above (clinic, provider, route or condition) to compare groups.")
else:
    groups = cohort.breakdown_table(rep, pop)
    fig = figs.breakdown(groups, scales=ctl.scales, group_label=group_label or "", endpoint_label=end)
    clinic.chart(fig, f"breakdown {ctl.breakdown} {pop}")
    first = {"instrument": "Scale", "group": group_label or "Group", "n": "n"}
    shown = clinic.rates_display(groups, {"response": "Response", "remission": "Remission"}, first)
    clinic.table(shown, groups.assign(population=pop, dimension=ctl.breakdown), f"breakdown {ctl.breakdown}")

# Safety
st.subheader(f"Safety · {who}")
clinic.safety_section(rep, ctl)

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
    clinic.published_section(head, published, ctl)
