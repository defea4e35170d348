"""The command line: ``python -m kapdata COMMAND ...``.

Exit codes: 0 success; 2 a rejected import or bad usage (the report is on stderr, no traceback);
3 a research export refused by the k-anonymity floor; 1 any other failure (a missing file, a busy or
damaged database, an output path that cannot be written), reported in one line ``error: …`` on stderr.
No traceback and no database engine message reaches the user (``KAP_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import errno
import getpass
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

# Only what every command needs (and the parser) is imported here: each command imports its own modules, so
# that e.g. ``outcomes --out`` never loads pandas, pyarrow or argon2 (tests/test_cli_imports.py).
from kapdata import __version__, audit, db
from kapdata import instruments as reg
from kapdata.access import ROLES
from kapdata.export_cli import ExportError, ExportRefused, add_cli

if TYPE_CHECKING:
    from kapdata import accounts, ingest


class CliError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line: ``error: … (python -m kapdata COMMAND --help)``, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


#: OSError numbers in words (never the system's own text, which varies by platform and locale).
_OS_WORDS: dict[int, str] = {
    errno.EISDIR: "is a folder, not a file",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.ENOENT: "no such file or folder",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "is on a read-only disk",
    errno.ENOSPC: "the disk is full",
    errno.EEXIST: "already exists",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EPIPE: "the output was closed",
}


def _os_words(exc: OSError) -> str:
    where = exc.filename if exc.filename is not None else "a file"
    return f"{where}: {_OS_WORDS.get(exc.errno or 0, 'cannot be read or written')}"


def explain(exc: BaseException, db_arg: str | None = None) -> str:
    """One line for any failure; the database's own words only for errors of the database."""
    if isinstance(exc, db.NoDatabase | db.DatabaseBusy):
        return str(exc)
    if isinstance(exc, RuntimeError) and "newer than this software" in str(exc):
        return str(exc)  # our own message (db.ensure_schema)
    target = db.db_path(db_arg)
    if isinstance(exc, duckdb.Error):
        return db.explain(exc, target)
    if isinstance(exc, OSError):
        if exc.filename is not None and Path(exc.filename) == target:
            return db.explain(exc, target)
        return _os_words(exc)
    return f"something unexpected went wrong ({type(exc).__name__}); nothing more was done"


def _check_out_file(path: str, option: str = "--out") -> None:
    """A file to write: not a folder or a device, and no part of its folder is a file (missing folders
    are made by the writers)."""
    p = Path(path)
    if p.is_dir():
        raise CliError(f"{option} {path}: is a folder, not a file")
    if p.exists() and not p.is_file():
        raise CliError(f"{option} {path}: is not a regular file")
    _check_parents(p, option, path)


def _check_parents(p: Path, option: str, path: str) -> None:
    for up in p.parents:
        if up.exists():
            if not up.is_dir():
                raise CliError(f"{option} {path}: {up} is not a folder")
            break


def _check_out_dir(path: str, option: str = "--out") -> None:
    """A folder to write into (made if missing): not a file, and no part of the path is a file."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise CliError(f"{option} {path}: is a file, not a folder")
    _check_parents(p, option, path)


def _check_db(a: argparse.Namespace) -> None:
    """A --db (or KAP_DB) that is a folder or a device is refused before the database engine sees it."""
    if not hasattr(a, "db"):
        return
    target = db.db_path(a.db)
    if target.is_dir():
        raise CliError(db.explain(IsADirectoryError(), target))
    if target.exists() and not target.is_file():
        raise CliError(f"the database path ({target}) is not a regular file. Check --db or KAP_DB.")
    for up in target.parents:
        if up.exists():
            if not up.is_dir():
                raise CliError(db.explain(NotADirectoryError(), target))
            break


def _is_fhir_folder(path: Path) -> bool:
    from kapdata import fhir  # pydantic: only when a folder is given

    return fhir.is_fhir(path)


def _check_inputs(files: Sequence[str], *, mapped: bool = False) -> None:
    """Files to load are regular files (a device such as /dev/zero or a pipe is refused; a folder only as
    a folder of FHIR files); a missing file is left to the import's own report."""
    for name in files:
        p = Path(name)
        if p.is_dir() and (mapped or not _is_fhir_folder(p)):
            raise CliError(
                f"{name}: is a folder, not a file; give the files inside it (a folder is read only when it "
                "holds FHIR .json or .ndjson files)",
                2,
            )
        if p.is_dir():
            continue
        if p.exists() and not p.is_file():
            raise CliError(
                f"{name}: is not a regular file (a device or a pipe); give a .csv, .parquet or .xlsx", 2
            )


