"""Research export: build a filter, preview the de-identified rows, download data + dictionary + manifest."""

import streamlit as st

import kapui
from kapdata import export as ex
from kapdata import instruments as reg
from kapui import export as ui

SHAPE_LABELS = {"long": "Long", "wide": "Wide", "outcomes": "Outcomes", "sessions": "Sessions"}
FORMAT_LABELS = {"csv": "CSV", "parquet": "Parquet"}
DATE_LABELS = {
    "relative": "Days from first dose",
    "week": "Weeks from first dose",
    "calendar": "Calendar dates",
}
QI_LABELS = {
    "age_band": "Age band",
    "sex": "Sex",
    "clinic": "Clinic",
    "primary_condition": "Condition",
    "route": "Route",
}
QI_KEY = "rx_qis"

path = kapui.initialise()
version = kapui.data_version(path)
cohort = kapui.sidebar_filters(path)
opts = kapui.filter_options(path, version)
if QI_KEY not in st.session_state:
    # The default columns: the most patient characteristics that pass the k-anonymity floor.
    default = ui.preview(path, version, ex.ExportSpec(cohort=cohort)).k_anonymity.quasi_identifiers
    st.session_state[QI_KEY] = list(default)


def leave_out(columns: tuple[str, ...]) -> None:
    st.session_state[QI_KEY] = [q for q in st.session_state[QI_KEY] if q not in columns]


st.title("Research export")
st.caption(
    "A de-identified dataset for research. Patients are re-keyed for every export (P0001…), dates become "
    "days from the first dosing session, and the download holds the data, a data dictionary, Table 1 and a "
    "manifest that records how it was made. An export whose k-anonymity is under the floor (a setting) is "
    "refused. Treatment start, clinic, provider, route and condition are in the sidebar."
)

with st.container(border=True):
    c = st.columns([4, 2, 3])
    shape = c[0].segmented_control(
        "Shape",
        ex.SHAPES,
        format_func=SHAPE_LABELS.get,
        required=True,
        default="long",
        key="rx_shape",
        wrap=True,
    )
    file_format = c[1].segmented_control(
        "Format",
        ex.FORMATS,
        format_func=FORMAT_LABELS.get,
        required=True,
        default="csv",
        key="rx_format",
        wrap=True,
    )
    dates_choice = c[2].segmented_control(
        "Dates",
        tuple(d for d in DATE_LABELS if d != "calendar" or kapui.principal().may("export.calendar")),
        format_func=DATE_LABELS.get,
        required=True,
        default="relative",
        key="rx_dates",
        wrap=True,
        help="Days from the patient's first dosing session (default: no calendar dates to match on); "
        "weeks (no exact day gaps either, so score sequences are harder to match with the clinic's "
        "records); or calendar dates as well (protects against nothing date-based).",
    )
    dates = "calendar" if dates_choice == "calendar" else "relative"
    days = "week" if dates_choice == "week" else "day"
    st.caption(f"**{SHAPE_LABELS[shape]}**: {ex.SHAPE_HELP[shape]}.")
    if dates == "calendar":
        st.warning(
            "Calendar dates make patients easier to re-identify: choose them only if your approval covers "
            "it. The manifest records the choice (`calendar_dates_included: true`)."
        )

