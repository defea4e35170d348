"""Sign-in, the signed-in principal and the audit trail, for the app (Streamlit glue over kapdata.accounts,
kapdata.access and kapdata.audit).

Sign-in is required once any account exists or organisation sign-in (OIDC, ``[auth]`` in
``.streamlit/secrets.toml``) is configured. Without either the app serves only this computer (the bundled
config binds to 127.0.0.1) and the person at it acts as the local administrator.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import streamlit as st

from kapdata import access, accounts, audit, db
from kapdata.access import NotPermitted, Principal

AUTH_KEY = "_kap_auth"  # {"email", "source", "signed_in_at", "last_seen"}
PRINCIPAL_KEY = "_kap_principal"
REQUIRED_KEY = "_kap_sign_in_required"
VIEWED_KEY = "_kap_last_viewed"
AFTER_SIGN_IN_KEY = "_kap_after_sign_in"  # the deep link followed before signing in
DEEP_LINK_PARAMS = ("patient",)
OIDC_BUTTON = "Sign in with your organisation"
AUDIT_DOWN = (
    "The audit trail cannot be written, so patient-level data is not shown. Ask your administrator to check "
    "the audit file."
)

log = logging.getLogger("kapui")


_run = threading.local()


@contextlib.contextmanager
def through_gate() -> Iterator[None]:
    """dashboard.py runs the chosen page inside this, after the gate and the page check."""
    _run.gated = True
    try:
        yield
    finally:
        _run.gated = False


def check_page(path: str, page_file: str) -> None:
    """A page's own check (``kapui.initialise``): a page that runs without dashboard.py's gate (Streamlit's
    legacy pages-folder mode, before any session has called ``st.navigation``) passes the same gate and
    page permission itself, so it never runs for a person who has not signed in or may not open it."""
    if getattr(_run, "gated", False):
        return
    who = gate(path)
    if who is None:
        st.stop()
    stem = Path(page_file).stem
    if not who.may_open(stem):
        deny(path, f"page {stem}", stem, "Not permitted: your role cannot open this page.")


class AuditRequired(RuntimeError):
    """Sign-in is required and the audit trail cannot be written: nothing patient-level may be shown."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def oidc_providers() -> list[str] | None:
    """None when organisation sign-in is not configured; [] for the single-provider form of ``[auth]``,
    else the named providers (``[auth.NAME]``)."""
    try:
        if "auth" not in st.secrets:
            return None
        section = st.secrets["auth"]
    except Exception:  # no secrets file, or one that cannot be read: no organisation sign-in
        return None
    if not isinstance(section, Mapping):
        return None
    named = [str(k) for k, v in section.items() if isinstance(v, Mapping)]
    return [] if "client_id" in section else named


@st.cache_data(show_spinner=False, max_entries=8)
def _account_count(path: str, version: tuple[int, int]) -> int:
    if not db.db_path(path).exists():
        return 0
    with db.reader(path) as con:
        return accounts.count(con)


@st.cache_data(show_spinner=False, max_entries=256)
def _account(path: str, version: tuple[int, int], email: str) -> accounts.Account | None:
    if not db.db_path(path).exists():
        return None
    with db.reader(path) as con:
        return accounts.get(con, email)


def sign_in_required(path: str) -> bool:
    return oidc_providers() is not None or _account_count(path, db.file_version(path)) > 0


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local"


def principal() -> Principal:
    """The principal of this run (set by ``gate``)."""
    found = st.session_state.get(PRINCIPAL_KEY)
    if not isinstance(found, Principal):
        raise NotPermitted("Not permitted: sign in first.")
    return found


def record(path: str, action: str, target: str | None = None, detail: dict[str, Any] | None = None) -> None:
    """Append an audit row for this session's principal. When sign-in is required and the row cannot be
    written, raise ``AuditRequired`` (fail closed); in local single-user mode log it and go on."""
    who = st.session_state.get(PRINCIPAL_KEY)
    user = who.email if isinstance(who, Principal) else "unknown"
    role = who.role if isinstance(who, Principal) else ""
    _record(path, user, role, action, target, detail)


def _record(
    path: str,
    user: str,
    role: str,
    action: str,
    target: str | None,
    detail: dict[str, Any] | None,
    required: bool | None = None,
) -> None:
    try:
        audit.record(path, user, role, action, target, detail)
    except audit.AuditUnavailable:
        log.exception("audit write failed")
        if st.session_state.get(REQUIRED_KEY, True) if required is None else required:
            raise AuditRequired(AUDIT_DOWN) from None