def _db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="database file (default: $KAP_DB, then data/kap.duckdb)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m kapdata", description="KAP Outcomes: load, check and summarise scale scores."
    )
    parser.add_argument("--version", action="version", version=f"kapdata {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "load",
        help="validate and load patients / sessions / scores files, FHIR R4, or any file through a mapping",
    )
    p.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help=".csv, .parquet or .xlsx; FHIR R4 .json (Bundle) or .ndjson, or a folder of them",
    )
    p.add_argument(
        "--mapping",
        metavar="MAP.json",
        help="read every FILE through this column mapping (long, wide or REDCap layout; see README)",
    )
    p.add_argument(
        "--new-patients",
        action="store_true",
        help="allow scores and sessions to create patients that are in no patients file of this load",
    )
    p.add_argument(
        "--fhir-ids-are-pseudonymous",
        action="store_true",
        help="use FHIR Patient ids as the patient_id (default: replaced by this database's keyed hash)",
    )
    _db_arg(p)
    p.add_argument(
        "--on-error",
        choices=("reject", "quarantine"),
        default="reject",
        help="reject (default): one bad row rejects everything; "
        "quarantine: load good rows, write bad ones out",
    )
    p.add_argument("--rejects", help="where quarantined rows go (default: FILE.rejects.csv beside each file)")
    p.add_argument("--dry-run", action="store_true", help="validate and report; change nothing")

    p = sub.add_parser("outcomes", help="per-patient outcomes, one row per patient × instrument × phase")
    _db_arg(p)
    p.add_argument("--instrument", help="PHQ-9, GAD-7 or PCL-5 (default: all)")
    p.add_argument("--out", required=True, help="CSV file to write")

    p = sub.add_parser("summary", help="cohort summary per instrument × phase")
    _db_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON (otherwise a table)")
    p.add_argument("--out", help="write to this file instead of standard output")

    p = sub.add_parser("batches", help="list import batches")
    _db_arg(p)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("undo", help="remove one import batch's rows")
    p.add_argument("batch_id", type=int, metavar="BATCH_ID")
    _db_arg(p)

    p = sub.add_parser("sample", help="write a synthetic cohort (patients.csv, sessions.csv, scores.csv)")
    p.add_argument("--patients", type=int, required=True, metavar="N")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--end", metavar="YYYY-MM-DD", help="the cohort's last day (default 2026-11-01)")

    p = sub.add_parser("settings", help="show or change the settings (integration window, thresholds, ...)")
    _db_arg(p)
    p.add_argument(
        "assignments",
        nargs="*",
        metavar="NAME=VALUE",
        help="e.g. integration_window_days=60 PHQ-9.response_pct=50 (none: show the settings)",
    )
    p.add_argument("--reset", action="store_true", help="put every setting back to its default")
    p.add_argument("--json", action="store_true", help="show the settings as JSON")

    p = sub.add_parser("caseload", help="the clinician's caseload, one row per patient in caseload order")
    _db_arg(p)
    p.add_argument("--as-of", metavar="YYYY-MM-DD", help="the day the caseload is for (default: today)")
    p.add_argument("--out", required=True, metavar="FILE.csv", help="CSV file to write")

    p = sub.add_parser("acknowledge", help="acknowledge a patient's safety or deterioration flag")
    p.add_argument("patient_id", metavar="PATIENT_ID")
    p.add_argument("--flag", choices=("safety", "deterioration"), required=True)
    p.add_argument("--note", help="what was done (no names or contact details)")
    p.add_argument("--as-of", metavar="YYYY-MM-DD", help="the day the flag is read for (default: today)")
    _db_arg(p)

    p = sub.add_parser("discharge", help="mark a patient discharged (or re-admit with --undo)")
    p.add_argument("patient_id", metavar="PATIENT_ID")
    p.add_argument("--note", help="why (no names or contact details)")
    p.add_argument("--undo", action="store_true", help="re-admit: back on the caseload")
    _db_arg(p)

    p = sub.add_parser("init", help="create the database and, if it is empty, load sample_data/")
    _db_arg(p)
    p.add_argument("--sample-dir", default=None, help="folder with the sample CSV files")
    add_cli(sub)

    p = sub.add_parser("users", help="staff accounts: add, list, set-role, disable, enable, set-password")
    users = p.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    q = users.add_parser("add", help="add an account (without --password-stdin: organisation sign-in only)")
    q.add_argument("email", metavar="EMAIL")
    q.add_argument("--role", required=True, choices=ROLES)
    q.add_argument("--clinic", action="append", default=[], metavar="NAME", help="repeat; none: all clinics")
    q.add_argument("--password-stdin", action="store_true", help="read a password from standard input")
    q.add_argument("--calendar-dates", action="store_true", help="a researcher may export calendar dates")
    _db_arg(q)
    q = users.add_parser("list", help="list the accounts")
    q.add_argument("--json", action="store_true")
    _db_arg(q)
    q = users.add_parser("set-role", help="change an account's role (and clinics)")
    q.add_argument("email", metavar="EMAIL")
    q.add_argument("role", choices=ROLES, metavar="ROLE")
    q.add_argument("--clinic", action="append", default=None, metavar="NAME", help="replace the clinics")
    q.add_argument("--all-clinics", action="store_true", help="clear the clinics: every clinic")
    q.add_argument("--calendar-dates", choices=("yes", "no"), help="the researcher permission")
    _db_arg(q)
    for name, what in (("disable", "disable an account"), ("enable", "enable a disabled account")):
        q = users.add_parser(name, help=what)
        q.add_argument("email", metavar="EMAIL")
        _db_arg(q)
    q = users.add_parser("set-password", help="a new password from standard input (clears a lockout)")
    q.add_argument("email", metavar="EMAIL")
    q.add_argument("--none", action="store_true", help="remove the password: organisation sign-in only")
    _db_arg(q)

    p = sub.add_parser("audit", help="write the audit trail to CSV, or verify its hash chain")
    p.add_argument("verify", nargs="?", choices=("verify",), help="check the chain (exit 0 when whole)")
    p.add_argument("--since", metavar="YYYY-MM-DD")
    p.add_argument("--user", metavar="EMAIL")
    p.add_argument("--action", choices=audit.ACTIONS, metavar="NAME")
    p.add_argument("--out", metavar="FILE.csv", help="CSV file to write")
    _db_arg(p)
    return parser