with st.container(border=True):
    c = st.columns(4)
    instruments = c[0].multiselect("Scales", list(reg.BY_CODE), placeholder="All scales", key="rx_scales")
    choices = ex.phase_choices(shape)
    phases = c[1].multiselect(
        "Phases",
        choices,
        placeholder="All phases" if choices else "Not used for sessions",
        disabled=not choices,
        key=f"rx_phases_{shape}",
        help="Long: the phase of each questionnaire. Wide and outcomes: the endpoint phases (the baseline is "
        "always included; latest = the last score after baseline).",
    )
    age_bands = c[2].multiselect("Age band", opts.age_bands, placeholder="All age bands", key="rx_age")
    sexes = c[3].multiselect("Sex", opts.sexes, placeholder="All", key="rx_sex")
    c = st.columns([1, 1, 2])
    min_scores = c[0].number_input(
        "Minimum questionnaires per patient",
        min_value=0,
        max_value=1000,
        step=1,
        key="rx_min",
        help="Questionnaires of the chosen scales, in any phase.",
    )
    completers = c[1].checkbox(
        "Completers only",
        key="rx_completers",
        help="Per scale: a baseline and a score in a chosen endpoint phase (any later score if none is "
        "chosen).",
    )
    items = c[1].checkbox(
        "Item responses",
        value=True,
        key="rx_items",
        disabled=shape != "long",
        help="item_1 … item_N (long shape).",
    )
    if shape == "outcomes":
        qis: list[str] = []
        c[2].caption("The outcomes shape has exactly the columns of `python -m kapdata outcomes`.")
    else:
        qis = c[2].pills(
            "Patient characteristics (quasi-identifiers)",
            ex.QUASI_IDENTIFIERS,
            selection_mode="multi",
            format_func=QI_LABELS.get,
            key=QI_KEY,
            wrap=True,
            help="Columns that could single a patient out in combination; the k-anonymity check covers them.",
        )

spec = ex.ExportSpec(
    cohort=cohort,
    instruments=tuple(instruments),
    phases=tuple(phases),
    age_bands=tuple(age_bands),
    sexes=tuple(sexes),
    min_scores=int(min_scores),
    completers_only=completers,
    shape=shape,
    file_format=file_format,
    dates=dates,
    quasi_identifiers=tuple(qis),
    items=items,
    days=days,
)
pv = ui.preview(path, version, spec)
k = pv.k_anonymity

st.subheader("Preview")
m = st.columns([1, 1, 1, 1, 2])
m[0].metric("Rows", f"{pv.rows:,}")
m[1].metric("Patients", f"{pv.patients:,}")
m[2].metric("Columns", f"{len(pv.columns)}")
m[3].metric(
    "k-anonymity",
    "–" if k.k is None else f"{k.k:,}",
    help=f"The fewest patients sharing one combination of {', '.join(k.quasi_identifiers) or 'no columns'}. "
    f"Under {k.threshold} (the k-anonymity floor setting) the export is refused.",
)
if k.refused:
    m[4].error("Download refused: k-anonymity under the floor.", icon=":material/block:")
else:
    m[4].download_button(
        f"Download .zip ({SHAPE_LABELS[shape].lower()}, {FORMAT_LABELS[file_format]})",
        data=ui.download(path, spec),
        file_name=ex.zip_name(spec),
        mime="application/zip",
        on_click="ignore",
        type="primary",
        icon=":material/download:",
        disabled=pv.rows == 0,
        key="rx_download",
        help=f"{spec.data_file}, {ex.DICTIONARY_FILE}, {ex.TABLE1_FILE} and {ex.MANIFEST_FILE} (filters, "
        "counts, definitions in force, sha256 of each file, k-anonymity).",
    )
m[4].caption("Patient keys are drawn afresh for each download.")
if pv.rows == 0:
    st.info("No data matches these filters.")
if k.warning:
    w = st.columns([5, 1], vertical_alignment="center")
    w[0].error(k.refusal or k.warning, icon=":material/block:")
    if k.suggested_drop and shape != "outcomes":
        labels = ", ".join(QI_LABELS[q] for q in k.suggested_drop)
        w[1].button(
            "Leave those out",
            on_click=leave_out,
            args=(k.suggested_drop,),
            key="rx_leave_out",
            width="stretch",
            help=f"Remove {labels} from the patient characteristics.",
        )

left, right = st.columns([3, 2])
with left:
    st.markdown(f"**First {len(pv.head)} rows** (of {pv.rows:,})")
    st.dataframe(pv.head, hide_index=True, width="stretch")
with right:
    st.markdown("**Table 1** · patients in the export")
    st.dataframe(pv.table1, hide_index=True, width="stretch")
    st.caption(
        f"Groups of fewer than {pv.min_cell} patients are suppressed and shown as “<{pv.min_cell}”; where "
        "one group alone would be hidden, the next smallest is hidden too, so it cannot be worked out from "
        "the total."
    )
