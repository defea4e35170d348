"""Settings: the integration window, flags, smallest reportable group and each scale's thresholds."""

import streamlit as st

import kapui
from kapdata import instruments as reg
from kapdata import settings as ks
from kapui import data

path = kapui.initialise()
current = data.current_settings(path, kapui.data_version(path))
base = ks.defaults()
# Widgets are keyed by the stored values, so after a save or a reset they show what is stored.
gen = current.fingerprint()

st.title("Settings")
st.caption(
    "Stored in the database, so every page and the command line use them: a change here changes the "
    "numbers everywhere at once, and research exports record the values in force."
    + (f" Last changed {current.changed_at}." if current.changed_at else "")
)

message = st.session_state.pop("settings_message", None)
if message:
    st.success(message)

with st.form("settings_form"):
    st.subheader("Phases, flags and reporting")
    general: dict[str, object] = {}
    for col, spec in zip(st.columns(len(ks.GENERAL), vertical_alignment="bottom"), ks.GENERAL, strict=True):
        general[spec.key] = col.number_input(
            f"{spec.label} ({spec.unit})",
            value=current.general[spec.key],
            step=1,
            key=f"set_{gen}_{spec.key}",
            help=f"{spec.help} Allowed: {spec.low}–{spec.high}. Default: {base.general[spec.key]}.",
        )
    st.subheader("Scale thresholds")
    thresholds: dict[str, dict[str, object]] = {}
    for inst in reg.INSTRUMENTS:
        cols = st.columns([1.4] + [2] * len(ks.THRESHOLDS), vertical_alignment="bottom")
        cols[0].markdown(
            f"**{inst.code}**  \n:gray[{inst.construct}  \ntotal {inst.total_min}–{inst.total_max}]"
        )
        thresholds[inst.code] = {}
        for col, spec in zip(cols[1:], ks.THRESHOLDS, strict=True):
            low, high = spec.bounds(inst)
            thresholds[inst.code][spec.key] = col.number_input(
                f"{spec.short} ({spec.unit})",
                value=current.thresholds[inst.code][spec.key],
                step=1,
                key=f"set_{gen}_{inst.code}_{spec.key}",
                help=f"{spec.help} Allowed: {low}–{high}. Default: {base.thresholds[inst.code][spec.key]}.",
            )
    saved = st.form_submit_button("Save settings", type="primary")

if saved:
    try:
        done = data.save_settings(path, general, thresholds)
    except ks.InvalidSettings as exc:
        st.error("Nothing was saved:\n\n" + "\n".join(f"- {p}" for p in exc.problems))
    else:
        if done:
            st.session_state["settings_message"] = "Saved: " + "; ".join(str(c) for c in done) + "."
        else:
            st.session_state["settings_message"] = "Nothing changed."
        st.rerun()

st.subheader("Differences from the defaults")
diffs = ks.differences_from_defaults(current)
if diffs:
    st.dataframe(
        [{"setting": c.label, "in force": c.new, "default": c.old} for c in diffs],
        hide_index=True,
        width="stretch",
    )
else:
    st.caption("Every setting is at its default.")

with st.expander("Reset every setting to its default"):
    sure = st.checkbox("Yes, put every setting and threshold back to its default", key=f"reset_confirm_{gen}")
    if st.button("Reset to defaults", disabled=not sure, key="settings_reset"):
        done = data.reset_settings(path)
        st.session_state["settings_message"] = (
            "Reset to defaults: " + "; ".join(str(c) for c in done) + "."
            if done
            else "Already at the defaults."
        )
        st.rerun()