def _print_rejected(exc: ingest.ImportRejected) -> int:
    res = exc.result
    print(f"Import rejected: {res.headline()}; the database is unchanged.", file=sys.stderr)
    for problem in res.problems:
        print(f"  {problem.severity}: {problem}", file=sys.stderr)
    return 2


def cmd_load(a: argparse.Namespace) -> int:
    from kapdata import ingest

    _check_inputs(a.files, mapped=bool(a.mapping))
    if a.rejects:
        _check_out_file(a.rejects, "--rejects")
    files: list[str | ingest.SourceFile] = list(a.files)
    if a.mapping:
        from kapdata.ingest import mapping as mp

        try:
            spec = mp.load_mapping_file(a.mapping)
        except mp.MappingError as exc:
            raise CliError(f"{a.mapping}: {exc}", 2) from None
        files = [ingest.SourceFile(Path(f), Path(f).name, spec) for f in a.files]
    try:
        result = ingest.load_files(
            files,
            a.db,
            on_error=a.on_error,
            rejects=a.rejects,
            dry_run=a.dry_run,
            new_patients=a.new_patients,
            fhir_ids_are_pseudonymous=a.fhir_ids_are_pseudonymous,
        )
    except ingest.ImportRejected as exc:
        return _print_rejected(exc)
    for problem in result.problems:
        if problem.severity != "error":
            print(f"  {problem.severity}: {problem}", file=sys.stderr)
    for f in result.files:
        print(f.summary())
    if a.dry_run:
        errors = result.errors
        print(f"dry run: {len(errors)} error(s); nothing was changed")
        for problem in errors:
            print(f"  error: {problem}", file=sys.stderr)
        return 2 if errors else 0
    a.audited = ("import", ", ".join(Path(f).name for f in a.files), _import_detail(result, a.on_error))
    return 0


def _import_detail(result: ingest.LoadResult, on_error: str) -> dict[str, Any]:
    return {
        "on_error": on_error,
        "files": [
            {
                "file": Path(f.file).name,
                "kind": f.kind,
                "batch": f.batch_id,
                "rows_loaded": f.rows_loaded,
            }
            for f in result.files
        ],
    }