def recorder(path: str) -> Callable[[str, str | None, dict[str, Any] | None], None]:
    """``record`` bound to this run's principal, for a download that is built later, when it is clicked
    (outside the script run, where the session is not at hand)."""
    who = principal()
    required = bool(st.session_state.get(REQUIRED_KEY, True))

    def write(action: str, target: str | None, detail: dict[str, Any] | None) -> None:
        _record(path, who.email, who.role, action, target, detail, required)

    return write


def viewed_patient(path: str, patient_id: str) -> None:
    """``patient viewed`` once per opening of a patient (not on every rerun)."""
    if st.session_state.get(VIEWED_KEY) == patient_id:
        return
    record(path, "patient viewed", patient_id)
    st.session_state[VIEWED_KEY] = patient_id


def deny(path: str, what: str, target: str | None = None, message: str | None = None) -> None:
    """Show "Not permitted", write a ``denied`` row, stop the page."""
    with contextlib.suppress(AuditRequired):  # refused either way
        record(path, "denied", target, {"what": what})
    st.error(message or "Not permitted: your role cannot open this.", icon=":material/block:")
    st.stop()


# --- the gate --------------------------------------------------------------------------------------------


def _sign_out(path: str, reason: str) -> None:
    state = st.session_state.pop(AUTH_KEY, None)
    who = st.session_state.pop(PRINCIPAL_KEY, None)
    st.session_state.pop(VIEWED_KEY, None)
    if state:
        role = who.role if isinstance(who, Principal) else ""
        with contextlib.suppress(AuditRequired):
            _record(
                path, state["email"], role, "sign-out", None, {"reason": reason, "source": state["source"]}
            )


def sign_out(path: str) -> None:
    """The Sign out button: end the local session, and the organisation session too."""
    source = (st.session_state.get(AUTH_KEY) or {}).get("source")
    _sign_out(path, "signed out")
    if source == "oidc":
        st.logout()


def _start(path: str, account: accounts.Account, source: str) -> None:
    now = _now()
    st.session_state[AUTH_KEY] = {
        "email": account.email,
        "source": source,
        "signed_in_at": now,
        "last_seen": now,
    }
    _record(path, account.email, account.role, "sign-in", None, {"source": source})


def gate(path: str) -> Principal | None:
    """This run's principal, or None when the person must sign in (the caller then shows ``sign_in_page``).
    Checks the session's expiry and re-reads the account every run, so a disabled account or a changed role
    takes effect at once."""
    required = sign_in_required(path)
    st.session_state[REQUIRED_KEY] = required
    st.session_state.pop(PRINCIPAL_KEY, None)
    if not required:
        who = access.local_admin(_os_user())
        st.session_state[PRINCIPAL_KEY] = who
        return who
    state = st.session_state.get(AUTH_KEY)
    now = _now()
    if state is None and oidc_providers() is not None and bool(st.user.get("is_logged_in", False)):
        email = str(st.user.get("email") or "").strip().lower()
        account = _account(path, db.file_version(path), email) if email else None
        if account is None or account.disabled:
            if st.session_state.get("_kap_oidc_denied") != email:
                _record(path, email or "unknown", "", "denied", None, {"what": "organisation sign-in"})
                st.session_state["_kap_oidc_denied"] = email
            return None
        _start(path, account, "oidc")
        state = st.session_state[AUTH_KEY]
    if state is None:
        return None
    why = accounts.session_expired(state["signed_in_at"], state["last_seen"], now)
    account = _account(path, db.file_version(path), state["email"])
    if why is None and (account is None or account.disabled):
        why = "account disabled"
    if why is not None:
        source = state["source"]
        _sign_out(path, f"session ended ({why})")
        st.session_state["_kap_signed_out_reason"] = why
        if source == "oidc":
            st.logout()
        return None
    assert account is not None
    state["last_seen"] = now
    # The address the person followed before signing in (a patient link): restored once, then checked by
    # the page like any other address (a patient outside the person's clinics is refused there).
    for key, value in st.session_state.pop(AFTER_SIGN_IN_KEY, {}).items():
        st.query_params[key] = value
    who = account.principal(state["source"])
    st.session_state[PRINCIPAL_KEY] = who
    return who


