"""Streamlit glue for the Patient trends page: cached queries, the patient in the URL, table layouts, badges.

Every query opens a short read-only connection and is cached on ``(path, data_version, ...)``; nothing holds a
connection across reruns. The chosen patient lives in ``st.query_params["patient"]`` so that a link to a
patient view can be shared inside the clinic and reloads to the same view.

What the browser is sent is kept small (issue 14): the caseload table one page at a time, the patient picker
with a bounded list (any ID can be typed), each patient figure built once per data version.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from kapdata import access, db, report, settings
from kapdata import caseload as records
from kapdata import instruments as reg
from kapdata import patient as pt
from kapdata.access import Principal
from kapdata.charts import patient as charts
from kapdata.cohort import CohortFilter
from kapui import md_escape

PARAM = "patient"
PICK_KEY = "patient_pick"
TABLE_KEY = "caseload_table"
TABLE_GENERATION = "caseload_table_generation"
STAFF_KEY = "staff_code"
NOTE_KEY = "record_note"
MESSAGE_KEY = "record_message"
SHOW_DISCHARGED_KEY = "show_discharged"
SCALE_TAB_KEY = "scale_tab"
RECORD_KEY = "record_panel"
#: The patient view's "Item answers" switch: off at first (the heatmap is drawn on request: it cost a
#: patient view opened from the caseload a tenth of its time, issue 14); kept for the session once on.
ITEMS_KEY = "pt_items"


def _who() -> Principal:
    from kapui import auth

    return auth.principal()


def caseload(path: str, version: tuple[int, int], filt: CohortFilter, today: dt.date) -> pd.DataFrame:
    """The caseload of the signed-in clinician's clinics (the scope is applied in the SQL)."""
    who = _who()
    who.require("patient.view", "see the caseload")
    return _caseload(path, version, access.scoped(who, filt), today)


@st.cache_data(show_spinner=False, max_entries=16)
def _caseload(path: str, version: tuple[int, int], filt: CohortFilter, today: dt.date) -> pd.DataFrame:
    with db.reader(path) as con:
        return pt.caseload(con, filt, today)


def patient_view(
    path: str, version: tuple[int, int], patient_id: str, today: dt.date
) -> pt.PatientView | None:
    """One patient's view; ``access.NotPermitted`` for a role without it or a patient of another clinic."""
    return _patient_view(path, version, patient_id, today, _who())


@st.cache_data(show_spinner=False, max_entries=64)
def _patient_view(
    path: str, version: tuple[int, int], patient_id: str, today: dt.date, who: Principal
) -> pt.PatientView | None:
    with db.reader(path) as con:
        return pt.patient_view(con, patient_id, today, principal=who)


def patient_ids(path: str, version: tuple[int, int], filt: CohortFilter) -> list[str]:
    return _patient_ids(path, version, access.scoped(_who(), filt))


@st.cache_data(show_spinner=False, max_entries=16)
def _patient_ids(path: str, version: tuple[int, int], filt: CohortFilter) -> list[str]:
    with db.reader(path) as con:
        return pt.patient_ids(con, filt)


@st.cache_data(show_spinner=False, max_entries=8)
def _generation(path: str, version: tuple[int, int]) -> str:
    """A token that is new whenever the cached queries are dropped (``kapui.data.clear_caches`` after an
    import, an undo or a settings change) or the database file changes: it keys the figure cache below,
    which (holding Plotly objects, not copies) lives in ``st.cache_resource``."""
    return uuid.uuid4().hex


def scale_figures(
    path: str, version: tuple[int, int], view: pt.PatientView, code: str
) -> tuple[go.Figure, go.Figure | None]:
    """One scale's trend and item heatmap for the patient view, built once per data version: building them
    is most of a patient view's server time. The view was read with the signed-in person's permission."""
    return _scale_figures(path, version, _generation(path, version), view.patient_id, view.today, code, view)


@st.cache_resource(show_spinner=False, max_entries=96)
def _scale_figures(
    path: str,
    version: tuple[int, int],
    generation: str,
    patient_id: str,
    today: dt.date,
    code: str,
    _view: pt.PatientView,
) -> tuple[go.Figure, go.Figure | None]:
    # Shared by every session and never changed after this: st.plotly_chart only reads a figure.
    return charts.score_trend(_view, code, title=False), charts.item_heatmap(_view, code)