def cmd_outcomes(a: argparse.Namespace) -> int:
    if a.instrument and reg.lookup(a.instrument) is None:
        raise CliError(f"unknown instrument {a.instrument!r}; known: {', '.join(reg.BY_CODE)}", 2)
    from kapdata import outcomes

    _check_out_file(a.out)
    with db.reader(a.db) as con:
        n = outcomes.write_outcomes_csv(con, a.out, a.instrument)
    print(f"{a.out}: {n} rows")
    return 0


def _summary_table(doc: dict[str, Any]) -> str:
    lines = [
        f"{'instrument':<10} {'phase':<12} {'baseline':>8} {'compl.':>7} {'ITT':>5} {'mean chg':>9} "
        f"{'response (compl.)':>20} {'remission (compl.)':>20} {'response (ITT)':>18}"
    ]

    def pct(r: dict[str, Any]) -> str:
        return "-" if r["rate"] is None else f"{100 * r['rate']:.0f}% ({r['k']}/{r['n']})"

    for r in doc["results"]:
        change = r["mean_change"]["mean"]
        lines.append(
            f"{r['instrument']:<10} {r['phase']:<12} {r['patients_with_baseline']:>8} {r['completers']:>7} "
            f"{r['itt']:>5} {'-' if change is None else f'{change:+.1f}':>9} "
            f"{pct(r['rates']['completers']['response']):>20} "
            f"{pct(r['rates']['completers']['remission']):>20} "
            f"{pct(r['rates']['itt']['response']):>18}"
        )
    return "\n".join(lines)


def cmd_summary(a: argparse.Namespace) -> int:
    from kapdata import cohort

    if a.out:
        _check_out_file(a.out)
    with db.reader(a.db) as con:
        doc = cohort.summary_document(con)
    text = json.dumps(doc, indent=2, default=str) if a.json else _summary_table(doc)
    if a.out:
        Path(a.out).write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return 0


def cmd_batches(a: argparse.Namespace) -> int:
    from kapdata import ingest

    with db.reader(a.db) as con:
        rows = ingest.list_batches(con)
    if a.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("no batches")
        return 0
    print(
        f"{'batch':>5}  {'loaded at':<19}  {'kind':<8}  {'read':>7} {'loaded':>7} {'rejected':>8}  "
        "status  file"
    )
    for r in rows:
        status = "undone" if r["undone_at"] else "active"
        print(
            f"{r['batch_id']:>5}  {str(r['loaded_at'])[:19]:<19}  {r['kind']:<8}  {r['rows_read']:>7} "
            f"{r['rows_loaded']:>7} {r['rows_rejected']:>8}  {status:<6}  {r['file_name']}  "
            f"sha256 {r['sha256'][:12]}{'  (synthetic demo data)' if r.get('demo') else ''}"
        )
    return 0


def cmd_undo(a: argparse.Namespace) -> int:
    from kapdata import ingest

    if not db.db_path(a.db).exists():
        raise CliError(f"no database at {db.db_path(a.db)}")
    try:
        counts = ingest.undo_batch(a.batch_id, a.db)
    except ingest.UndoError as exc:
        raise CliError(str(exc), 2) from exc
    a.audited = ("undo", f"batch {a.batch_id}", dict(counts))
    print(
        f"batch {a.batch_id} undone: {counts['scores']} scores, {counts['sessions']} sessions, "
        f"{counts['patients']} patients removed"
        + (
            f"; {counts['patients_kept'] + counts['patients_reset']} patients set back to unknown attributes"
            if counts["patients_kept"] + counts["patients_reset"]
            else ""
        )
    )
    return 0


def cmd_sample(a: argparse.Namespace) -> int:
    from kapdata import sample

    if a.patients < 1:
        raise CliError("--patients must be at least 1", 2)
    try:
        end = dt.date.fromisoformat(a.end) if a.end else sample.AS_OF_DEFAULT
    except ValueError:
        raise CliError(f"--end {a.end!r}: give a date as YYYY-MM-DD", 2) from None
    _check_out_dir(a.out)
    paths = sample.write_sample(a.patients, a.out, seed=a.seed, as_of=end)
    for p in paths:
        print(p)
    return 0


