"""Sign-in and roles in the app (AppTest): each role's permitted pages work, every other page, patient and
export is refused with "Not permitted" and a ``denied`` audit row; local accounts and organisation sign-in."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from kapdata import accounts, audit, db

from .conftest import ROOT

PASSWORD = "correct horse battery"
ALL_PAGES = (
    "overview",
    "patient_trends",
    "clinic_outcomes",
    "research_export",
    "data_import",
    "definitions",
    "settings",
    "users",
    "audit",
)
PERMITTED = {
    "clinician": {"patient_trends", "definitions"},
    "director": {"overview", "clinic_outcomes", "definitions"},
    "researcher": {"research_export", "overview", "clinic_outcomes", "definitions"},
    "data-manager": {"data_import", "definitions", "settings"},
    "admin": set(ALL_PAGES),
}
OIDC = {
    "redirect_uri": "http://localhost:8501/oauth2callback",
    "cookie_secret": "a test cookie secret, not a real one",
    "client_id": "kap",
    "client_secret": "test",
    "server_metadata_url": "http://127.0.0.1:9/.well-known/openid-configuration",
}


@pytest.fixture()
def signed_db(app_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the page tests' database with one account per role (the director and clinician of one
    clinic), its own audit file."""
    path = tmp_path / "kap.duckdb"
    shutil.copy(app_db, path)
    for role in PERMITTED:
        clinics = ("Northside",) if role in ("director", "clinician") else ()
        accounts.add(path, f"{role}@clinic.example", role, clinics, PASSWORD)
    accounts.add(path, "org.director@clinic.example", "director", ("Northside",))  # organisation only
    monkeypatch.setenv("KAP_DB", str(path))
    monkeypatch.delenv("KAP_AUDIT_DB", raising=False)
    monkeypatch.chdir(ROOT)
    return path


def app() -> AppTest:
    return AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=60)


def signed_in(role: str) -> AppTest:
    """A session already signed in with the role's local account (as the sign-in form leaves it)."""
    at = app()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    email = f"{role}@clinic.example"
    at.session_state["_kap_auth"] = {"email": email, "source": "local", "signed_in_at": now, "last_seen": now}
    return at.run()


def texts(at: AppTest) -> str:
    parts = [e.value for e in (*at.error, *at.markdown, *at.title, *at.caption, *at.text)]
    return " ".join(str(p) for p in parts)


def denied_rows(path: Path) -> list[dict]:
    return audit.query(path, action="denied")


def test_with_accounts_every_page_needs_sign_in_and_shows_no_data(signed_db: Path) -> None:
    at = app().run()
    assert not at.exception, at.exception
    assert [t.value for t in at.subheader] == ["Sign in"]
    assert at.text_input(key="signin_email") is not None
    assert not at.metric and not at.dataframe  # nothing behind the sign-in page ran
    assert "Signed in as" not in texts(at)


def test_local_sign_in_form_signs_in_and_wrong_password_is_refused_and_audited(signed_db: Path) -> None:
    at = app().run()
    at.text_input(key="signin_email").input("director@clinic.example")
    at.text_input(key="signin_password").input("wrong password here")
    at.button[0].click().run()
    assert [e.value for e in at.error] == [accounts.SIGN_IN_FAILED_TEXT]
    at.text_input(key="signin_email").input("Director@Clinic.example")
    at.text_input(key="signin_password").input(PASSWORD)
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert "Signed in as director@clinic.example · director" in [t.value for t in at.sidebar.text]
    assert at.title[0].value == "KAP Outcomes"  # the overview, the director's first page
    actions = [(r["user"], r["action"]) for r in audit.query(signed_db)]
    assert actions == [("director@clinic.example", "failed sign-in"), ("director@clinic.example", "sign-in")]
    assert audit.verify(signed_db).ok