@st.cache_data(show_spinner=False, max_entries=8)
def help_texts(path: str, version: tuple[int, int]) -> dict[str, str]:
    """Help texts with the thresholds and settings stored in the database."""
    with db.reader(path) as con:
        return pt.help_texts(settings.read(con))


def today() -> dt.date:
    """The page's "today" (the real date; tests replace this function)."""
    return dt.date.today()


def audited_report(path: str, view: pt.PatientView) -> Callable[[], str]:
    """The progress report download, built when clicked: audited (``report printed``) before it is handed
    over."""
    from kapui import auth

    record = auth.recorder(path)

    def build() -> str:
        record("report printed", view.patient_id, {"format": "html"})
        return report.progress_report(view)

    return build


# --- the chosen patient, in the URL ---------------------------------------------------------------------


def chosen_patient() -> str | None:
    value = st.query_params.get(PARAM)
    return value.strip() or None if value else None


def open_patient(patient_id: str | None) -> None:
    if patient_id:
        st.query_params[PARAM] = patient_id
    elif PARAM in st.query_params:
        del st.query_params[PARAM]


def _picked() -> None:
    open_patient(st.session_state.get(PICK_KEY))


def close_patient() -> None:
    open_patient(None)


#: Patient IDs listed in the picker. Any other ID can be typed: a list of a whole 50,000-patient caseload
#: took the browser seconds to draw on every run of the page (issue 14).
PICKER_OPTIONS = 200