def cmd_settings(a: argparse.Namespace) -> int:
    from kapdata import settings as ks

    if not a.assignments and not a.reset:
        current = ks.load(a.db)
        print(json.dumps(current.as_dict(), indent=2) if a.json else ks.describe(current))
        return 0
    if a.reset and a.assignments:
        raise CliError("give NAME=VALUE settings or --reset, not both", 2)
    if not db.db_path(a.db).exists():
        raise CliError(f"no database at {db.db_path(a.db)}")
    try:
        if a.reset:
            done = ks.reset(a.db)
        else:
            general, thresholds = ks.parse_assignments(a.assignments)
            done = ks.update(a.db, general=general, thresholds=thresholds)
    except ks.InvalidSettings as exc:
        raise CliError("nothing saved: " + " ".join(str(p) for p in exc.problems), 2) from exc
    if done:
        a.audited = (
            "settings change",
            "reset" if a.reset else "settings",
            {"changes": [str(c) for c in done]},
        )
    print("\n".join(str(c) for c in done) if done else "nothing changed")
    return 0


def _as_of(text: str | None) -> dt.date | None:
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise CliError(f"--as-of {text!r}: give a date as YYYY-MM-DD", 2) from None


def _staff() -> str:
    """Who is recording (the command line): the operating-system user."""
    try:
        return getpass.getuser()
    except (KeyError, OSError) as exc:
        raise CliError("cannot tell who you are (no operating-system user name)", 2) from exc


def cmd_caseload(a: argparse.Namespace) -> int:
    from kapdata import caseload

    as_of = _as_of(a.as_of)
    _check_out_file(a.out)
    with db.reader(a.db) as con:
        n = caseload.write_caseload_csv(con, a.out, as_of)
    print(f"{a.out}: {n} rows")
    return 0


def cmd_acknowledge(a: argparse.Namespace) -> int:
    from kapdata import caseload

    as_of = _as_of(a.as_of)
    try:
        ack = caseload.acknowledge(a.db, a.patient_id, a.flag, _staff(), a.note, today=as_of)
    except caseload.CaseloadError as exc:
        raise CliError(str(exc), 2) from exc
    a.audited = ("acknowledgement", ack.patient_id, {"flag": ack.flag, "flag_on": ack.flag_on})
    print(
        f"{ack.patient_id}: {caseload.FLAG_LABELS[ack.flag]} flag of {ack.flag_on:%Y-%m-%d} acknowledged "
        f"by {ack.acknowledged_by} at {ack.acknowledged_at:%Y-%m-%d %H:%M}"
    )
    return 0


def cmd_discharge(a: argparse.Namespace) -> int:
    from kapdata import caseload

    try:
        if a.undo:
            done = caseload.readmit(a.db, a.patient_id)
            print(f"{a.patient_id}: re-admitted" if done else f"{a.patient_id}: was not discharged")
            if done:
                a.audited = ("discharge", a.patient_id, {"change": "re-admitted"})
        else:
            who = _staff()
            caseload.discharge(a.db, a.patient_id, who, a.note)
            print(f"{a.patient_id}: discharged by {who}")
            a.audited = ("discharge", a.patient_id, {"change": "discharged"})
    except caseload.CaseloadError as exc:
        raise CliError(str(exc), 2) from exc
    return 0


def cmd_init(a: argparse.Namespace) -> int:
    from kapdata import bootstrap

    message = bootstrap.ensure_database(a.db, a.sample_dir)
    print(message)
    return 0


def _password_stdin() -> str:
    text = sys.stdin.readline()
    password = text.rstrip("\r\n")
    if not password:
        raise CliError("no password on standard input", 2)
    return password


def _account_line(acc: accounts.Account) -> str:
    clinics = ", ".join(acc.clinics) or "all clinics"
    extra = " · calendar dates" if acc.calendar_dates else ""
    state = "disabled" if acc.disabled else "enabled"
    sign_in = "password or organisation" if acc.has_password else "organisation only"
    return f"{acc.email}  {acc.role}  ({clinics}{extra})  {state}  sign-in: {sign_in}"


def _account_doc(acc: accounts.Account) -> dict[str, Any]:
    return {
        "email": acc.email,
        "role": acc.role,
        "clinics": list(acc.clinics),
        "calendar_dates": acc.calendar_dates,
        "password": acc.has_password,
        "disabled": acc.disabled,
        "locked_until": acc.locked_until,
        "created_at": acc.created_at,
        "changed_at": acc.changed_at,
    }


