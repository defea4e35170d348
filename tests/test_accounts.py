"""Accounts: argon2id hashes (never the password), lockout after repeated failures, session expiry."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest

from kapdata import accounts, db

PW = "correct horse battery"
T0 = dt.datetime(2026, 12, 1, 9, 0, 0)


@pytest.fixture()
def path(tmp_path: Path) -> Path:
    p = tmp_path / "kap.duckdb"
    with db.session(p):
        pass
    return p


def test_the_password_is_stored_only_as_an_argon2id_hash(path: Path) -> None:
    accounts.add(path, "a@clinic.example", "admin", (), PW)
    raw = duckdb.connect(str(path), read_only=True)
    stored = raw.execute("SELECT password_hash FROM users").fetchone()[0]
    everything = str(raw.execute("SELECT * FROM users").fetchall())
    raw.close()
    assert stored.startswith("$argon2id$")
    assert PW not in everything and PW not in path.read_bytes().decode("latin-1")


def test_sign_in_with_the_right_password_and_email_in_any_case(path: Path) -> None:
    accounts.add(path, "A@Clinic.example", "director", ("North",), PW)
    acc = accounts.authenticate(path, " a@clinic.EXAMPLE ", PW, now=T0)
    assert (acc.email, acc.role, acc.clinics) == ("a@clinic.example", "director", ("North",))
    p = acc.principal("local")
    assert p.scope() == ("North",) and p.may_open("clinic_outcomes") and not p.may_open("patient_trends")


def test_wrong_password_unknown_email_and_no_password_all_fail(path: Path) -> None:
    accounts.add(path, "a@clinic.example", "admin", (), PW)
    accounts.add(path, "oidc@clinic.example", "director")  # organisation sign-in only
    for email, pw in (
        ("a@clinic.example", "wrong password"),
        ("b@clinic.example", PW),
        ("oidc@clinic.example", ""),
    ):
        with pytest.raises(accounts.SignInFailed):
            accounts.authenticate(path, email, pw, now=T0)


def test_five_failures_lock_the_account_for_fifteen_minutes_even_for_the_right_password(path: Path) -> None:
    accounts.add(path, "a@clinic.example", "admin", (), PW)
    for i in range(4):
        with pytest.raises(accounts.SignInFailed) as err:
            accounts.authenticate(path, "a@clinic.example", "wrong", now=T0 + dt.timedelta(seconds=i))
        assert err.value.reason == "wrong password"
    with pytest.raises(accounts.SignInFailed) as err:
        accounts.authenticate(path, "a@clinic.example", "wrong", now=T0 + dt.timedelta(seconds=4))
    assert err.value.reason == "wrong password; account locked"
    with pytest.raises(accounts.SignInFailed) as err:
        accounts.authenticate(path, "a@clinic.example", PW, now=T0 + dt.timedelta(minutes=14, seconds=59))
    assert err.value.reason == "locked"
    acc = accounts.authenticate(path, "a@clinic.example", PW, now=T0 + dt.timedelta(minutes=15, seconds=5))
    assert acc.email == "a@clinic.example"
    with db.reader(path) as con:
        assert con.execute("SELECT failed_attempts, locked_until FROM users").fetchone() == (0, None)


def test_a_success_clears_earlier_failures(path: Path) -> None:
    accounts.add(path, "a@clinic.example", "admin", (), PW)
    for _ in range(4):
        with pytest.raises(accounts.SignInFailed):
            accounts.authenticate(path, "a@clinic.example", "wrong", now=T0)
    accounts.authenticate(path, "a@clinic.example", PW, now=T0)
    for _ in range(4):
        with pytest.raises(accounts.SignInFailed):
            accounts.authenticate(path, "a@clinic.example", "wrong", now=T0)
    assert accounts.authenticate(path, "a@clinic.example", PW, now=T0)  # 4 + 4 failures, never 5 in a row


def test_a_disabled_account_cannot_sign_in_and_enable_restores_it(path: Path) -> None:
    accounts.add(path, "a@clinic.example", "admin", (), PW)
    accounts.set_disabled(path, "a@clinic.example", True)
    with pytest.raises(accounts.SignInFailed) as err:
        accounts.authenticate(path, "a@clinic.example", PW, now=T0)
    assert err.value.reason == "disabled"
    accounts.set_disabled(path, "a@clinic.example", False)
    assert accounts.authenticate(path, "a@clinic.example", PW, now=T0)


def test_session_expiry_idle_30_minutes_absolute_12_hours() -> None:
    assert accounts.session_expired(T0, T0, T0 + dt.timedelta(minutes=29, seconds=59)) is None
    assert accounts.session_expired(T0, T0, T0 + dt.timedelta(minutes=30)) == "idle"
    late = T0 + dt.timedelta(hours=12)
    assert accounts.session_expired(T0, late - dt.timedelta(minutes=1), late) == "absolute"
    assert accounts.session_expired(T0, late, late - dt.timedelta(seconds=1)) is None


def test_refusals_in_words(path: Path) -> None:
    accounts.add(path, "a@clinic.example", "admin", (), PW)
    cases = [
        (lambda: accounts.add(path, "a@clinic.example", "admin"), "already exists"),
        (lambda: accounts.add(path, "not-an-email", "admin"), "is not an e-mail address"),
        (lambda: accounts.add(path, "b@clinic.example", "boss"), "unknown role"),
        (lambda: accounts.add(path, "b@clinic.example", "admin", (), "short"), "at least 10 characters"),
        (lambda: accounts.add(path, "b@c.example", "director", calendar_dates=True), "for researchers"),
        (lambda: accounts.set_role(path, "nobody@clinic.example", "admin"), "no account"),
    ]
    for call, words in cases:
        with pytest.raises(accounts.AccountError, match=words):
            call()


def test_a_role_change_drops_the_calendar_permission_of_a_non_researcher(path: Path) -> None:
    accounts.add(path, "r@clinic.example", "researcher", calendar_dates=True)
    acc = accounts.set_role(path, "r@clinic.example", "director", ["North"])
    assert (acc.role, acc.clinics, acc.calendar_dates) == ("director", ("North",), False)
