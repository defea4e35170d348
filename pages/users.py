"""Users: staff accounts, their roles and clinics (administrators only)."""

import pandas as pd
import streamlit as st

import kapui
from kapdata import accounts, db
from kapdata.access import ROLE_HELP, ROLES
from kapui import auth, data

path = kapui.initialise()
who = kapui.principal()
if not who.may("users"):
    auth.deny(path, "page users", "users")

st.title("Users")
st.caption(
    "Once any account exists every page needs sign-in. Each account's e-mail is the staff member's sign-in "
    "identifier (never a patient's). An account without a password signs in only through the organisation "
    "(OIDC). The same as `python -m kapdata users …`; every change is in the audit trail."
)
message = st.session_state.pop("users_message", None)
if message:
    (st.success if message[0] else st.error)(kapui.md_escape(message[1]))  # it holds a typed e-mail: text

with db.reader(path) as con:
    rows = accounts.list_accounts(con)
if not rows:
    st.warning(
        "No accounts yet: the app serves only this computer. Add an admin account with a password first, or "
        "you will be signed out with no way back in."
    )
else:
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "e-mail": a.email,
                    "role": a.role,
                    "clinics": ", ".join(a.clinics) or "all",
                    "calendar dates": a.calendar_dates,
                    "password": a.has_password,
                    "disabled": a.disabled,
                    "locked until": a.locked_until,
                }
                for a in rows
            ]
        ),
        hide_index=True,
        width="stretch",
    )
st.caption(" · ".join(f"**{r}**: {h}" for r, h in ROLE_HELP.items()))
clinic_names = kapui.filter_options(path, kapui.data_version(path)).clinics


def _done(ok: bool, text: str) -> None:
    st.session_state["users_message"] = (ok, text)
    st.rerun()


with st.expander("Add an account", expanded=not rows), st.form("user_add", clear_on_submit=True):
    c = st.columns([3, 2, 3])
    email = c[0].text_input("E-mail", max_chars=254)
    role = c[1].selectbox("Role", ROLES)
    clinics = c[2].multiselect("Clinics (none: all)", clinic_names)
    password = st.text_input("Password (leave empty: organisation sign-in only)", type="password")
    dates = st.checkbox("May export calendar dates (researchers)")
    if st.form_submit_button("Add account", type="primary"):
        try:
            acc = accounts.add(path, email, role, clinics, password or None, calendar_dates=dates)
        except accounts.AccountError as exc:
            _done(False, f"Not added: {exc}.")
        else:
            data.clear_caches()
            auth.record(path, "user change", acc.email, {"change": "added", "role": acc.role})
            _done(True, f"Added {acc.email} ({acc.role}).")

if rows:
    with st.expander("Change an account"):
        emails = [a.email for a in rows]
        chosen = st.selectbox("Account", emails, key="user_pick")
        acc = next(a for a in rows if a.email == chosen)
        with st.form(f"user_edit_{acc.email}"):
            c = st.columns([2, 3, 2])
            role = c[0].selectbox("Role", ROLES, index=ROLES.index(acc.role))
            clinics = c[1].multiselect(
                "Clinics (none: all)", sorted(set(clinic_names) | set(acc.clinics)), default=list(acc.clinics)
            )
            dates = c[2].checkbox("Calendar dates", value=acc.calendar_dates)
            disabled = st.checkbox("Disabled (cannot sign in)", value=acc.disabled)
            if st.form_submit_button("Save"):
                if acc.email == who.email and (disabled or role != "admin"):
                    _done(False, "Not saved: you cannot disable or demote your own account here.")
                try:
                    acc = accounts.set_role(path, acc.email, role, clinics, dates)
                    if disabled != acc.disabled:
                        acc = accounts.set_disabled(path, acc.email, disabled)
                except accounts.AccountError as exc:
                    _done(False, f"Not saved: {exc}.")
                data.clear_caches()
                detail = {"change": "edited", "role": acc.role, "clinics": list(acc.clinics)}
                detail |= {"calendar_dates": acc.calendar_dates, "disabled": acc.disabled}
                auth.record(path, "user change", acc.email, detail)
                _done(True, f"Saved {acc.email}.")
