"""The audit trail: an append-only, hash-chained record of who did what (HIPAA §164.312(b) audit controls).

It lives in its own DuckDB file next to the database (``<db>.audit.duckdb``, or ``$KAP_AUDIT_DB``), so
recording a page view never needs the main database's write lock, a read-only main database still serves
pages, and undoing an import batch can never touch it.

Each row carries the SHA-256 of the previous row: ``hash = sha256(prev_hash + canonical JSON of the row's
other fields)``. ``verify`` recomputes the chain and names the first row that was edited, deleted or
inserted. (Deleting the newest rows leaves a shorter chain that is still whole: keep a copy of ``head()``
elsewhere, e.g. in the backup log, to detect that.)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

if TYPE_CHECKING:  # pandas only where the trail is written as CSV (not when a command records a row)
    import pandas as pd

from kapdata import csvsafe, db

GENESIS = "0" * 64

#: The actions recorded (``action`` column).
ACTIONS: tuple[str, ...] = (
    "sign-in",
    "failed sign-in",
    "sign-out",
    "patient viewed",
    "report printed",
    "export",
    "import",
    "undo",
    "settings change",
    "acknowledgement",
    "discharge",
    "user change",
    "denied",
)

COLUMNS: tuple[str, ...] = ("seq", "at", "user", "role", "action", "target", "detail", "prev_hash", "hash")

_CREATE = """CREATE TABLE IF NOT EXISTS audit (
    seq BIGINT PRIMARY KEY,
    "at" TIMESTAMP NOT NULL,
    "user" VARCHAR NOT NULL,
    role VARCHAR NOT NULL,
    action VARCHAR NOT NULL,
    target VARCHAR,
    detail VARCHAR NOT NULL,
    prev_hash VARCHAR NOT NULL,
    hash VARCHAR NOT NULL
)"""


class AuditUnavailable(RuntimeError):
    """The audit trail could not be written (the caller decides: fail closed, or log and go on)."""


def audit_path(db_file: str | os.PathLike[str] | None = None) -> Path:
    """``$KAP_AUDIT_DB`` if set, else ``<database path>.audit.duckdb``."""
    env = os.environ.get("KAP_AUDIT_DB")
    if env:
        return Path(env)
    target = db.db_path(db_file)
    return target.with_name(target.name + ".audit.duckdb")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def canonical(
    seq: int, at: dt.datetime, user: str, role: str, action: str, target: str | None, detail: str
) -> str:
    """The row's fields (all but the hashes) as the canonical JSON text that is hashed."""
    doc = {
        "seq": int(seq),
        "at": at.isoformat(timespec="microseconds"),
        "user": user,
        "role": role,
        "action": action,
        "target": target,
        "detail": detail,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def row_hash(prev_hash: str, text: str) -> str:
    return hashlib.sha256((prev_hash + text).encode("utf-8")).hexdigest()


@contextmanager
def _connection(
    db_file: str | os.PathLike[str] | None, *, read_only: bool = False
) -> Iterator[duckdb.DuckDBPyConnection]:
    path = audit_path(db_file)
    con = db.connect(path, read_only=read_only)  # the same lock-retry as the main database
    try:
        if not read_only:
            con.execute(_CREATE)
        yield con
    finally:
        con.close()


def record(
    db_file: str | os.PathLike[str] | None,
    user: str,
    role: str,
    action: str,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
    *,
    at: dt.datetime | None = None,
) -> int:
    """Append one row (one short transaction); its sequence number. Raises ``AuditUnavailable``."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    text = json.dumps(detail or {}, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    when = at or _utcnow()
    try:
        with _connection(db_file) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                last = con.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
                seq, prev = (int(last[0]) + 1, str(last[1])) if last else (1, GENESIS)
                digest = row_hash(prev, canonical(seq, when, user, role, action, target, text))
                con.execute(
                    "INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [seq, when, user, role, action, target, text, prev, digest],
                )
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
    except (duckdb.Error, OSError, db.DatabaseBusy) as exc:
        raise AuditUnavailable("the audit trail could not be written") from exc
    return seq


@dataclass(frozen=True)
class Verification:
    rows: int
    ok: bool
    broken_seq: int | None = None  # the first row whose chain does not hold
    reason: str = ""

    def message(self) -> str:
        if self.ok:
            return f"audit chain whole: {self.rows} rows"
        return f"audit chain broken at row {self.broken_seq}: {self.reason}"


def _rows(con: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
    return con.execute(
        'SELECT seq, "at", "user", role, action, target, detail, prev_hash, hash FROM audit ORDER BY seq'
    ).fetchall()


def verify(db_file: str | os.PathLike[str] | None = None) -> Verification:
    """Recompute the chain: sequence numbers 1, 2, 3…, each row's prev_hash the previous row's hash, each
    hash that of its own fields. The first row where any of this fails is named."""
    path = audit_path(db_file)
    if not path.exists():
        return Verification(rows=0, ok=True)
    with _connection(db_file, read_only=True) as con:
        rows = _rows(con)
    prev, expected_seq = GENESIS, 1
    for seq, at, user, role, action, target, detail, prev_hash, digest in rows:
        if seq != expected_seq:
            why = "a row is missing before it" if seq > expected_seq else "a row was inserted or renumbered"
            return Verification(len(rows), False, int(seq), f"{why} (expected row {expected_seq})")
        if prev_hash != prev:
            return Verification(len(rows), False, int(seq), "it does not follow the row before it")
        if row_hash(prev_hash, canonical(seq, at, user, role, action, target, detail)) != digest:
            return Verification(len(rows), False, int(seq), "its contents were changed")
        prev, expected_seq = digest, expected_seq + 1
    return Verification(rows=len(rows), ok=True)


def head(db_file: str | os.PathLike[str] | None = None) -> tuple[int, str]:
    """The newest row's sequence number and hash ((0, GENESIS) when empty)."""
    if not audit_path(db_file).exists():
        return 0, GENESIS
    with _connection(db_file, read_only=True) as con:
        row = con.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    return (int(row[0]), str(row[1])) if row else (0, GENESIS)


def query(
    db_file: str | os.PathLike[str] | None = None,
    *,
    since: dt.date | None = None,
    user: str | None = None,
    action: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Rows (newest last), filtered in SQL with parameters."""
    if not audit_path(db_file).exists():
        return []
    sql = (
        'SELECT seq, "at", "user", role, action, target, detail, prev_hash, hash FROM audit '
        'WHERE (CAST($since AS TIMESTAMP) IS NULL OR "at" >= $since) AND ($user IS NULL OR "user" = $user) '
        "AND ($action IS NULL OR action = $action) ORDER BY seq"
    )
    params: dict[str, Any] = {
        "since": dt.datetime.combine(since, dt.time()) if since else None,
        "user": user,
        "action": action,
    }
    if limit is not None:
        sql = f"SELECT * FROM ({sql.replace(' ORDER BY seq', ' ORDER BY seq DESC')} LIMIT {int(limit)}) "
        sql += "ORDER BY seq"
    with _connection(db_file, read_only=True) as con:
        cur = con.execute(sql, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    out = pd.DataFrame(list(rows), columns=list(COLUMNS))
    if len(out):
        out["at"] = pd.to_datetime(out["at"]).dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return out


def csv_bytes(rows: Sequence[dict[str, Any]]) -> bytes:
    """The rows as CSV bytes (formula-neutralised through ``csvsafe``), for a download button."""
    return csvsafe.to_csv_bytes(frame(rows))


def write_csv(rows: Sequence[dict[str, Any]], out: str | os.PathLike[str]) -> int:
    """Write the rows as CSV through ``csvsafe``; the number of rows."""
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    csvsafe.write_csv(frame(rows), target)
    return len(rows)