def picker_options(ids: list[str], current: str | None = None) -> list[str]:
    """At most :data:`PICKER_OPTIONS` of ``ids``: the first ones (the caseload's order: most in need first),
    or, around ``current`` when it is one of them, its neighbours in that order (the current one included)."""
    if len(ids) <= PICKER_OPTIONS:
        return ids
    if current is None or current not in ids:
        return ids[:PICKER_OPTIONS]
    at = ids.index(current)
    start = max(0, min(at - PICKER_OPTIONS // 2, len(ids) - PICKER_OPTIONS))
    return ids[start : start + PICKER_OPTIONS]


def patient_picker(
    options: list[str], current: str | None, *, label: str = "Open a patient", compact: bool = False
) -> None:
    """A searchable selectbox of patient IDs kept in step with the URL: lists :func:`picker_options` of
    ``options``; any other ID can be typed and opened with Enter."""
    listed = picker_options(options, current)
    if current and current not in listed:
        listed = [current, *listed]
    more = len(options) > len(listed)
    st.session_state[PICK_KEY] = current
    st.selectbox(
        label,
        listed,
        index=None,
        key=PICK_KEY,
        on_change=_picked,
        accept_new_options=True,
        placeholder="Type or choose a pseudonymous patient ID",
        label_visibility="collapsed" if compact else "visible",
        help="Opens the patient view. The patient is in the page address, so the link can be shared inside "
        "the clinic and reloads to the same view."
        + (
            f" The list shows {len(listed):,} of {len(options):,} patients; type any patient ID and press "
            "Enter to open it."
            if more
            else ""
        ),
    )


#: Patients offered when a typed ID is not a patient.
SUGGESTIONS = 10


def suggestions(ids: list[str], typed: str) -> list[str]:
    """Patient IDs that contain ``typed`` (ignoring case), shortest first: for an ID that is not a patient."""
    needle = typed.strip().casefold()
    if not needle:
        return []
    found = [pid for pid in ids if needle in pid.casefold()]
    return sorted(found, key=lambda pid: (len(pid), pid))[:SUGGESTIONS]


def suggestion_buttons(found: list[str]) -> None:
    """One button per suggested patient; a click opens that patient's view."""
    if not found:
        return
    st.caption("Patients whose ID contains it:")
    with st.container(horizontal=True, gap="small"):
        for pid in found:
            # an ID from the data file: escaped, shown as the characters it is
            st.button(md_escape(pid), key=f"suggest_{pid}", on_click=open_patient, args=(pid,))


# --- caseload -------------------------------------------------------------------------------------------

CASELOAD_COLUMNS: tuple[str, ...] = (
    "flags",
    "patient_id",
    "phase",
    "days_in_phase",
    "n_sessions",
    "days_since_score",
    *(c for key in pt.SCALE_KEYS.values() for c in (key, f"{key}_change")),
    "clinic",
    "provider",
    "route",
)


def caseload_config(defs: dict[str, str]) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "flags": st.column_config.TextColumn(
            "Flags",
            width=330,
            help=" ".join(defs[k] for k in ("flags", "safety", "deterioration", "overdue", "no_baseline")),
        ),
        "patient_id": st.column_config.TextColumn("Patient", help="Pseudonymous patient ID."),
        "phase": st.column_config.TextColumn("Phase", help=defs["phase"]),
        "days_in_phase": st.column_config.NumberColumn(
            "Days in phase", format="%d", help=defs["days_in_phase"]
        ),
        "last_score_on": st.column_config.DateColumn("Last score", format="YYYY-MM-DD"),
        "n_sessions": st.column_config.NumberColumn("Sessions", format="%d", help=defs["sessions"]),
        "days_since_score": st.column_config.NumberColumn(
            "Days since score", format="%d", help="Days since the last questionnaire on any scale."
        ),
        "clinic": "Clinic",
        "provider": "Provider",
        "route": "Route",
    }
    for code, key in pt.SCALE_KEYS.items():
        cfg[key] = st.column_config.NumberColumn(code, format="%d", help=f"{code}: {defs['latest']}")
        cfg[f"{key}_change"] = st.column_config.NumberColumn(
            f"{code} Δ", format="%+d", help=f"{code}: {defs['change']} Blank without a baseline."
        )
    return cfg


def record_key(patient_id: str) -> str:
    """The patient view's record panel (open or closed): one key per patient, so that each patient's panel
    opens by itself only for an unacknowledged safety flag."""
    return f"{RECORD_KEY}_{patient_id}"


def scale_tab_key(patient_id: str) -> str:
    """The patient view's scale tabs: one key per patient, so that each patient opens on the first scale."""
    return f"{SCALE_TAB_KEY}_{patient_id}"


def table_key() -> str:
    """The caseload table's widget key: a new one after each row click, so that coming back to the caseload
    never finds the old selection (which would open the same patient again)."""
    return f"{TABLE_KEY}_{st.session_state.get(TABLE_GENERATION, 0)}"


def shown_caseload(frame: pd.DataFrame, phases: list[str], show_discharged: bool) -> pd.DataFrame:
    """The caseload rows in the chosen current phases; discharged patients only when asked (they come last).
    The tiles above the table count these rows."""
    keep = frame["phase"].isin(phases)
    if not show_discharged:
        keep &= ~frame["discharged"].astype(bool)
    return frame[keep].reset_index(drop=True)


def flag_counts(frame: pd.DataFrame) -> dict[str, int]:
    return {flag: int(frame[flag].astype(bool).sum()) for flag in pt.FLAGS}


#: Caseload rows sent to the browser at a time: the ranked list is paged, so a 50,000-patient caseload
#: draws as fast as a small one (the patient picker above finds anyone by ID).
CASELOAD_PAGE_ROWS = 100
PAGE_KEY = "caseload_page"


def caseload_page(total: int) -> tuple[int, int]:
    """The rows ``[start, stop)`` of the caseload page chosen with the pager (drawn only when there is more
    than one page)."""
    pages = max(1, -(-total // CASELOAD_PAGE_ROWS))
    if not isinstance(st.session_state.get(PAGE_KEY), int) or st.session_state[PAGE_KEY] > pages:
        st.session_state[PAGE_KEY] = 1  # the filters changed and the list is shorter now
    page = st.pagination(pages, key=PAGE_KEY, max_visible_pages=9) if pages > 1 else 1
    start = (page - 1) * CASELOAD_PAGE_ROWS
    return start, min(start + CASELOAD_PAGE_ROWS, total)


def _selected_row(state: Any) -> int | None:
    """The row chosen in a caseload table's selection state (``{"selection": {"rows": [...]}}``)."""
    try:
        rows = state["selection"]["rows"]
    except (KeyError, TypeError):
        return None
    return int(rows[0]) if rows else None


def caseload_table(shown: pd.DataFrame, defs: dict[str, str]) -> str | None:
    """The ranked caseload (already filtered by :func:`shown_caseload`), one page at a time.

    A row click opens the patient in the selection callback, so the run that follows draws the patient view
    at once (no second run of the page). Returns the patient of a selected row the callback did not see (a
    selection set in the session state), for the page to open."""
    start, stop = caseload_page(len(shown))
    if len(shown) > CASELOAD_PAGE_ROWS:
        st.caption(f"Patients {start + 1:,}–{stop:,} of {len(shown):,}, most in need of attention first.")
    shown = shown.iloc[start:stop][list(CASELOAD_COLUMNS)]
    ids = [str(pid) for pid in shown["patient_id"]]
    key = table_key()

    def clicked() -> None:
        row = _selected_row(st.session_state.get(key))
        if row is not None and row < len(ids):
            st.session_state[TABLE_GENERATION] = st.session_state.get(TABLE_GENERATION, 0) + 1
            open_patient(ids[row])

    event = st.dataframe(
        shown,
        hide_index=True,
        width="stretch",
        height=min(38 + 35 * max(len(shown), 1), 640),
        column_config=caseload_config(defs),
        on_select=clicked,
        selection_mode="single-row",
        key=key,
        placeholder="–",
    )
    rows = event.selection.rows if event else []
    if not rows or rows[0] >= len(ids):
        return None
    st.session_state[TABLE_GENERATION] = st.session_state.get(TABLE_GENERATION, 0) + 1
    return ids[rows[0]]


# --- patient view ---------------------------------------------------------------------------------------

BADGES: tuple[tuple[str, str, str], ...] = tuple(
    (key, label, "red" if key == "reliable_deterioration" else "green") for key, label in pt.OUTCOME_LABELS
)


def _undefined_help(reason: str, labels: list[str], outcome: dict[str, Any], defs: dict[str, str]) -> str:
    names = ", ".join(labels)
    if reason == pt.NO_BASELINE:
        return f"Not defined without a baseline: {names}. {defs['baseline']}"
    if reason == pt.BELOW_RANGE:
        return (
            f"Not defined: {names}. Remission, recovery and reliable recovery need a baseline in the "
            f"clinical range (≥ {outcome.get('caseness')}); response needs a baseline above 0. This baseline "
            f"is {report.fmt_number(outcome.get('baseline'))}. {defs['caseness']}"
        )
    return f"Needs a score after the baseline: {names}."


def outcome_badges(outcome: dict[str, Any], defs: dict[str, str]) -> None:
    """One row of badges: each outcome met at the latest score (green; reliable deterioration red), one grey
    badge for those not met (hover lists them with their rules), and one for each reason some are not
    defined (no baseline, a baseline below the clinical range, no score after baseline): never "not met"."""
    states = pt.outcome_states(outcome)
    met = [(k, label, color) for k, label, color in BADGES if states[k] == pt.MET]
    not_met = [k for k, _, _ in BADGES if states[k] == pt.NOT_MET]
    undefined: dict[str, list[str]] = {}
    for key, label, _ in BADGES:
        if states[key] not in (pt.MET, pt.NOT_MET):
            undefined.setdefault(states[key], []).append(label)
    with st.container(horizontal=True, gap="small"):
        for key, label, color in met:
            st.badge(label, color=color, icon=":material/check:", help=defs[key])  # type: ignore[arg-type]
        if not_met:
            st.badge(
                f"{len(not_met)} not met",
                color="gray",
                icon=":material/close:",
                help="Not met: " + "; ".join(defs[key] for key in not_met),
            )
        for reason, labels in undefined.items():
            st.badge(reason, color="gray", help=_undefined_help(reason, labels, outcome, defs))


def header_strip(view: pt.PatientView, defs: dict[str, str]) -> None:
    """Pseudonymous ID, clinic and provider, route, condition, phase, days in phase, sessions, last score."""
    s = view.status
    since = "none yet" if s["days_since_score"] is None else f"{s['days_since_score']} days ago"
    items = (
        ("Clinic", s["clinic"] or "–", None),
        ("Provider", s["provider"] or "–", None),
        ("Route", s["route"] or "–", None),
        ("Condition", s["primary_condition"] or "–", None),
        ("Phase", s["phase"], defs["phase"]),
        ("Days in phase", report.fmt_number(s["days_in_phase"]), defs["days_in_phase"]),
        ("Sessions done", str(s["n_sessions"]), defs["sessions"]),
        ("Last score", since, None),
    )
    with st.container(border=True):
        for col, (label, value, help_text) in zip(st.columns(len(items)), items, strict=True):
            # clinic, provider, route and condition come from the data file: escaped, shown as typed
            col.markdown(f":gray[{label}]  \n**{md_escape(value)}**", help=help_text)


def _ack_line(view: pt.PatientView, flag: str) -> str | None:
    """``Acknowledged by AB on 2025-06-29 10:00: note`` (plain text: the note is the user's)."""
    ack = view.status.get(f"{flag}_ack")
    if not ack:
        return None
    line = f"Acknowledged by {ack['who']} on {ack['stamp']:%Y-%m-%d %H:%M}"
    return line + (f": {ack['note']}" if ack.get("note") else "")


def flag_alerts(view: pt.PatientView) -> None:
    """The patient's flags side by side, safety first (red); an acknowledgement below its flag (as text)."""
    s = view.status
    alerts: list[tuple[Any, str, str, str | None]] = []
    if s["flag_safety"]:
        text = (
            f"**Safety: {s['safety_detail']}** on {s['safety_on']:%d %b %Y} (“{pt.SAFETY_ITEM_WORDING}”). "
            "Complete a risk assessment before the session."
        )
        alerts.append((st.error, text, ":material/warning:", _ack_line(view, "safety")))
    if s["flag_deterioration"]:
        text = f"**Reliable deterioration** on {s['deteriorated_scales']}: latest score at least the "
        alerts.append(
            (
                st.warning,
                text + "reliable-change amount above baseline.",
                ":material/trending_up:",
                _ack_line(view, "deterioration"),
            )
        )
    if s["flag_overdue"]:
        since = f"for {s['days_since_score']} days" if s["days_since_score"] is not None else "yet"
        alerts.append(
            (
                st.warning,
                f"**Overdue:** no questionnaire {since} while in {s['phase']}.",
                ":material/schedule:",
                None,
            )
        )
    if s["flag_no_baseline"]:
        alerts.append(
            (
                st.warning,
                "**No baseline:** dosing started without a preparation questionnaire.",
                ":material/flag:",
                None,
            )
        )
    for col, (alert, text, icon, ack) in zip(st.columns(len(alerts)) if alerts else [], alerts, strict=True):
        with col:
            alert(text, icon=icon)
            if ack:
                st.text(ack)
    if s["discharged"]:
        st.info(
            f"Discharged on {s['discharged_at']:%d %b %Y}: hidden from the caseload, kept in every outcome."
        )
        st.text(
            f"Discharged by {s['discharged_by']}"
            + (f": {s['discharge_note']}" if s["discharge_note"] else "")
        )


# --- acknowledging a flag, discharging ----------------------------------------------------------------


def _record(action: str, path: str, patient_id: str, today: dt.date) -> None:
    """Button callback: write one acknowledgement / discharge / re-admission (one short transaction); the
    outcome is shown on the rerun that follows, with data read afresh (caches follow the file)."""
    from kapui import auth

    staff, note = st.session_state.get(STAFF_KEY), st.session_state.get(NOTE_KEY)
    who = _who()
    if who.source != "os":  # signed in: the account is who records it
        staff = who.email
    try:
        who.require("patient.record", "record acknowledgements or discharges")
        with db.reader(path) as con:
            access.check_patient(con, who, patient_id)
        if action in pt.ACK_FLAGS:
            ack = records.acknowledge(path, patient_id, action, staff or "", note, today=today)
            message = (
                f"{records.FLAG_LABELS[action].capitalize()} flag acknowledged by {ack.acknowledged_by}."
            )
        elif action == "discharge":
            records.discharge(path, patient_id, staff or "", note)
            message = f"Patient {patient_id} discharged."
        else:
            records.readmit(path, patient_id)
            message = f"Patient {patient_id} re-admitted to the caseload."
    except access.NotPermitted as exc:
        st.session_state[MESSAGE_KEY] = ("error", str(exc))
        return
    except records.CaseloadError as exc:
        st.session_state[MESSAGE_KEY] = ("error", f"Nothing recorded: {exc}.")
        return
    except db.DatabaseBusy:
        st.session_state[MESSAGE_KEY] = ("error", "Nothing recorded: the database is busy; try again.")
        return
    except Exception:  # no engine message reaches the user
        st.session_state[MESSAGE_KEY] = ("error", "Nothing recorded: the database could not be written.")
        return
    st.session_state[NOTE_KEY] = ""
    st.session_state[MESSAGE_KEY] = ("success", message)
    kind = "acknowledgement" if action in pt.ACK_FLAGS else "discharge"
    try:
        auth.record(path, kind, patient_id, {"action": action})
    except auth.AuditRequired:
        st.session_state[MESSAGE_KEY] = ("error", message + " " + auth.AUDIT_DOWN)


def record_panel(path: str, view: pt.PatientView, defs: dict[str, str]) -> None:
    """Acknowledge the flags, discharge or re-admit: who is the signed-in account (else the staff code)."""
    s = view.status
    message = st.session_state.pop(MESSAGE_KEY, None)
    if message:
        kind, text = message
        (st.success if kind == "success" else st.error)("Recorded." if kind == "success" else "Not recorded.")
        st.text(text)
    panel = st.expander(
        "Acknowledge a flag · discharge",
        expanded=bool(s["flag_safety"] and not s["safety_ack"]),
        key=record_key(view.patient_id),
        on_change="rerun",
    )
    if panel.open is False:  # drawn when opened: closed, its fields cost a patient view a sixth of its time
        return
    with panel:
        left, right = st.columns([1, 3])
        who = _who()
        if who.source != "os":
            left.caption("Recorded as")
            left.text(who.email)
        else:
            left.text_input(
                "Your staff code",
                key=STAFF_KEY,
                max_chars=32,
                help="Who is recording this (no sign-in here): your staff code, not a patient ID.",
            )
        right.text_area(
            "Note",
            key=NOTE_KEY,
            max_chars=records.NOTE_MAX,
            height=68,
            help="What was done (for example the risk assessment). No names, birth dates or contact details.",
        )
        args = (path, view.patient_id, view.today)
        with st.container(horizontal=True, gap="small"):
            for flag, raised in (("safety", s["flag_safety"]), ("deterioration", s["flag_deterioration"])):
                if raised and not s[f"{flag}_ack"]:
                    st.button(
                        f"Acknowledge the {records.FLAG_LABELS[flag]} flag",
                        on_click=_record,
                        args=(flag, *args),
                        help=defs["acknowledge"],
                    )
            if s["discharged"]:
                st.button("Re-admit to the caseload", on_click=_record, args=("readmit", *args))
            else:
                st.button("Discharge", on_click=_record, args=("discharge", *args), help=defs["discharge"])


def scale_card(view: pt.PatientView, code: str, defs: dict[str, str]) -> None:
    """Latest score with its change from baseline (and % change), severity, and the outcome badges."""
    inst = reg.get(code)
    o = view.latest_outcome(code)
    change, pct = o.get("change"), o.get("pct_change")
    delta = None
    if change is not None:  # an ASCII sign: st.metric reads it for the arrow (down = better, green)
        delta = f"{change:+.0f}" + (f" ({pct:+.0f}%)" if pct is not None else "")
    with st.container(border=True):
        st.metric(
            f"{code} · {inst.construct} · latest",
            report.fmt_number(o.get("latest")),
            delta=delta,
            delta_color="inverse",
            help=f"{defs['latest']} {defs['change']} {defs['pct_change']}",
        )
        base = o.get("baseline")
        base_mark = " prorated" if o.get("baseline_prorated") else ""
        latest_mark = " prorated" if o.get("latest_prorated") else ""
        st.caption(
            f"**{o.get('band') or '–'}** · baseline {report.fmt_number(base)}{base_mark} "
            f"({fmt_day(o.get('baseline_on'))}) → latest {report.fmt_number(o.get('latest'))}{latest_mark} "
            f"({fmt_day(o.get('latest_on'))})"
            if base is not None
            else f"**{o.get('band') or '–'}** · latest {report.fmt_number(o.get('latest'))}{latest_mark} · "
            "no baseline (no preparation score): no change computed.",
            help=f"{defs['band']} {defs['baseline']}"
            + (f" {defs['prorated']}" if base_mark or latest_mark else ""),
        )
        outcome_badges(o, defs)


def fmt_day(value: Any) -> str:
    return "–" if value is None or pd.isna(value) else f"{pd.Timestamp(value):%-d %b %Y}"


def session_log_config(defs: dict[str, str]) -> dict[str, Any]:
    return {
        "session_no": st.column_config.NumberColumn("#", format="%d"),
        "session_date": st.column_config.DateColumn("Date"),
        "route": "Route",
        "dose": "Dose",
        "bp_pre": st.column_config.TextColumn("BP before", help=defs["bp"]),
        "bp_post": st.column_config.TextColumn("BP after", help=defs["bp"]),
        "dissociation": st.column_config.NumberColumn("Dissociation", format="%d", help=defs["dissociation"]),
        "side_effects": st.column_config.TextColumn("Side effects", width="medium"),
    }


def styled_session_log(view: pt.PatientView) -> Any:
    """The session log with blood pressure over the thresholds highlighted (a pandas Styler)."""
    log = pt.session_log(view)
    high = {"bp_pre": log["bp_high_pre"], "bp_post": log["bp_high_post"]}
    shown = log.drop(columns=["bp_high_pre", "bp_high_post"])

    def colour(col: pd.Series) -> list[str]:
        flags = high.get(str(col.name))
        if flags is None:
            return [""] * len(col)
        return ["background-color: #ffcdd2; color: #b71c1c; font-weight: 600" if f else "" for f in flags]

    return shown.style.apply(colour, axis=0)


def assessment_config(defs: dict[str, str]) -> dict[str, Any]:
    return {
        "assessed_on": st.column_config.DateColumn("Date"),
        "instrument": "Scale",
        "total": st.column_config.NumberColumn("Total", format="%d"),
        "prorated": st.column_config.CheckboxColumn("Prorated", help=defs["prorated"]),
        "band": st.column_config.TextColumn("Severity", help=defs["band"]),
        "clinical_range": st.column_config.CheckboxColumn("Clinical range", help=defs["caseness"]),
        "phase": st.column_config.TextColumn("Phase", help=defs["score_phase"]),
        "day": st.column_config.NumberColumn("Day", format="%d", help="Days since the first dosing session."),
        "safety_answer": st.column_config.TextColumn(
            "Safety item", help=defs["safety"] + " “not answered”: unknown, not 0."
        ),
    }


def _true(value: Any) -> bool:
    """True only for a known true (None / NA: unknown)."""
    return value is not None and not pd.isna(value) and bool(value)


def styled_assessments(view: pt.PatientView) -> Any:
    """Every questionnaire, newest first; a safety item above 0 highlighted."""
    table = pt.assessment_table(view)
    flagged = table.pop("safety")

    def colour(col: pd.Series) -> list[str]:
        if col.name != "safety_answer":
            return [""] * len(col)
        return [
            "background-color: #ffcdd2; color: #b71c1c; font-weight: 600" if _true(f) else "" for f in flagged
        ]

    return table.style.apply(colour, axis=0)


def pcl5_config(defs: dict[str, str]) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "assessed_on": st.column_config.DateColumn("Date"),
        "phase": "Phase",
        "total": st.column_config.NumberColumn("Total", format="%d"),
        "dsm5_met": st.column_config.CheckboxColumn("DSM-5 rule met", help=defs["dsm5"]),
    }
    for name, items in reg.PCL5.subscales.items():
        span = f"items {items[0]}–{items[-1]}"
        cfg[f"cluster_{name}"] = st.column_config.NumberColumn(f"{name} score", format="%d", help=span)
        cfg[f"endorsed_{name}"] = st.column_config.NumberColumn(
            f"{name} endorsed", format="%d", help=f"Items of cluster {name} ({span}) scored ≥ 2."
        )
    return cfg
