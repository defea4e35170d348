"""Overview: what is loaded, and the headline outcomes at each patient's latest score."""

import streamlit as st

import kapui
from kapdata import charts
from kapdata import instruments as reg

path = kapui.initialise()
data = kapui.overview(path, kapui.data_version(path))

st.title("KAP Outcomes")
# Where the database file lives on the server is for the people who run it (admin), not every reader.
where = f"Database: `{path}` · " if kapui.principal().may("settings") else ""
st.caption(
    "Outcomes of ketamine-assisted psychotherapy across preparation, dosing, integration and follow-up. "
    f"{where}Scores from {data.first_score or '–'} to {data.last_score or '–'}."
)

c = st.columns(5)
c[0].metric("Patients", f"{data.patients:,}", help="Pseudonymous patients in the database.")
c[1].metric("Started dosing", f"{data.started_dosing:,}", help="Patients with at least one dosing session.")
c[2].metric("Dosing sessions", f"{data.sessions:,}")
c[3].metric("Questionnaires", f"{data.scores:,}", help="Completed PHQ-9, GAD-7 and PCL-5 questionnaires.")
c[4].metric(
    "Import batches",
    f"{data.batches:,}",
    help="Files loaded and not undone that brought in rows of the patients you may see.",
)

st.subheader("Headline outcomes at the latest assessment")
st.caption(
    "Completers: patients with a baseline (last preparation score) and at least one later score. "
    "Rates with Wilson 95% confidence intervals."
)
if not data.headline:
    st.info("No outcomes yet: load scores with a baseline to see response and remission.")
cols = st.columns(max(1, len(data.headline)))
for col, row in zip(cols, data.headline, strict=False):
    inst = reg.get(row["instrument"])
    rates = row["rates"]["completers"]
    rules = data.thresholds.get(inst.code) or {
        "caseness": inst.caseness,
        "response_pct": inst.response_pct,
        "remission_below": inst.remission_below,
    }
    with col.container(border=True):
        st.markdown(f"**{inst.code}** · {inst.construct}")
        st.metric(
            "Response",
            "–" if rates["response"]["rate"] is None else f"{100 * rates['response']['rate']:.0f}%",
            help=f"≥ {rules['response_pct']}% reduction from baseline, among completers with a baseline "
            "above 0 (response is undefined for a baseline of 0).",
        )
        st.caption(f"{kapui.fmt_rate(rates['response'])} · n: completers with a baseline above 0")
        st.metric(
            "Remission",
            "–" if rates["remission"]["rate"] is None else f"{100 * rates['remission']['rate']:.0f}%",
            help=f"Latest score below {rules['remission_below']}, among completers whose baseline was in the "
            f"clinical range (total ≥ {rules['caseness']}); a patient who started below it cannot remit.",
        )
        st.caption(
            f"{kapui.fmt_rate(rates['remission'])} · n: completers with a baseline ≥ {rules['caseness']}"
        )
        st.caption(
            f"{row['completers']:,} completers of {row['patients_with_baseline']:,} with a baseline. "
            "k/n under each rate: n is the completers the rate is defined for, so it can be smaller."
        )

left, right = st.columns([3, 2])
with left:
    st.plotly_chart(charts.scores_by_phase(data.scores_by_phase), width="stretch")
with right:
    st.markdown("**Patients by phase of their latest questionnaire**")
    st.dataframe(data.patients_by_phase, hide_index=True, width="stretch")
