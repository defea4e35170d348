"""``python -m kapdata``: exit codes and outputs, run in a separate process like a user would, including
while another process holds the same database file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import duckdb
import pytest

from tests.conftest import (
    PATIENTS_HEADER,
    REPO,
    SCORES_HEADER,
    SESSIONS_HEADER,
    csv_lines,
    hold,
    load,
    run_cli,
    sessions_rows,
    snapshot,
    write_text,
)
from tests.test_cohort_summary import write_cohort

OUTCOMES_HEADER = (
    "patient_id,instrument,phase,baseline,endpoint,endpoint_on,change,pct_change,response,remission,"
    "reliable_improvement,reliable_deterioration,recovery,reliable_recovery"
)


def outcome_files(folder: Path) -> list[Path]:
    """P1: sessions 1 and 29 March; PHQ-9 20 → 10 (dosing) → 4 (integration); GAD-7 0 → 3 (follow-up).
    P2: no patients row, no sessions, one PHQ-9 score (preparation)."""
    return [
        write_text(
            folder / "patients.csv",
            csv_lines(PATIENTS_HEADER, [("P1", "North", "Dr A", "25-34", "female", "MDD", "IV")]),
        ),
        write_text(
            folder / "sessions.csv",
            csv_lines(SESSIONS_HEADER, sessions_rows("P1", ["2025-03-01", "2025-03-29"])),
        ),
        write_text(
            folder / "scores.csv",
            csv_lines(
                SCORES_HEADER,
                [
                    ("P1", "PHQ-9", "2025-02-20", 20),
                    ("P1", "PHQ-9", "2025-03-15", 10),
                    ("P1", "PHQ-9", "2025-05-01", 4),
                    ("P1", "GAD-7", "2025-02-20", 0),
                    ("P1", "GAD-7", "2025-07-01", 3),
                    ("P2", "PHQ-9", "2025-02-01", 12),
                ],
            ),
        ),
    ]


def test_load_success_prints_one_summary_line_per_file(tmp_path):
    files = outcome_files(tmp_path)
    # P2 is in no patients file: without --new-patients that row is an error naming it.
    refused = run_cli("load", *map(str, files), "--db", "kap.duckdb", cwd=tmp_path)
    assert refused.returncode == 2
    assert "patient P2 is not in the database and no patients file in this load names it" in refused.stderr
    proc = run_cli("load", *map(str, files), "--db", "kap.duckdb", "--new-patients", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "patients.csv: patients, 1 rows read, 1 loaded, 0 already present, 0 rejected (batch 1)",
        "sessions.csv: sessions, 2 rows read, 2 loaded, 0 already present, 0 rejected (batch 2)",
        "scores.csv: scores, 6 rows read, 6 loaded, 0 already present, 0 rejected, "
        "1 new patients with unknown attributes (batch 3)",
    ]
    assert "info: scores.csv, column patient_id: 1 patient(s) are in no patients file" in proc.stderr
    assert "Traceback" not in proc.stderr
    # Loading the same files again is a no-op.
    again = run_cli("load", *map(str, files), "--db", "kap.duckdb", "--new-patients", cwd=tmp_path)
    assert again.returncode == 0
    assert all("already loaded; nothing to do" in line for line in again.stdout.splitlines())


def test_load_rejected_exits_2_with_report_on_stderr_and_database_unchanged(tmp_path):
    files = outcome_files(tmp_path)
    load(tmp_path / "kap.duckdb", *files)
    before = snapshot(tmp_path / "kap.duckdb")
    bad = write_text(
        tmp_path / "more.csv",
        csv_lines(SCORES_HEADER, [("P1", "PHQ-9", "2025-06-01", 8), ("P1", "PHQ-10", "2025-06-01", 8)]),
    )
    proc = run_cli("load", str(bad), "--db", "kap.duckdb", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "Import rejected: 1 problem(s) in 1 row(s); the database is unchanged.",
        "  error: more.csv, row 3, column instrument: value 'PHQ-10': unknown instrument; "
        "expected one of PHQ-9, GAD-7, PCL-5",
    ]
    assert "Traceback" not in proc.stderr
    assert snapshot(tmp_path / "kap.duckdb") == before


def test_load_of_a_missing_file_or_with_duckdb_choking_is_a_report_not_a_traceback(tmp_path):
    proc = run_cli("load", "nope.csv", "--db", "kap.duckdb", cwd=tmp_path)
    assert proc.returncode == 2
    assert "nope.csv: file not found" in proc.stderr and "Traceback" not in proc.stderr
    huge = write_text(
        tmp_path / "huge.csv", csv_lines(SCORES_HEADER, [("P1", "PHQ-9", "2025-06-01", 10**12)])
    )
    proc = run_cli("load", str(huge), "--db", "kap.duckdb", cwd=tmp_path)
    assert proc.returncode == 2 and "total out of range" in proc.stderr and "Traceback" not in proc.stderr


def test_load_quarantine_writes_rejects_and_exits_0(tmp_path):
    sc = write_text(
        tmp_path / "scores.csv",
        csv_lines(SCORES_HEADER, [("P1", "PHQ-9", "2025-06-01", 8), ("P1", "PHQ-9", "2025-06-02", 28)]),
    )
    proc = run_cli(
        "load",
        str(sc),
        "--db",
        "kap.duckdb",
        "--on-error",
        "quarantine",
        "--rejects",
        "bad.csv",
        "--new-patients",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("rejected rows written to bad.csv")
    assert "1 loaded" in proc.stdout and "1 rejected" in proc.stdout
    text = (tmp_path / "bad.csv").read_text()
    assert text.splitlines() == [
        "patient_id,instrument,assessed_on,total,_row,_errors",
        "P1,PHQ-9,2025-06-02,28,3,total: total out of range: PHQ-9 totals are 0-27",
    ]


def test_db_defaults_to_kap_db_then_data_folder(tmp_path):
    files = outcome_files(tmp_path)
    env_db = tmp_path / "env" / "from_env.duckdb"
    proc = run_cli("load", *map(str, files), "--new-patients", cwd=tmp_path, env_db=str(env_db))
    assert proc.returncode == 0, proc.stderr
    assert env_db.exists() and not (tmp_path / "data").exists()
    proc = run_cli("load", str(files[0]), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "data" / "kap.duckdb").exists()


def test_outcomes_csv_has_exact_columns_and_values(tmp_path):
    load(tmp_path / "kap.duckdb", *outcome_files(tmp_path))
    proc = run_cli("outcomes", "--db", "kap.duckdb", "--out", "out/outcomes.csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "out/outcomes.csv: 12 rows"
    assert (tmp_path / "out" / "outcomes.csv").read_text().splitlines() == [
        OUTCOMES_HEADER,
        "P1,GAD-7,dosing,0,,,,,,,,,,",
        "P1,GAD-7,integration,0,,,,,,,,,,",
        # baseline 0: change +3, no percentage, no response; not a case at baseline, so remission and
        # recovery are undefined (it used to say remission: 3 < 5)
        "P1,GAD-7,follow-up,0,3,2025-07-01,3,,,,false,false,,",
        "P1,GAD-7,latest,0,3,2025-07-01,3,,,,false,false,,",
        # 20 → 10: exactly 50% (response), -10 reliable; 10 is still a case (no recovery)
        "P1,PHQ-9,dosing,20,10,2025-03-15,-10,-50.0,true,false,true,false,false,false",
        "P1,PHQ-9,integration,20,4,2025-05-01,-16,-80.0,true,true,true,false,true,true",
        "P1,PHQ-9,follow-up,20,,,,,,,,,,",
        "P1,PHQ-9,latest,20,4,2025-05-01,-16,-80.0,true,true,true,false,true,true",
        "P2,PHQ-9,dosing,12,,,,,,,,,,",
        "P2,PHQ-9,integration,12,,,,,,,,,,",
        "P2,PHQ-9,follow-up,12,,,,,,,,,,",
        "P2,PHQ-9,latest,12,,,,,,,,,,",
    ]
    proc = run_cli("outcomes", "--db", "kap.duckdb", "--instrument", "gad7", "--out", "gad.csv", cwd=tmp_path)
    assert proc.returncode == 0
    lines = (tmp_path / "gad.csv").read_text().splitlines()
    assert lines[0] == OUTCOMES_HEADER and len(lines) == 5 and all(",GAD-7," in line for line in lines[1:])


def test_outcomes_errors_exit_without_traceback(tmp_path):
    proc = run_cli("outcomes", "--db", "missing.duckdb", "--out", "o.csv", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: no database at missing.duckdb") and "Traceback" not in proc.stderr
    assert not (tmp_path / "missing.duckdb").exists()
    load(tmp_path / "kap.duckdb", *outcome_files(tmp_path))
    proc = run_cli("outcomes", "--db", "kap.duckdb", "--instrument", "BDI", "--out", "o.csv", cwd=tmp_path)
    assert (
        proc.returncode == 2 and "unknown instrument 'BDI'" in proc.stderr and "Traceback" not in proc.stderr
    )


def test_summary_json_structure_wilson_t_interval_and_itt(tmp_path):
    files = write_cohort(tmp_path)
    load(tmp_path / "kap.duckdb", *files)
    proc = run_cli("summary", "--db", "kap.duckdb", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert set(doc) == {"generated_at", "phases", "definitions", "results", "joint_recovery"}
    assert [(r["instrument"], r["phase"]) for r in doc["results"]] == [
        ("PHQ-9", p) for p in ("dosing", "integration", "follow-up", "latest")
    ]
    by_phase = {r["phase"]: r for r in doc["results"]}
    dosing = by_phase["dosing"]
    assert set(dosing) == {
        "instrument",
        "phase",
        "patients_with_baseline",
        "completers",
        "itt",
        "baseline_below_caseness",
        "itt_not_yet_due",
        "mean_baseline",
        "mean_endpoint",
        "mean_change",
        "rates",
        "itt_means",
    }
    assert set(dosing["rates"]) == {"completers", "itt"}
    assert set(dosing["rates"]["itt"]) == {
        "response",
        "remission",
        "reliable_improvement",
        "reliable_deterioration",
        "recovery",
        "reliable_recovery",
    }
    # Changes [-6, -14, -2]: mean -7.3333, t-interval -22.5116 to 7.8450.
    change = dosing["mean_change"]
    assert (change["n"], change["mean"]) == (3, pytest.approx(-22 / 3))
    assert (change["ci_low"], change["ci_high"]) == pytest.approx((-22.5116, 7.8450), abs=1e-4)
    # Wilson for 1 of 2 (integration completers' response): 0.0945 to 0.9055.
    response = by_phase["integration"]["rates"]["completers"]["response"]
    assert response == {
        "k": 1,
        "n": 2,
        "rate": 0.5,
        "ci_low": pytest.approx(0.094531, abs=1e-6),
        "ci_high": pytest.approx(0.905469, abs=1e-6),
    }
    # ITT at integration: the dropout C's dosing score carried forward; D (never dosed) is out.
    integration = by_phase["integration"]
    assert (integration["patients_with_baseline"], integration["completers"], integration["itt"]) == (4, 2, 3)
    assert integration["itt_means"]["mean_endpoint"] == pytest.approx(26 / 3)
    assert integration["rates"]["itt"]["response"]["n"] == 3
    assert [i["safety_items"] for i in doc["definitions"]["instruments"] if i["code"] == "PHQ-9"] == [
        [9]
    ]  # a list, not a string


def test_summary_table_and_out_file(tmp_path):
    load(tmp_path / "kap.duckdb", *write_cohort(tmp_path))
    proc = run_cli("summary", "--db", "kap.duckdb", cwd=tmp_path)
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:2] == ["instrument", "phase"] and len(lines) == 5
    assert "33% (1/3)" in lines[1]
    proc = run_cli("summary", "--db", "kap.duckdb", "--json", "--out", "s.json", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout == ""
    assert len(json.loads((tmp_path / "s.json").read_text())["results"]) == 4


def test_batches_and_undo(tmp_path):
    files = outcome_files(tmp_path)
    load(tmp_path / "kap.duckdb", *files)
    proc = run_cli("batches", "--db", "kap.duckdb", cwd=tmp_path)
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert len(lines) == 4 and lines[0].split()[:2] == ["batch", "loaded"]
    assert lines[3].split()[0] == "3" and "scores.csv" in lines[3] and "active" in lines[3]
    proc = run_cli("batches", "--db", "kap.duckdb", "--json", cwd=tmp_path)
    batches = json.loads(proc.stdout)
    assert [(b["batch_id"], b["kind"], b["rows_loaded"]) for b in batches] == [
        (1, "patients", 1),
        (2, "sessions", 2),
        (3, "scores", 6),
    ]
    proc = run_cli("undo", "3", "--db", "kap.duckdb", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "batch 3 undone: 6 scores, 0 sessions, 1 patients removed"
    snap = snapshot(tmp_path / "kap.duckdb")
    assert snap["scores"] == [] and [p[0] for p in snap["patients"]] == ["P1"]
    proc = run_cli("undo", "3", "--db", "kap.duckdb", cwd=tmp_path)
    assert proc.returncode == 2 and "already undone" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("undo", "1", "--db", "kap.duckdb", cwd=tmp_path)
    assert proc.stdout.strip() == (
        "batch 1 undone: 0 scores, 0 sessions, 0 patients removed; 1 patients set back to unknown attributes"
    )
    proc = run_cli("batches", "--db", "kap.duckdb", cwd=tmp_path)
    assert proc.stdout.count("undone") == 2


def test_sample_command_writes_loadable_files(tmp_path):
    if not (REPO / "kapdata" / "sample.py").exists():
        pytest.skip("kapdata/sample.py is not there yet")
    proc = run_cli("sample", "--patients", "5", "--seed", "3", "--out", "sample", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    written = sorted(Path(line).name for line in proc.stdout.splitlines())
    assert written == ["patients.csv", "scores.csv", "sessions.csv"]
    load = run_cli(
        "load", *(str(tmp_path / "sample" / n) for n in written), "--db", "kap.duckdb", cwd=tmp_path
    )
    assert load.returncode == 0, load.stderr
    assert run_cli("sample", "--patients", "0", "--out", "x", cwd=tmp_path).returncode == 2


# ------------------------------------------------------------------------------- two processes at once


def test_cli_load_waits_while_another_process_reads(tmp_path):
    files = outcome_files(tmp_path)
    db_file = tmp_path / "kap.duckdb"
    load(db_file, files[0])
    load(db_file, files[2])
    reader = hold(db_file, "ro", 1.0)
    start = time.monotonic()
    proc = run_cli("load", str(files[1]), "--db", str(db_file), cwd=tmp_path)
    elapsed = time.monotonic() - start
    reader.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "sessions.csv: sessions, 2 rows read, 2 loaded" in proc.stdout
    assert elapsed > 0.5  # it had to wait for the reader
    assert len(snapshot(db_file)["sessions"]) == 2


def test_cli_reads_wait_while_another_process_writes(tmp_path):
    db_file = tmp_path / "kap.duckdb"
    load(tmp_path / "kap.duckdb", *outcome_files(tmp_path))
    writer = hold(db_file, "rw", 1.0)
    outcomes_proc = run_cli("outcomes", "--db", str(db_file), "--out", "o.csv", cwd=tmp_path)
    writer.wait(timeout=30)
    assert outcomes_proc.returncode == 0, outcomes_proc.stderr
    assert len((tmp_path / "o.csv").read_text().splitlines()) == 13


def test_in_process_write_waits_for_another_process_reading(tmp_path):
    db_file = tmp_path / "kap.duckdb"
    files = outcome_files(tmp_path)
    load(db_file, files[2])
    reader = hold(db_file, "ro", 1.0)
    load(db_file, files[0])
    reader.wait(timeout=30)
    assert len(snapshot(db_file)["patients"]) == 2


def test_a_file_that_is_not_a_database_is_an_error_not_a_traceback(tmp_path):
    write_text(tmp_path / "notadb.duckdb", "this is not a database\n")
    for args in (["outcomes", "--out", "o.csv"], ["undo", "1"]):
        proc = run_cli(*args, "--db", "notadb.duckdb", cwd=tmp_path)
        assert proc.returncode == 1, (args, proc.stderr)
        assert proc.stderr == (
            "error: The database file (notadb.duckdb) could not be read: it may be damaged, truncated or not "
            "a KAP Outcomes database. Restore it from a backup, or point --db / KAP_DB at the right file.\n"
        )  # the engine's own words ("not a valid DuckDB database file") are not shown


def test_init_loads_a_sample_folder_once(tmp_path):
    folder = tmp_path / "sample"
    folder.mkdir()
    outcome_files(folder)
    proc = run_cli("init", "--db", "kap.duckdb", "--sample-dir", "sample", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "kap.duckdb: created and loaded 9 sample rows from sample"
    proc = run_cli("init", "--db", "kap.duckdb", "--sample-dir", "sample", cwd=tmp_path)
    assert proc.stdout.strip() == "kap.duckdb: ready"
    write_text(folder / "scores.csv", csv_lines(SCORES_HEADER, [("P1", "PHQ-9", "2025-01-01", 99)]))
    proc = run_cli("init", "--db", "other.duckdb", "--sample-dir", "sample", cwd=tmp_path)
    assert proc.returncode == 2 and "total out of range" in proc.stderr and "Traceback" not in proc.stderr


def test_a_file_refused_as_a_whole_is_reported_as_a_file_not_a_row(tmp_path):
    other = write_text(tmp_path / "other.csv", "a,b\n1,2\n")
    proc = run_cli("load", str(other), "--db", "kap.duckdb", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == (
        "Import rejected: 1 problem(s) in 1 whole file(s); the database is unchanged."
    )
    assert "Traceback" not in proc.stderr


# --- caseload, acknowledge, discharge -------------------------------------------------------------------


def test_caseload_command_writes_one_row_per_patient_in_caseload_order(tmp_path):
    import csv
    import getpass

    from tests.test_patient import build_safety_cohort

    path = build_safety_cohort(tmp_path)
    ack = run_cli(
        "acknowledge",
        "A3",
        "--flag",
        "safety",
        "--note",
        "=HYPERLINK(1)",
        "--as-of",
        "2025-06-30",
        "--db",
        str(path),
        cwd=tmp_path,
    )
    assert ack.returncode == 0, ack.stderr
    assert ack.stdout.startswith("A3: safety flag of 2025-06-15 acknowledged by ")
    out = run_cli("discharge", "G2", "--note", "moved", "--db", str(path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    proc = run_cli("caseload", "--db", str(path), "--as-of", "2025-06-30", "--out", "c.csv", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "c.csv: 6 rows"
    with open(tmp_path / "c.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols = (
        "patient_id",
        "current_phase",
        "safety",
        "safety_item9",
        "safety_on",
        "reliable_deterioration",
        "overdue",
        "no_baseline",
        "acknowledged",
        "discharged",
    )
    assert [tuple(r[c] for c in cols) for r in rows] == [
        ("A1", "preparation", "true", "2", "2025-05-01", "false", "false", "false", "false", "false"),
        ("A2", "preparation", "true", "1", "2025-06-10", "false", "false", "false", "false", "false"),
        ("A3", "preparation", "true", "2", "2025-06-15", "false", "false", "false", "true", "false"),
        ("G1", "follow-up", "false", "", "", "true", "false", "false", "false", "false"),
        ("A4", "preparation", "false", "", "", "false", "false", "false", "false", "false"),
        ("G2", "follow-up", "false", "", "", "true", "false", "false", "false", "true"),  # discharged last
    ]
    a3 = rows[2]
    assert a3["acknowledged_note"] == "'=HYPERLINK(1)"  # neutralised for spreadsheets
    assert a3["acknowledged_by"] == getpass.getuser() and a3["acknowledged_flag"] == "safety"
    assert rows[5]["discharge_note"] == "moved"
    # Re-admitted: back in its place.
    assert run_cli("discharge", "G2", "--undo", "--db", str(path), cwd=tmp_path).returncode == 0
    run_cli("caseload", "--db", str(path), "--as-of", "2025-06-30", "--out", "c.csv", cwd=tmp_path)
    with open(tmp_path / "c.csv", encoding="utf-8", newline="") as fh:
        assert [r["patient_id"] for r in csv.DictReader(fh)] == ["A1", "A2", "A3", "G1", "G2", "A4"]


def test_caseload_commands_reject_bad_input_without_a_traceback(tmp_path):
    from tests.test_patient import build_safety_cohort

    path = build_safety_cohort(tmp_path)
    bad_date = run_cli("caseload", "--db", str(path), "--as-of", "30/06/2025", "--out", "c.csv", cwd=tmp_path)
    assert bad_date.returncode == 2 and "YYYY-MM-DD" in bad_date.stderr
    no_flag = run_cli(
        "acknowledge", "A4", "--flag", "safety", "--as-of", "2025-06-30", "--db", str(path), cwd=tmp_path
    )
    assert no_flag.returncode == 2 and "no safety flag to acknowledge" in no_flag.stderr
    assert "Traceback" not in bad_date.stderr + no_flag.stderr
    assert not (tmp_path / "c.csv").exists()


def bad_targets(tmp_path: Path) -> None:
    """kap.duckdb (loaded), afile (a regular file), adir (a folder), junk.duckdb (not a database)."""
    load(tmp_path / "kap.duckdb", *outcome_files(tmp_path))
    write_text(tmp_path / "afile", "hello\n")
    (tmp_path / "adir").mkdir()
    write_text(tmp_path / "junk.duckdb", "this is not a database\n")


DB_JUNK = (
    "error: The database file (junk.duckdb) could not be read: it may be damaged, truncated or not a KAP "
    "Outcomes database. Restore it from a backup, or point --db / KAP_DB at the right file."
)
DB_DIR = "error: The database path (adir) is not a file. Check --db or KAP_DB."


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        # --out: a folder, a path under a device, a path under a regular file (as root a chmod'ed folder
        # is still writable, so a parent that is a file stands in for "cannot write here")
        (
            ("outcomes", "--db", "kap.duckdb", "--out", "adir"),
            1,
            "error: --out adir: is a folder, not a file",
        ),
        (
            ("outcomes", "--db", "kap.duckdb", "--out", "/dev/null/x"),
            1,
            "error: --out /dev/null/x: /dev/null is not a folder",
        ),
        (
            ("outcomes", "--db", "kap.duckdb", "--out", "afile/x"),
            1,
            "error: --out afile/x: afile is not a folder",
        ),
        (("summary", "--db", "kap.duckdb", "--out", "adir"), 1, "error: --out adir: is a folder, not a file"),
        (
            ("summary", "--db", "kap.duckdb", "--out", "afile/x"),
            1,
            "error: --out afile/x: afile is not a folder",
        ),
        (
            ("caseload", "--db", "kap.duckdb", "--out", "adir"),
            1,
            "error: --out adir: is a folder, not a file",
        ),
        (
            ("caseload", "--db", "kap.duckdb", "--out", "/dev/null/x"),
            1,
            "error: --out /dev/null/x: /dev/null is not a folder",
        ),
        (("sample", "--patients", "2", "--out", "afile"), 1, "error: --out afile: is a file, not a folder"),
        (
            ("sample", "--patients", "2", "--out", "afile/sub"),
            1,
            "error: --out afile/sub: afile is not a folder",
        ),
        (
            ("export", "--db", "kap.duckdb", "--out", "afile"),
            1,
            "error: --out afile: is a file, not a folder",
        ),
        (
            ("export", "--db", "kap.duckdb", "--out", "/dev/null/x"),
            1,
            "error: --out /dev/null/x: /dev/null is not a folder",
        ),
        (
            ("load", "s.csv", "--db", "kap.duckdb", "--on-error", "quarantine", "--rejects", "adir"),
            1,
            "error: --rejects adir: is a folder, not a file",
        ),
        # load: a folder or a device is refused before reading (/dev/zero used to hang)
        (
            ("load", "adir", "--db", "kap.duckdb"),
            2,
            "error: adir: is a folder, not a file; give the files inside it",
        ),
        (
            ("load", "/dev/zero", "--db", "kap.duckdb"),
            2,
            "error: /dev/zero: is not a regular file (a device or a pipe)",
        ),
        # --db: junk, a folder, a device, under a regular file
        (("outcomes", "--db", "junk.duckdb", "--out", "o.csv"), 1, DB_JUNK),
        (("summary", "--db", "junk.duckdb"), 1, DB_JUNK),
        (("batches", "--db", "junk.duckdb"), 1, DB_JUNK),
        (("settings", "--db", "junk.duckdb"), 1, DB_JUNK),
        (("caseload", "--db", "junk.duckdb", "--out", "c.csv"), 1, DB_JUNK),
        (("discharge", "P1", "--db", "junk.duckdb"), 1, DB_JUNK),
        (("export", "--db", "junk.duckdb", "--out", "e"), 1, DB_JUNK),
        (("load", "s.csv", "--db", "junk.duckdb"), 1, DB_JUNK),
        (("batches", "--db", "adir"), 1, DB_DIR),
        (("init", "--db", "adir"), 1, DB_DIR),
        (("undo", "1", "--db", "adir"), 1, DB_DIR),
        (("load", "s.csv", "--db", "adir"), 1, DB_DIR),
        (("init", "--db", "afile/x.duckdb"), 1, "error: The database path (afile/x.duckdb) is not a file."),
        (("summary", "--db", "/dev/null"), 1, "error: the database path (/dev/null) is not a regular file."),
        # bad usage is one line too
        (
            ("outcomes",),
            2,
            "error: the following arguments are required: --out (see: python -m kapdata outcomes --help)",
        ),
    ],
)
def test_every_failure_is_one_line_without_a_traceback(tmp_path, args, code, message):
    bad_targets(tmp_path)
    write_text(tmp_path / "s.csv", csv_lines(SCORES_HEADER, [("P1", "PHQ-9", "2025-06-01", 10)]))
    before = snapshot(tmp_path / "kap.duckdb")
    proc = run_cli(*args, cwd=tmp_path, timeout=30)
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith(message)
    assert "Traceback" not in proc.stderr and "Error:" not in proc.stderr  # no engine message
    assert snapshot(tmp_path / "kap.duckdb") == before
    assert (tmp_path / "afile").read_text() == "hello\n"


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (PermissionError(13, "Permission denied", "/srv/out.csv"), "error: /srv/out.csv: permission denied"),
        (IsADirectoryError(21, "Is a directory", "/srv/out"), "error: /srv/out: is a folder, not a file"),
        (
            FileNotFoundError(2, "No such file or directory", "/srv/x/o.csv"),
            "error: /srv/x/o.csv: no such file or folder",
        ),
        (OSError(28, "No space left on device", "/srv/o.csv"), "error: /srv/o.csv: the disk is full"),
        (
            duckdb.IOException("IO Error: Cannot open file /secret/engine/path"),
            "error: The database file (kap.duckdb) could not be read",
        ),
        (ZeroDivisionError("division by zero"), "error: something unexpected went wrong (ZeroDivisionError)"),
    ],
)
def test_the_top_level_handler_turns_any_exception_into_one_line(monkeypatch, capsys, exc, message):
    from kapdata import __main__ as cli

    def boom(_args):
        raise exc

    monkeypatch.delenv("KAP_DEBUG", raising=False)
    monkeypatch.setitem(cli.COMMANDS, "batches", boom)
    monkeypatch.setattr(cli, "_check_db", lambda _args: None)
    assert cli.main(["batches", "--db", "kap.duckdb"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert "Permission denied" not in err and "/secret" not in err and "division by zero" not in err


def test_our_own_errors_keep_their_message_and_code(tmp_path):
    proc = run_cli("sample", "--patients", "0", "--out", "s", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (2, "error: --patients must be at least 1\n")
