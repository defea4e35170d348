"""Staff accounts: the ``users`` table, argon2id passwords, lockout and session expiry.

An account is a staff member's e-mail (the account identifier; never a patient's), a role, the clinics it
may see (none: every clinic), and for researchers the permission to export calendar dates. A password is
optional: an account without one signs in only through the organisation's identity provider (OIDC).
Passwords are hashed with argon2id (``argon2-cffi``); the password itself is never stored or logged.
After ``MAX_FAILURES`` failed sign-ins in a row the account is locked for ``LOCKOUT`` (even the right
password is refused meanwhile). A signed-in session ends after ``IDLE_TIMEOUT`` without activity, and at
the latest ``ABSOLUTE_TIMEOUT`` after signing in. No Streamlit here.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import duckdb

if TYPE_CHECKING:
    import argon2

from kapdata import db
from kapdata.access import ROLES, Principal

MAX_FAILURES = 5
LOCKOUT = dt.timedelta(minutes=15)
IDLE_TIMEOUT = dt.timedelta(minutes=30)
ABSOLUTE_TIMEOUT = dt.timedelta(hours=12)
MIN_PASSWORD = 10
MAX_PASSWORD = 1024

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,253}\.[^@\s]{1,63}$")


@functools.cache
def _hasher() -> argon2.PasswordHasher:
    """argon2id with the library's recommended parameters (made on first use: the command line's reads and
    the app's start-up need no password hashing)."""
    import argon2

    return argon2.PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against for an unknown e-mail, so a wrong address takes as long as a wrong password."""
    return _hasher().hash("not a password of anyone")


class AccountError(ValueError):
    """A user change refused; the text is our own words."""


class SignInFailed(Exception):
    """A local sign-in refused. ``reason`` is for the audit trail only (unknown, disabled, no password,
    locked, wrong password); the person is told the same thing whatever it is."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


SIGN_IN_FAILED_TEXT = (
    "Sign-in failed: wrong e-mail or password, or the account is locked after repeated failures. "
    "Try again later, or ask your administrator."
)


@dataclass(frozen=True)
class Account:
    email: str
    role: str
    clinics: tuple[str, ...]
    calendar_dates: bool
    has_password: bool
    disabled: bool
    failed_attempts: int
    locked_until: dt.datetime | None
    created_at: dt.datetime
    changed_at: dt.datetime

    def principal(self, source: str) -> Principal:
        return Principal(
            email=self.email,
            role=self.role,
            clinics=self.clinics,
            calendar_dates=self.calendar_dates,
            source=source,
        )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def normalise_email(email: str) -> str:
    text = (email or "").strip().lower()
    if not _EMAIL.match(text):
        raise AccountError(f"{email!r} is not an e-mail address")
    return text


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
    return role


def _check_clinics(clinics: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(c.strip() for c in clinics))
    if any(not c for c in out):
        raise AccountError("a clinic name cannot be empty")
    return out


def _check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"a password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"a password can have at most {MAX_PASSWORD} characters")
    return password


_SELECT = (
    "SELECT email, role, clinics, calendar_dates, password_hash IS NOT NULL, disabled, failed_attempts, "
    "locked_until, created_at, changed_at FROM users"
)


def _account(row: tuple[object, ...]) -> Account:
    return Account(
        email=str(row[0]),
        role=str(row[1]),
        clinics=tuple(row[2] or ()),  # type: ignore[arg-type]
        calendar_dates=bool(row[3]),
        has_password=bool(row[4]),
        disabled=bool(row[5]),
        failed_attempts=int(row[6]),  # type: ignore[call-overload]
        locked_until=row[7],  # type: ignore[arg-type]
        created_at=row[8],  # type: ignore[arg-type]
        changed_at=row[9],  # type: ignore[arg-type]
    )


def _has_users_table(con: duckdb.DuckDBPyConnection) -> bool:
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' AND table_name = 'users'"
    ).fetchone()
    return bool(row and row[0])


def get(con: duckdb.DuckDBPyConnection, email: str) -> Account | None:
    if not _has_users_table(con):
        return None
    row = con.execute(_SELECT + " WHERE email = ?", [email.strip().lower()]).fetchone()
    return _account(row) if row else None


def list_accounts(con: duckdb.DuckDBPyConnection) -> list[Account]:
    if not _has_users_table(con):
        return []
    return [_account(r) for r in con.execute(_SELECT + " ORDER BY email").fetchall()]


def count(con: duckdb.DuckDBPyConnection) -> int:
    if not _has_users_table(con):
        return 0
    row = con.execute("SELECT count(*) FROM users").fetchone()
    return int(row[0]) if row else 0


def any_accounts(path: str | os.PathLike[str] | None = None) -> bool:
    """Does any account exist (enabled or not)? False when there is no database yet."""
    if not db.db_path(path).exists():
        return False
    with db.reader(path) as con:
        return count(con) > 0


