"""Audit: who did what, from the append-only, hash-chained audit trail (administrators only)."""

import datetime as dt

import streamlit as st

import kapui
from kapdata import audit
from kapui import auth

path = kapui.initialise()
if not kapui.principal().may("audit"):
    auth.deny(path, "page audit", "audit")

st.title("Audit trail")
st.caption(
    f"Every sign-in, patient view, report, export, import, undo, settings and user change, refusal and "
    f"acknowledgement, in `{audit.audit_path(path)}` (never touched by undo). Each row holds the SHA-256 of "
    "the row before it, so an edited, deleted or inserted row shows: `python -m kapdata audit verify`."
)
check = audit.verify(path)
if check.ok:
    st.success(f"Chain whole: {check.rows:,} rows.", icon=":material/verified:")
else:
    st.error(f"Chain broken at row {check.broken_seq}: {check.reason}.", icon=":material/gpp_bad:")

c = st.columns(3)
since = c[0].date_input("Since", value=None, max_value=dt.date.today(), key="audit_since")
user = c[1].text_input("User (e-mail or OS user)", max_chars=254, key="audit_user")
action = c[2].selectbox("Action", audit.ACTIONS, index=None, placeholder="All actions", key="audit_action")
rows = audit.query(path, since=since, user=user.strip().lower() or None, action=action)
st.download_button(
    f"Download {len(rows):,} rows (CSV)",
    audit.csv_bytes(rows),
    file_name="kap-audit.csv",
    mime="text/csv",
    icon=":material/download:",
)
shown = audit.frame(rows[-1000:][::-1]).drop(columns=["prev_hash"])
st.dataframe(shown, hide_index=True, width="stretch")
if len(rows) > 1000:
    st.caption(f"The newest 1,000 of {len(rows):,} rows; the download holds all of them.")