@pytest.mark.parametrize("role", list(PERMITTED))
def test_each_role_opens_its_pages_and_is_refused_the_others(signed_db: Path, role: str) -> None:
    at = signed_in(role)
    assert not at.exception, at.exception
    for page in ALL_PAGES:
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, (page, at.exception)
        refused = any(e.value.startswith("Not permitted") for e in at.error)
        assert refused == (page not in PERMITTED[role]), (role, page, [e.value for e in at.error])
    refused_pages = {r["target"] for r in denied_rows(signed_db)}
    assert refused_pages == set(ALL_PAGES) - PERMITTED[role]
    assert all(r["user"] == f"{role}@clinic.example" and r["role"] == role for r in denied_rows(signed_db))


def test_a_director_sees_only_their_clinic_and_no_patient(signed_db: Path) -> None:
    at = signed_in("director")
    with db.reader(signed_db) as con:
        north = con.execute("SELECT count(*) FROM patients WHERE clinic = 'Northside'").fetchone()[0]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Patients"] == f"{north:,}"  # 62 of the 120 patients
    captions = " ".join(c.value for c in at.caption)
    assert "Scores from" in captions and "Database:" not in captions and str(signed_db) not in captions
    at.switch_page("pages/clinic_outcomes.py").run()
    assert {m.label: m.value for m in at.metric}["Patients in cohort"] == f"{north:,}"
    assert at.sidebar.multiselect(key="f_clinics").options == ["Northside"]


def test_a_clinician_is_refused_a_patient_of_another_clinic(signed_db: Path) -> None:
    at = signed_in("clinician")
    at.switch_page("pages/patient_trends.py")
    at.query_params["patient"] = "K00002"  # Riverside
    at.run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == ["Not permitted: this patient is not in your clinics."]
    assert not any(t.value.startswith("Patient K00002") for t in at.title)
    assert [(r["action"], r["target"]) for r in denied_rows(signed_db)] == [("denied", "K00002")]
    at.query_params["patient"] = "K00001"  # Northside
    at.run()
    assert at.title[0].value == "Patient K00001"
    at.run()  # a rerun is not a second view
    viewed = audit.query(signed_db, action="patient viewed")
    assert [(r["user"], r["target"]) for r in viewed] == [("clinician@clinic.example", "K00001")]


def test_a_clinicians_caseload_holds_only_their_clinic(signed_db: Path) -> None:
    at = signed_in("clinician")
    with db.reader(signed_db) as con:
        north = con.execute("SELECT count(*) FROM patients WHERE clinic = 'Northside'").fetchone()[0]
    assert at.metric[0].label == "Patients"
    frame = at.dataframe[0].value
    assert set(frame["clinic"]) == {"Northside"} and len(frame) <= north


def test_a_researcher_without_the_permission_is_not_offered_calendar_dates(signed_db: Path) -> None:
    at = signed_in("researcher")
    at.switch_page("pages/research_export.py").run()
    assert not at.exception, at.exception
    assert at.segmented_control(key="rx_dates").options == ["Days from first dose", "Weeks from first dose"]
    accounts.set_role(signed_db, "researcher@clinic.example", "researcher", calendar_dates=True)
    at.run()
    assert at.segmented_control(key="rx_dates").options[-1] == "Calendar dates"


def test_an_expired_session_returns_to_sign_in_and_is_audited(signed_db: Path) -> None:
    at = app()
    then = dt.datetime.now(dt.UTC).replace(tzinfo=None) - accounts.IDLE_TIMEOUT - dt.timedelta(seconds=5)
    at.session_state["_kap_auth"] = {
        "email": "admin@clinic.example",
        "source": "local",
        "signed_in_at": then,
        "last_seen": then,
    }
    at.run()
    assert [t.value for t in at.subheader] == ["Sign in"]
    rows = audit.query(signed_db, action="sign-out")
    assert len(rows) == 1 and '"session ended (idle)"' in rows[0]["detail"]


def test_sign_out_ends_the_session(signed_db: Path) -> None:
    at = signed_in("admin")
    at.sidebar.button(key="sign_out").click().run()
    assert [t.value for t in at.subheader] == ["Sign in"]
    assert [r["action"] for r in audit.query(signed_db)] == ["sign-out"]


