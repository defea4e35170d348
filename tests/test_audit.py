"""The audit trail: a SHA-256 hash chain that shows an edited, deleted or inserted row; the CLI around it."""

from __future__ import annotations

import csv
import datetime as dt
import getpass
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from kapdata import audit, db, ingest, sample
from kapdata.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
AT = dt.datetime(2026, 12, 1, 9, 0, 0)


@pytest.fixture()
def trail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("KAP_AUDIT_DB", raising=False)
    path = tmp_path / "kap.duckdb"
    for i, action in enumerate(("sign-in", "patient viewed", "export", "sign-out")):
        at = AT + dt.timedelta(minutes=i)
        audit.record(path, "a@clinic.example", "admin", action, f"T{i}", {"i": i}, at=at)
    return path


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kapdata", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_the_first_hash_is_computed_as_documented(trail: Path) -> None:
    first = audit.query(trail)[0]
    text = json.dumps(
        {
            "action": "sign-in",
            "at": "2026-12-01T09:00:00.000000",
            "detail": '{"i":0}',
            "role": "admin",
            "seq": 1,
            "target": "T0",
            "user": "a@clinic.example",
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    assert first["prev_hash"] == "0" * 64
    assert first["hash"] == hashlib.sha256(("0" * 64 + text).encode()).hexdigest()
    assert audit.query(trail)[1]["prev_hash"] == first["hash"]
    assert audit.audit_path(trail) == trail.with_name("kap.duckdb.audit.duckdb")


def test_a_whole_chain_verifies(trail: Path) -> None:
    assert audit.verify(trail) == audit.Verification(rows=4, ok=True)
    assert main(["audit", "verify", "--db", str(trail)]) == 0


def test_editing_one_row_with_duckdb_makes_audit_verify_fail_naming_it(trail: Path, capsys) -> None:
    con = duckdb.connect(str(audit.audit_path(trail)))
    con.execute("""UPDATE audit SET "user" = 'someone.else@clinic.example' WHERE seq = 3""")
    con.close()
    run = cli("audit", "verify", "--db", str(trail))
    assert run.returncode == 1
    assert run.stderr == "error: audit chain broken at row 3: its contents were changed\n"


def test_deleting_a_row_is_detected_at_the_row_after_it(trail: Path, capsys) -> None:
    con = duckdb.connect(str(audit.audit_path(trail)))
    con.execute("DELETE FROM audit WHERE seq = 2")
    con.close()
    assert main(["audit", "verify", "--db", str(trail)]) == 1
    assert capsys.readouterr().err == (
        "error: audit chain broken at row 3: a row is missing before it (expected row 2)\n"
    )


def test_rewriting_a_row_and_its_own_hash_breaks_the_next_link(trail: Path) -> None:
    rows = audit.query(trail)
    r = rows[1]
    text = audit.canonical(
        r["seq"], r["at"], "x@clinic.example", r["role"], r["action"], r["target"], r["detail"]
    )
    forged = audit.row_hash(r["prev_hash"], text)
    con = duckdb.connect(str(audit.audit_path(trail)))
    con.execute("""UPDATE audit SET "user" = 'x@clinic.example', hash = ? WHERE seq = 2""", [forged])
    con.close()
    result = audit.verify(trail)
    assert (result.ok, result.broken_seq, result.reason) == (False, 3, "it does not follow the row before it")


def test_audit_csv_filters_and_goes_through_csvsafe(trail: Path, tmp_path: Path) -> None:
    audit.record(trail, "=cmd|' /C calc'!A0", "cli", "user change", "@x", {}, at=AT + dt.timedelta(hours=1))
    out = tmp_path / "audit.csv"
    assert main(["audit", "--db", str(trail), "--action", "user change", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [(r["seq"], r["user"], r["target"]) for r in rows] == [("5", "'=cmd|' /C calc'!A0", "'@x")]
    assert main(["audit", "--db", str(trail), "--user", "A@clinic.example", "--out", str(out)]) == 0
    assert len(list(csv.DictReader(out.open(encoding="utf-8")))) == 4
    assert main(["audit", "--db", str(trail), "--since", "2026-12-02", "--out", str(out)]) == 0
    assert len(list(csv.DictReader(out.open(encoding="utf-8")))) == 0


def test_audit_usage_errors_are_one_line_exit_2(trail: Path, capsys) -> None:
    assert main(["audit", "--db", str(trail)]) == 2
    assert main(["audit", "--db", str(trail), "--since", "yesterday", "--out", "x.csv"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "error: give --out FILE.csv (or: audit verify)",
        "error: --since 'yesterday': give a date as YYYY-MM-DD",
    ]


def test_cli_writes_are_audited_as_the_os_user_and_undo_never_touches_the_trail(tmp_path: Path) -> None:
    path = tmp_path / "kap.duckdb"
    files = sample.write_sample(20, tmp_path / "csv", seed=3)
    assert main(["load", *map(str, files), "--db", str(path)]) == 0
    assert main(["settings", "overdue_days=21", "--db", str(path)]) == 0
    assert main(["users", "add", "d@clinic.example", "--role", "director", "--db", str(path)]) == 0
    assert main(["undo", "1", "--db", str(path)]) == 0
    rows = audit.query(path)
    assert [(r["user"], r["role"], r["action"]) for r in rows] == [
        (getpass.getuser(), "cli", "import"),
        (getpass.getuser(), "cli", "settings change"),
        (getpass.getuser(), "cli", "user change"),
        (getpass.getuser(), "cli", "undo"),
    ]
    assert json.loads(rows[0]["detail"])["files"][0]["batch"] == 1
    assert audit.verify(path).ok
    with db.reader(path) as con:
        assert con.execute("SELECT count(*) FROM users").fetchone() == (1,)


def test_an_export_is_audited_with_its_row_count_and_checksums(tmp_path: Path) -> None:
    path = tmp_path / "kap.duckdb"
    ingest.load_files(sample.write_sample(60, tmp_path / "csv", seed=4), path)
    out = tmp_path / "export"
    assert main(["export", "--db", str(path), "--shape", "outcomes", "--out", str(out)]) == 0
    (row,) = audit.query(path, action="export")
    detail = json.loads(row["detail"])
    data = (out / "data.csv").read_bytes()
    assert detail["files"]["data.csv"] == hashlib.sha256(data).hexdigest()
    assert detail["rows"] == len(data.decode().splitlines()) - 1
    assert detail["shape"] == "outcomes" and detail["dates"] == "relative"
