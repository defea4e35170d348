"""Data import: upload files, read the validation report, commit or cancel; import history with undo."""

import streamlit as st

import kapui
from kapui import data
from kapui import mapping as mapping_ui

path = kapui.initialise()
limit = data.max_upload_mb()

st.title("Data import")
st.caption(
    "Load patients, dosing sessions and questionnaire scores, exactly as `python -m kapdata load` does: "
    "the three native files, FHIR R4, a REDCap export, or any spreadsheet through a column mapping. "
    "Files are checked first; nothing reaches the database until you commit, and a commit is all or "
    f"nothing. Database: `{path}`."
)

outcome = data.last_outcome()
if outcome is not None:
    (st.success if outcome.ok else st.error)(outcome.message)  # our words and counts only
    for line in outcome.lines:
        st.text(f"• {line}")
    for name, content in outcome.rejects:
        st.download_button(
            f"Download quarantined rows: {kapui.md_escape(name)}", content, file_name=name, mime="text/csv"
        )
    if outcome.report is not None:
        st.dataframe(outcome.report, hide_index=True, width="stretch")

files = st.file_uploader(
    "Patients, sessions or scores files",
    type=list(data.UPLOAD_TYPES),
    accept_multiple_files=True,
    key=data.uploader_key(),
    help="Each file's kind is recognised by its columns: patient_id only → patients, session_date → "
    "sessions, instrument / assessed_on / item_N → scores. Data must arrive anonymized.",
)
st.caption(
    f"Up to {limit} MB per file (`server.maxUploadSize` in `.streamlit/config.toml`) · accepted: CSV "
    "(UTF-8, header row), Parquet, Excel `.xlsx` (first sheet), and FHIR R4 `.json` (a Bundle) or "
    "`.ndjson` (bulk export) · a spreadsheet with its own headers, or a REDCap export, is read through a "
    "column mapping you build below · several files at once are one load, in one transaction."
)
with st.expander("Templates for the three native files"):
    st.caption(
        "The header row and two synthetic example rows each: fill them in, or see what a mapping produces."
    )
    mapping_ui.template_downloads()

options: dict[str, object] = {}
if st.session_state.pop(data.OPTIONS_RESET, False):  # after a commit: set before the boxes are drawn
    st.session_state["import_new_patients"] = False
    st.session_state["import_fhir_pseudonymous"] = False
if st.checkbox(
    "Create new patients",
    value=False,
    key="import_new_patients",
    help="Off (the default): a session or score for a patient ID that is neither in the database nor in a "
    "patients file (or FHIR Patient) of this load is an error naming the row, so a typo such as K0O173 "
    "cannot create a patient. On: such patients are created, with unknown attributes.",
):
    options["new_patients"] = True
fhir_present = bool(files) and any(mapping_ui.is_fhir(f.name) for f in files)
if fhir_present and st.checkbox(
    "These FHIR ids are already pseudonymous",
    value=False,
    key="import_fhir_pseudonymous",
    help="Off (the default): each FHIR Patient id is replaced by a keyed hash before it is stored. On: "
    "the ids are kept as they are, for an export whose ids are already pseudonyms.",
):
    options[mapping_ui.FHIR_PSEUDONYMOUS_OPTION] = True

mappings: dict[str, object] = {}
for f in files or []:
    if not mapping_ui.is_spreadsheet(f.name):
        continue
    head = mapping_ui.read_head(f)
    if head is None:
        continue  # not readable as a table: the validation report says why
    native = mapping_ui.is_native(head.headers)
    fk = mapping_ui.file_key(f)
    label = kapui.md_escape(f.name)
    if native and not st.toggle(
        f"Map columns of {label}",
        key=f"map_{fk}_on",
        help="This file's headers already make a native file; map its columns anyway (e.g. other values).",
    ):
        continue
    with st.container(border=True):
        st.subheader(f"Mapping: {label}")
        if not native:
            st.caption(
                "This file is not one of the three native files: tell the product which of its columns "
                "holds what. The preview shows the rows as they will be checked."
            )
        chosen = mapping_ui.mapping_step(f, head, path)
    if chosen is not None:
        mappings[f.file_id] = chosen