def add(
    path: str | os.PathLike[str] | None,
    email: str,
    role: str,
    clinics: tuple[str, ...] | list[str] = (),
    password: str | None = None,
    *,
    calendar_dates: bool = False,
) -> Account:
    """A new account; without a password it can sign in only through the organisation (OIDC)."""
    address = normalise_email(email)
    _check_role(role)
    places = _check_clinics(clinics)
    if calendar_dates and role not in ("researcher", "admin"):
        raise AccountError("the calendar-dates permission is for researchers")
    hashed = _hasher().hash(_check_password(password)) if password is not None else None
    now = _now()
    with db.session(path) as con:
        if get(con, address) is not None:
            raise AccountError(f"an account for {address} already exists")
        con.execute(
            "INSERT INTO users (email, role, clinics, calendar_dates, password_hash, disabled, "
            "failed_attempts, locked_until, created_at, changed_at) "
            "VALUES (?, ?, ?, ?, ?, false, 0, NULL, ?, ?)",
            [address, role, list(places), calendar_dates, hashed, now, now],
        )
        account = get(con, address)
    assert account is not None
    return account


def _update(path: str | os.PathLike[str] | None, email: str, statement: str, params: list[object]) -> Account:
    """Run one of the fixed UPDATE statements below; its last two parameters are changed_at and the email."""
    address = email.strip().lower()
    with db.session(path) as con:
        if get(con, address) is None:
            raise AccountError(f"no account for {email}")
        con.execute(statement, [*params, _now(), address])
        account = get(con, address)
    assert account is not None
    return account


_SET_ROLE = (
    "UPDATE users SET role = ?, clinics = coalesce(?, clinics), "
    "calendar_dates = coalesce(?, calendar_dates), changed_at = ? WHERE email = ?"
)
_SET_DISABLED = (
    "UPDATE users SET disabled = ?, failed_attempts = 0, locked_until = NULL, changed_at = ? WHERE email = ?"
)
_SET_PASSWORD = (
    "UPDATE users SET password_hash = ?, failed_attempts = 0, locked_until = NULL, changed_at = ? "
    "WHERE email = ?"
)


def set_role(
    path: str | os.PathLike[str] | None,
    email: str,
    role: str,
    clinics: tuple[str, ...] | list[str] | None = None,
    calendar_dates: bool | None = None,
) -> Account:
    """Change the role (and, when given, the clinics and the calendar-dates permission). Only researchers and
    admins keep a calendar-dates permission they are not given again."""
    _check_role(role)
    places = None if clinics is None else list(_check_clinics(clinics))
    if calendar_dates is None and role not in ("researcher", "admin"):
        calendar_dates = False
    return _update(path, email, _SET_ROLE, [role, places, calendar_dates])


def set_disabled(path: str | os.PathLike[str] | None, email: str, disabled: bool) -> Account:
    return _update(path, email, _SET_DISABLED, [disabled])


def set_password(path: str | os.PathLike[str] | None, email: str, password: str | None) -> Account:
    """A new password (None: organisation sign-in only); clears a lockout."""
    hashed = _hasher().hash(_check_password(password)) if password is not None else None
    return _update(path, email, _SET_PASSWORD, [hashed])


def authenticate(
    path: str | os.PathLike[str] | None, email: str, password: str, now: dt.datetime | None = None
) -> Account:
    """A local sign-in: the account, or ``SignInFailed``. A failure is counted; the ``MAX_FAILURES``-th in a
    row locks the account for ``LOCKOUT``; success clears the count."""
    when = now or _now()
    address = (email or "").strip().lower()
    with db.session(path) as con:
        row = (
            con.execute("SELECT password_hash FROM users WHERE email = ?", [address]).fetchone()
            if _has_users_table(con)
            else None
        )
        account = get(con, address)
        if account is None or row is None:
            _verify(_dummy_hash(), password)
            raise SignInFailed("unknown e-mail")
        if account.locked_until is not None and account.locked_until > when:
            raise SignInFailed("locked")
        stored = row[0]
        ok = stored is not None and _verify(str(stored), password)
        if not ok:
            failures = account.failed_attempts + 1
            locked = when + LOCKOUT if failures >= MAX_FAILURES else None
            con.execute(
                "UPDATE users SET failed_attempts = ?, locked_until = ? WHERE email = ?",
                [0 if locked else failures, locked, address],
            )
            reason = "no password (organisation sign-in only)" if stored is None else "wrong password"
            raise SignInFailed(reason + ("; account locked" if locked else ""))
        if account.disabled:
            raise SignInFailed("disabled")
        if (
            account.failed_attempts
            or account.locked_until is not None
            or _hasher().check_needs_rehash(str(stored))
        ):
            con.execute(
                "UPDATE users SET failed_attempts = 0, locked_until = NULL, password_hash = ? "
                "WHERE email = ?",
                [_hasher().hash(password) if _hasher().check_needs_rehash(str(stored)) else stored, address],
            )
    return account


def _verify(stored: str, password: str) -> bool:
    from argon2 import exceptions

    try:
        return _hasher().verify(stored, password)
    except (exceptions.VerificationError, exceptions.InvalidHashError):
        return False


def session_expired(signed_in_at: dt.datetime, last_seen: dt.datetime, now: dt.datetime) -> str | None:
    """Why a signed-in session has ended ("idle" or "absolute"), or None while it is valid."""
    if now - signed_in_at >= ABSOLUTE_TIMEOUT:
        return "absolute"
    if now - last_seen >= IDLE_TIMEOUT:
        return "idle"
    return None
