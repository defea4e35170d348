"""Patient trends: the caseload ranked by need for attention, and one patient's view (chosen in the URL)."""

import streamlit as st

import kapui
from kapdata import db
from kapdata import patient as pt
from kapdata.access import NotPermitted
from kapui import auth
from kapui import patient as ui

path = kapui.initialise()
version = kapui.data_version(path)
today = ui.today()
cohort = kapui.sidebar_filters(path, ("clinics", "providers"))
chosen = ui.chosen_patient()
try:
    view = ui.patient_view(path, version, chosen, today) if chosen else None
except NotPermitted as exc:
    auth.deny(path, "patient view", chosen, str(exc))
if view is not None:
    auth.viewed_patient(path, view.patient_id)  # fails closed when sign-in is required
defs = pt.help_texts(view.settings) if view else ui.help_texts(path, version)

if view is None:
    caseload = ui.caseload(path, version, cohort, today)
    st.title("Patient trends")
    n_discharged = int(caseload["discharged"].astype(bool).sum())
    st.caption(
        f"Caseload as of {today:%d %b %Y}: {len(caseload) - n_discharged:,} patients in the sidebar's "
        f"clinics and providers ({n_discharged:,} discharged, hidden unless shown), ranked by need for "
        "attention. Click a row, or choose a patient, to open the patient view."
    )
    if chosen:
        st.warning("No patient with this ID in this database:")
        st.code(chosen, language=None)
        ui.suggestion_buttons(ui.suggestions(ui.patient_ids(path, version, cohort), chosen))
    left, mid, right = st.columns([2, 3, 1.2], vertical_alignment="bottom")
    with mid:
        phases = st.pills(
            "Current phase", db.PHASES, selection_mode="multi", default=list(db.PHASES), help=defs["phase"]
        )
    with right:
        show_discharged = st.toggle(
            "Show discharged", key=ui.SHOW_DISCHARGED_KEY, help=defs["discharge"] + " Listed last."
        )
    shown = ui.shown_caseload(caseload, phases or list(db.PHASES), show_discharged)
    with left:
        ui.patient_picker(shown["patient_id"].tolist(), None)
    counts = ui.flag_counts(shown)
    c = st.columns(5)
    c[0].metric("Patients", f"{len(shown):,}", help="Patients in the table below (its phases).")
    c[1].metric(":material/warning: Safety", counts["flag_safety"], help=defs["safety"])
    c[2].metric(
        ":material/trending_up: Deterioration", counts["flag_deterioration"], help=defs["deterioration"]
    )
    c[3].metric("Overdue", counts["flag_overdue"], help=defs["overdue"])
    c[4].metric("No baseline", counts["flag_no_baseline"], help=defs["no_baseline"])
    clicked = ui.caseload_table(shown, defs)
    if clicked:
        ui.open_patient(clicked)
        st.rerun()
    st.stop()

s = view.status
top = st.columns([4, 1.4, 2.2, 2.2], vertical_alignment="center")
top[0].title(
    f"Patient {kapui.md_escape(view.patient_id)}",
    help="Pseudonymous patient ID: no names or other personal details.",
)
top[1].button("← Caseload", on_click=ui.close_patient, help="Back to the ranked caseload.")
with top[2]:
    ui.patient_picker(ui.patient_ids(path, version, cohort), view.patient_id, label="Patient", compact=True)
top[3].download_button(
    "Progress report (HTML)",
    data=ui.audited_report(path, view),
    file_name=f"progress-{view.patient_id}-{today:%Y%m%d}.html",
    mime="text/html",
    icon=":material/download:",
    on_click="ignore",
    help="A self-contained page (charts, numbers, definitions) that prints cleanly, to share in an "
    "integration session.",
)
ui.header_strip(view, defs)
ui.flag_alerts(view)
ui.record_panel(path, view, defs)

if not view.scales:
    st.info("No questionnaires yet for this patient.")
else:
    cards = st.columns(len(view.scales))
    for col, code in zip(cards, view.scales, strict=True):
        with col:
            ui.scale_card(view, code, defs)
    # Only the open tab is drawn (a tab click reruns the page, its figures cached): each chart costs the
    # browser a noticeable moment, and most visits look at one scale.
    tabs = st.tabs(view.scales, key=ui.scale_tab_key(view.patient_id), on_change="rerun")
    for tab, code in zip(tabs, view.scales, strict=True):
        if tab.open is False:
            continue
        with tab:
            trend, heat = ui.scale_figures(path, version, view, code)
            st.plotly_chart(trend, width="stretch", theme=None, key=f"trend_{code}")
            if heat is not None and st.toggle(
                f"{code} item answers over time",
                key=ui.ITEMS_KEY,
                help="Each questionnaire's answers, item by item (safety items in red). Stays on for the "
                "other scales and patients once switched on.",
            ):
                st.plotly_chart(heat, width="stretch", theme=None, key=f"items_{code}")
            if code == "PCL-5" and not view.pcl5().empty:
                st.markdown("**PCL-5 clusters and the provisional DSM-5 rule**", help=defs["dsm5"])
                st.dataframe(
                    view.pcl5(), hide_index=True, column_config=ui.pcl5_config(defs), placeholder="–"
                )

st.subheader("Session log")
if view.sessions.empty:
    st.caption("No dosing sessions recorded.")
else:
    st.dataframe(
        ui.styled_session_log(view),
        hide_index=True,
        column_config=ui.session_log_config(defs),
        placeholder="–",
    )
st.subheader("Assessments")
st.dataframe(
    ui.styled_assessments(view), hide_index=True, column_config=ui.assessment_config(defs), placeholder="–"
)