def test_organisation_sign_in_matches_an_enabled_account_by_email(signed_db: Path) -> None:
    at = app()
    at.secrets["auth"] = OIDC
    at.run()
    assert [b.label for b in at.button][0] == "Sign in with your organisation"
    at = app()
    at.secrets["auth"] = OIDC
    at.user = {"is_logged_in": True, "email": "Org.Director@clinic.example"}
    at.run()
    assert not at.exception, at.exception
    assert "Signed in as org.director@clinic.example · director" in [t.value for t in at.sidebar.text]
    at.switch_page("pages/patient_trends.py").run()
    assert [e.value for e in at.error] == ["Not permitted: your role cannot open this page."]
    rows = audit.query(signed_db)
    assert [(r["action"], r["target"]) for r in rows] == [("sign-in", None), ("denied", "patient_trends")]
    assert '"oidc"' in rows[0]["detail"]


def test_organisation_sign_in_of_an_unknown_email_is_not_permitted(signed_db: Path) -> None:
    at = app()
    at.secrets["auth"] = OIDC
    at.user = {"is_logged_in": True, "email": "stranger@elsewhere.example"}
    at.run()
    assert not at.exception, at.exception
    assert at.error[0].value.startswith("Not permitted")
    assert [b.label for b in at.button] == ["Sign out"]
    assert not at.metric and not at.dataframe
    rows = audit.query(signed_db)
    assert [(r["user"], r["action"]) for r in rows] == [("stranger@elsewhere.example", "denied")]


def test_a_disabled_account_is_signed_out_at_once(signed_db: Path) -> None:
    at = signed_in("director")
    accounts.set_disabled(signed_db, "director@clinic.example", True)
    at.run()
    assert [t.value for t in at.subheader] == ["Sign in"]


def test_when_sign_in_is_required_and_the_audit_cannot_be_written_no_patient_is_shown(
    signed_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = signed_in("clinician")
    (tmp_path / "audit-dir").mkdir()
    monkeypatch.setenv("KAP_AUDIT_DB", str(tmp_path / "audit-dir"))  # a folder: cannot be opened
    at.switch_page("pages/patient_trends.py")
    at.query_params["patient"] = "K00001"
    at.run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [
        "The audit trail cannot be written, so patient-level data is not shown. Ask your administrator to "
        "check the audit file."
    ]
    assert not any(t.value.startswith("Patient K00001") for t in at.title)


def test_without_accounts_the_app_is_the_local_administrator_and_says_so(app_env: Path) -> None:
    at = app().run()
    assert not at.exception, at.exception
    assert any("Serving only this computer (127.0.0.1)" in c.value for c in at.sidebar.caption)


def test_a_patient_link_followed_before_sign_in_opens_that_patient_after_it(signed_db: Path) -> None:
    at = app()
    at.switch_page("pages/patient_trends.py")
    at.query_params["patient"] = "K00001"  # Northside
    at.run()
    assert [t.value for t in at.subheader] == ["Sign in"]
    assert "patient" not in at.query_params  # not in the address while nobody is signed in
    assert "K00001" not in texts(at)
    at.text_input(key="signin_email").input("clinician@clinic.example")
    at.text_input(key="signin_password").input(PASSWORD)
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Patient K00001"
    assert at.query_params["patient"] in ("K00001", ["K00001"])  # AppTest keeps the set value
    viewed = audit.query(signed_db, action="patient viewed")
    assert [(r["user"], r["target"]) for r in viewed] == [("clinician@clinic.example", "K00001")]


def test_a_link_to_another_clinics_patient_is_still_refused_after_sign_in(signed_db: Path) -> None:
    at = app()
    at.switch_page("pages/patient_trends.py")
    at.query_params["patient"] = "K00002"  # Riverside
    at.run()
    at.text_input(key="signin_email").input("clinician@clinic.example")
    at.text_input(key="signin_password").input(PASSWORD)
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == ["Not permitted: this patient is not in your clinics."]
    assert [(r["action"], r["target"]) for r in denied_rows(signed_db)] == [("denied", "K00002")]
