"""``python -m kapdata users ...``: the account commands' contracts."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from kapdata import accounts, audit
from kapdata.__main__ import main


@pytest.fixture()
def dbfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("KAP_AUDIT_DB", raising=False)
    return str(tmp_path / "kap.duckdb")


def test_add_list_set_role_disable_enable(dbfile: str, capsys, monkeypatch) -> None:
    assert (
        main(
            ["users", "add", "Dir@Clinic.example", "--role", "director", "--clinic", "North", "--db", dbfile]
        )
        == 0
    )
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\n"))
    assert (
        main(["users", "add", "admin@clinic.example", "--role", "admin", "--password-stdin", "--db", dbfile])
        == 0
    )
    assert (
        main(
            [
                "users",
                "set-role",
                "dir@clinic.example",
                "researcher",
                "--calendar-dates",
                "yes",
                "--db",
                dbfile,
            ]
        )
        == 0
    )
    assert main(["users", "disable", "dir@clinic.example", "--db", dbfile]) == 0
    capsys.readouterr()
    assert main(["users", "list", "--json", "--db", dbfile]) == 0
    doc = {u["email"]: u for u in json.loads(capsys.readouterr().out)}
    assert doc["dir@clinic.example"] | {"created_at": None, "changed_at": None} == {
        "email": "dir@clinic.example",
        "role": "researcher",
        "clinics": ["North"],
        "calendar_dates": True,
        "password": False,
        "disabled": True,
        "locked_until": None,
        "created_at": None,
        "changed_at": None,
    }
    assert doc["admin@clinic.example"]["password"] is True
    assert accounts.authenticate(dbfile, "admin@clinic.example", "correct horse battery")
    assert main(["users", "enable", "dir@clinic.example", "--db", dbfile]) == 0
    changes = [json.loads(r["detail"])["change"] for r in audit.query(dbfile, action="user change")]
    assert changes == ["added", "added", "role", "disabled", "enabled"]


def test_refusals_are_one_line(dbfile: str, capsys, monkeypatch) -> None:
    assert main(["users", "add", "a@clinic.example", "--role", "admin", "--db", dbfile]) == 0
    capsys.readouterr()
    assert main(["users", "add", "a@clinic.example", "--role", "admin", "--db", dbfile]) == 2
    assert main(["users", "set-role", "b@clinic.example", "admin", "--db", dbfile]) == 2
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert (
        main(["users", "add", "c@clinic.example", "--role", "admin", "--password-stdin", "--db", dbfile]) == 2
    )
    assert capsys.readouterr().err.splitlines() == [
        "error: an account for a@clinic.example already exists",
        "error: no account for b@clinic.example",
        "error: a password needs at least 10 characters",
    ]
    with pytest.raises(SystemExit) as stop:
        main(["users", "add", "x@clinic.example", "--role", "boss", "--db", dbfile])
    assert stop.value.code == 2


def test_list_without_accounts_says_the_app_is_local(dbfile: str, capsys) -> None:
    from kapdata import db

    with db.session(dbfile):
        pass
    assert main(["users", "list", "--db", dbfile]) == 0
    assert capsys.readouterr().out.startswith("no accounts")