def cmd_users(a: argparse.Namespace) -> int:
    from kapdata import accounts

    action = a.users_command
    if action == "list":
        with db.reader(a.db) if db.db_path(a.db).exists() else _no_db(a.db) as con:
            rows = accounts.list_accounts(con)
        if a.json:
            print(json.dumps([_account_doc(r) for r in rows], indent=2, default=str))
        elif not rows:
            print("no accounts (the app serves only this computer, as a local administrator)")
        else:
            print("\n".join(_account_line(r) for r in rows))
        return 0
    try:
        if action == "add":
            password = _password_stdin() if a.password_stdin else None
            acc = accounts.add(a.db, a.email, a.role, a.clinic, password, calendar_dates=a.calendar_dates)
            detail: dict[str, Any] = {"change": "added", "role": acc.role, "clinics": list(acc.clinics)}
            detail["calendar_dates"] = acc.calendar_dates
        elif action == "set-role":
            if a.all_clinics and a.clinic:
                raise CliError("give --clinic or --all-clinics, not both", 2)
            clinics = () if a.all_clinics else a.clinic
            dates = None if a.calendar_dates is None else a.calendar_dates == "yes"
            acc = accounts.set_role(a.db, a.email, a.role, clinics, dates)
            detail = {"change": "role", "role": acc.role, "clinics": list(acc.clinics)}
            detail["calendar_dates"] = acc.calendar_dates
        elif action in ("disable", "enable"):
            acc = accounts.set_disabled(a.db, a.email, action == "disable")
            detail = {"change": action + "d"}
        else:  # set-password
            acc = accounts.set_password(a.db, a.email, None if a.none else _password_stdin())
            detail = {"change": "password removed" if a.none else "password set"}
    except accounts.AccountError as exc:
        raise CliError(str(exc), 2) from exc
    a.audited = ("user change", acc.email, detail)
    print(_account_line(acc))
    return 0


@contextlib.contextmanager
def _no_db(path: str | None) -> Iterator[Any]:
    raise db.NoDatabase(f"no database at {db.db_path(path)}")
    yield None  # pragma: no cover


def cmd_audit(a: argparse.Namespace) -> int:
    if a.verify:
        if a.out or a.since or a.user or a.action:
            raise CliError("audit verify takes no filters and no --out", 2)
        result = audit.verify(a.db)
        if result.ok:
            print(result.message())
            return 0
        raise CliError(result.message(), 1)
    if not a.out:
        raise CliError("give --out FILE.csv (or: audit verify)", 2)
    since = None
    if a.since:
        try:
            since = dt.date.fromisoformat(a.since)
        except ValueError:
            raise CliError(f"--since {a.since!r}: give a date as YYYY-MM-DD", 2) from None
    _check_out_file(a.out)
    rows = audit.query(a.db, since=since, user=a.user.strip().lower() if a.user else None, action=a.action)
    n = audit.write_csv(rows, a.out)
    print(f"{a.out}: {n} rows")
    return 0


def _record_audit(a: argparse.Namespace) -> None:
    """Append the command's audit row (as the operating-system user, role "cli"). A failure is reported,
    not fatal: the change itself is already saved."""
    entry = getattr(a, "audited", None)
    if not entry:
        return
    action, target, detail = entry
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    try:
        audit.record(getattr(a, "db", None), user, "cli", action, target, detail)
    except audit.AuditUnavailable:
        print(f"warning: the audit trail ({audit.audit_path(a.db)}) could not be written", file=sys.stderr)


COMMANDS = {
    "load": cmd_load,
    "outcomes": cmd_outcomes,
    "summary": cmd_summary,
    "batches": cmd_batches,
    "undo": cmd_undo,
    "sample": cmd_sample,
    "settings": cmd_settings,
    "init": cmd_init,
    "caseload": cmd_caseload,
    "acknowledge": cmd_acknowledge,
    "discharge": cmd_discharge,
    "users": cmd_users,
    "audit": cmd_audit,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_db(args)
        if args.command == "export":
            _check_out_dir(args.out)
        handler = getattr(args, "handler", None)
        code = handler(args) if handler else COMMANDS[args.command](args)
        _record_audit(args)
        return code
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ExportRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line, never a traceback or the engine's own message
        # init loading a sample folder with bad rows (the import module is loaded only by the commands
        # that use it, so an exception can be one of its refusals only when it is loaded)
        ingest_module = sys.modules.get("kapdata.ingest")
        if ingest_module is not None and isinstance(exc, ingest_module.ImportRejected):
            return _print_rejected(exc)
        if os.environ.get("KAP_DEBUG"):
            raise
        print(f"error: {explain(exc, getattr(args, 'db', None))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