def _local_sign_in(path: str) -> None:
    email = st.session_state.get("signin_email", "")
    password = st.session_state.get("signin_password", "")
    st.session_state["signin_password"] = ""
    try:
        account = accounts.authenticate(path, email, password)
    except accounts.SignInFailed as exc:
        target = str(email).strip().lower()[:254] or "(blank)"
        with contextlib.suppress(AuditRequired):
            _record(path, target, "", "failed sign-in", None, {"reason": exc.reason})
        st.session_state["_kap_sign_in_error"] = accounts.SIGN_IN_FAILED_TEXT
        return
    except Exception:  # the database cannot be written or read: words, never the engine's message
        log.exception("sign-in failed")
        st.session_state["_kap_sign_in_error"] = (
            "Sign-in is not possible now: the database cannot be read or written. Ask your administrator."
        )
        return
    try:
        _start(path, account, "local")
    except AuditRequired:
        st.session_state.pop(AUTH_KEY, None)
        st.session_state["_kap_sign_in_error"] = AUDIT_DOWN


def sign_in_page(path: str) -> None:
    """The only page without sign-in: a local-account form and, when configured, organisation sign-in.
    It shows no data, and any patient ID in the address is removed from it -- kept on the server for this
    session, so that a link to a patient opens that patient once the person has signed in."""
    link = {key: st.query_params[key] for key in DEEP_LINK_PARAMS if key in st.query_params}
    if link:
        st.session_state[AFTER_SIGN_IN_KEY] = link
    for key in list(st.query_params):
        del st.query_params[key]
    st.title("KAP Outcomes")
    st.subheader("Sign in")
    reason = st.session_state.pop("_kap_signed_out_reason", None)
    if reason:
        st.info(
            "Your session ended: "
            + ("30 minutes without activity." if reason == "idle" else "sign in again.")
            + " Sign in again to go on."
        )
    denied = st.session_state.get("_kap_oidc_denied")
    providers = oidc_providers()
    if denied is not None and providers is not None and bool(st.user.get("is_logged_in", False)):
        st.error(
            "Not permitted: this organisation account has no enabled account in KAP Outcomes. "
            "Ask your administrator to add it.",
            icon=":material/block:",
        )
        st.text(f"Signed in to the organisation as {denied or 'an account without an e-mail address'}.")
        if st.button("Sign out", key="oidc_denied_logout"):
            st.session_state.pop("_kap_oidc_denied", None)
            st.logout()
        return
    if providers is not None:
        if providers:
            for name in providers:
                label = OIDC_BUTTON if len(providers) == 1 else f"{OIDC_BUTTON} ({name})"
                if st.button(label, key=f"oidc_{name}", type="primary"):
                    st.login(name)
        elif st.button(OIDC_BUTTON, key="oidc_login", type="primary"):
            st.login()
        st.caption("Or with a local account:")
    error = st.session_state.pop("_kap_sign_in_error", None)
    if error:
        st.error(error, icon=":material/error:")
    with st.form("sign_in_form"):
        st.text_input("E-mail", key="signin_email", max_chars=254, autocomplete="username")
        st.text_input(
            "Password",
            key="signin_password",
            type="password",
            max_chars=1024,
            autocomplete="current-password",
        )
        st.form_submit_button("Sign in", on_click=_local_sign_in, args=(path,))
    st.caption(
        f"After {accounts.MAX_FAILURES} failed attempts an account is locked for "
        f"{int(accounts.LOCKOUT.total_seconds() // 60)} minutes. A session ends after "
        f"{int(accounts.IDLE_TIMEOUT.total_seconds() // 60)} minutes without activity."
    )


def sidebar(path: str, who: Principal) -> None:
    sb = st.sidebar
    if st.session_state.get(REQUIRED_KEY):
        clinics = ", ".join(who.clinics) if who.clinics else "all clinics"
        sb.text(f"Signed in as {who.email} · {who.role}")  # as text: an address is never made a link
        sb.caption(f"Clinics: {_md(clinics)}")
        sb.button("Sign out", key="sign_out", on_click=sign_out, args=(path,), icon=":material/logout:")
    else:
        sb.caption(
            "Serving only this computer (127.0.0.1): no accounts and no organisation sign-in are set up, so "
            f"you act as the local administrator ({_md(who.email)}). See the README to put it on a server."
        )


def _md(text: object) -> str:
    from kapui import md_escape

    return md_escape(text)