if files:
    v = data.validate_uploads(files, path, mappings=mappings, options=options)
    if v.failure:
        st.error(f"The files could not be checked: {v.failure}")  # db.explain: our words only
        st.stop()
    counts = data.counts_frame(v)
    st.subheader("What the files hold")
    total = data.totals(counts)
    helps = {
        "valid": "Rows that pass every check.",
        "already present": "Identical rows already in the database: loading them again changes nothing.",
        "new patients": "New rows of patients files, plus patients of sessions or scores files who are in no "
        "patients file (created with unknown attributes, filled in when their patients file arrives).",
    }
    for col, (name, value) in zip(st.columns(len(total)), total.items(), strict=True):
        col.metric(name.capitalize(), f"{value:,}", help=helps.get(name))
    st.dataframe(counts, hide_index=True, width="stretch")

    # Previews were read while the uploads were staged (they are deleted now); identifier columns left out.
    for src, taken, preview in zip(v.sources, counts["taken as"], v.previews, strict=False):
        with st.expander(f"Preview: {kapui.md_escape(src.name)} (taken as {taken})"):
            if preview is None:
                st.caption("No preview: the file cannot be read as a table (the validation report says why).")
            else:
                st.dataframe(preview, width="stretch")

    report = data.report_frame(v.result)
    st.subheader("Validation report")
    if v.errors and v.result is not None:
        st.error(
            f"{data.problems_headline(v)}. As they are, these files would be rejected and the database left "
            "unchanged."
        )
        if data.unknown_patients(v) and not options.get("new_patients"):
            st.info(
                "Some rows name a patient ID that is neither in the database nor in a patients file of this "
                "load. Check them for typos; if they are new patients, tick **Create new patients** above."
            )
        if v.result.unlisted_errors:
            st.caption(
                f"The report lists the first {len(v.errors):,} errors; "
                f"{v.result.unlisted_errors:,} more are counted, not listed."
            )
    else:
        st.success("No errors: every row passes.")
    if len(report):
        st.dataframe(report, hide_index=True, width="stretch")
        st.download_button(
            "Download the report (CSV)",
            data.report_csv(report),
            file_name="validation-report.csv",
            mime="text/csv",
        )

    quarantine = False
    if v.refused:
        st.warning(
            "Refused as a whole: "
            + kapui.md_escape(", ".join(v.refused))
            + ". Fix these files and upload them again; "
            "nothing can be loaded until then."
        )
    elif v.can_quarantine:
        quarantine = st.checkbox(
            "Load the valid rows and quarantine the rest",
            key=f"import_quarantine_{v.token}",
            help="The rejected rows, with their reasons, go to a file to download, correct and load again.",
        )
    elif not v.can_commit:
        st.info("Nothing new to load: every row is already in the database.")
    ready = v.can_commit or quarantine
    if st.button("Commit to the database", type="primary", disabled=not ready, key="import_commit"):
        with st.status("Loading…", expanded=True) as status:
            bar = st.progress(0.0)

            def show(fraction: float, text: str) -> None:
                bar.progress(fraction, text=text)

            result = data.commit(v, path, quarantine=quarantine, progress=show)
            status.update(
                label="Loaded" if result.ok else "Not loaded", state="complete" if result.ok else "error"
            )
        st.rerun()

st.divider()
st.subheader("History")
st.caption(
    "Every file loaded is a batch. Undo removes the batch's rows in one transaction; a patient created by "
    "the batch who is still used by another batch stays, with unknown attributes."
)
history = data.batches(path, kapui.data_version(path))
if history.empty:
    st.info("No batches yet.")
else:
    st.dataframe(history, hide_index=True, width="stretch")
    choices = data.undo_choices(history)
    if choices:
        with st.expander("Undo a batch"):
            data.select_undo_choice(choices)  # the box and the confirmation always name the same batch
            batch = st.selectbox("Batch", list(choices), format_func=choices.get, key=data.UNDO_CHOICE)
            sure = st.checkbox(
                f"Yes, remove {kapui.md_escape(choices[batch])} from the database",  # a file name: text only
                key=f"undo_confirm_{batch}",
                value=False,
            )
            if st.button("Undo batch", disabled=not sure, key="undo_go"):
                try:
                    st.session_state["undo_message"] = (True, data.undo(path, int(batch)))
                except Exception as exc:  # an undo that fails has changed nothing (one transaction)
                    st.session_state["undo_message"] = (
                        False,
                        f"Undo failed; nothing changed. {data.why(exc)}",
                    )
                st.rerun()
if "undo_message" in st.session_state:
    ok, text = st.session_state.pop("undo_message")
    (st.success if ok else st.error)(text)  # our words and counts only
