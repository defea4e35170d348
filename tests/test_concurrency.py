"""Two people at once (issue 11, point 1): checking an import holds no lock on the database, a write holds
it only for its final transaction, and readers wait for a write instead of failing.

A load is paused inside its validation (a hook on the scores check) so that what happens meanwhile is
deterministic rather than a race.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kapdata import db, ingest, sample

from .conftest import SCORES_HEADER, csv_lines, query, run_cli, write_text


class PausedLoad:
    """``ingest.load_files`` in a thread, stopped the first time it checks a scores file."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, files: list[Path], db_file: Path) -> None:
        self.checking = threading.Event()
        self.release = threading.Event()
        self.result: ingest.LoadResult | None = None
        self.error: BaseException | None = None
        self.checks = 0
        original: Callable[..., Any] = ingest.Loader._parse_scores

        def paused(loader: ingest.Loader, staged: Any) -> None:
            self.checks += 1
            if self.checks == 1:
                self.checking.set()
                assert self.release.wait(60), "the test never released the paused load"
            original(loader, staged)

        monkeypatch.setattr(ingest.Loader, "_parse_scores", paused)

        def run() -> None:
            try:
                self.result = ingest.load_files(files, db_file)
            except BaseException as exc:  # reported by finish()
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)

    def start(self) -> PausedLoad:
        self.thread.start()
        assert self.checking.wait(60), "the load never reached its scores check"
        return self

    def finish(self) -> ingest.LoadResult:
        self.release.set()
        self.thread.join(120)
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


@pytest.fixture()
def cohort(tmp_path: Path) -> Iterator[tuple[Path, list[Path]]]:
    """A database with a generated cohort, and a second cohort's files (other IDs) to load into it."""
    db_file = tmp_path / "kap.duckdb"
    ingest.load_files(sample.write_sample(60, tmp_path / "first", seed=3), db_file)
    second = sample.write_sample(400, tmp_path / "second", seed=4)
    # The second cohort gets its own IDs so that both can be in one database.
    for f in second:
        f.write_text(f.read_text().replace("K0", "S0"))
    yield db_file, second


def totals(db_file: Path) -> tuple[int, int, int]:
    row = query(
        db_file,
        "SELECT (SELECT count(*) FROM patients), (SELECT count(*) FROM sessions), "
        "(SELECT count(*) FROM scores)",
    )[0]
    return int(row[0]), int(row[1]), int(row[2])


def rows_in(files: list[Path]) -> tuple[int, int, int]:
    counts = {f.stem: len(f.read_text().splitlines()) - 1 for f in files}
    return counts["patients"], counts["sessions"], counts["scores"]


def test_checking_an_import_holds_no_lock_readers_and_other_commands_carry_on(cohort, monkeypatch, tmp_path):
    db_file, second = cohort
    before = totals(db_file)
    load = PausedLoad(monkeypatch, second, db_file).start()
    # While the files are being checked: this process reads at once (no wait)...
    started = time.monotonic()
    assert totals(db_file) == before
    assert time.monotonic() - started < db.LOCK_WAIT_SECONDS / 3
    # ...another process reads, and another process writes, without "database busy".
    out = tmp_path / "outcomes.csv"
    cli = run_cli("outcomes", "--db", str(db_file), "--out", str(out), cwd=tmp_path, timeout=60)
    assert cli.returncode == 0, cli.stderr
    extra = write_text(
        tmp_path / "extra.csv", csv_lines(SCORES_HEADER, [("K00001", "PHQ-9", "2025-06-01", 4)])
    )
    cli = run_cli("load", str(extra), "--db", str(db_file), cwd=tmp_path, timeout=60)
    assert cli.returncode == 0, cli.stderr
    # The paused load finds the database changed under it, checks again and loads on top of that change.
    result = load.finish()
    assert result.committed
    assert load.checks == 2  # checked again on the new state
    p, s, c = rows_in(second)
    assert totals(db_file) == (before[0] + p, before[1] + s, before[2] + c + 1)
    batches = query(db_file, "SELECT batch_id, file_name FROM batches ORDER BY batch_id")
    assert [b[1] for b in batches[-4:]] == ["extra.csv", "patients.csv", "sessions.csv", "scores.csv"]
    assert len({b[0] for b in batches}) == len(batches)


def test_a_page_read_during_the_final_write_waits_for_it_and_sees_the_new_rows(cohort, monkeypatch):
    db_file, second = cohort
    before = totals(db_file)
    in_write = threading.Event()
    release = threading.Event()
    original = db.bump_data_version

    def slow_bump(con: Any) -> None:
        original(con)
        if con is not None and not in_write.is_set():
            in_write.set()
            assert release.wait(60)

    monkeypatch.setattr(db, "bump_data_version", slow_bump)
    loader = threading.Thread(target=lambda: ingest.load_files(second, db_file), daemon=True)
    loader.start()
    assert in_write.wait(60)
    assert db.writing(db_file)
    seen: list[tuple[int, int, int]] = []
    reader = threading.Thread(target=lambda: seen.append(totals(db_file)), daemon=True)
    reader.start()
    time.sleep(0.5)
    assert reader.is_alive() and not seen  # waiting for the writer, not failing
    release.set()
    loader.join(60)
    reader.join(60)
    p, s, c = rows_in(second)
    assert seen == [(before[0] + p, before[1] + s, before[2] + c)]
    assert not db.writing(db_file)


def test_a_cli_load_waits_for_a_page_read_in_progress_then_loads(cohort, tmp_path):
    db_file, second = cohort
    before = totals(db_file)
    proc_result: list[Any] = []
    with db.reader(db_file) as con:  # a page's query holding the file for 1.5 s
        worker = threading.Thread(
            target=lambda: proc_result.append(
                run_cli("load", *map(str, second), "--db", str(db_file), cwd=tmp_path, timeout=90)
            ),
            daemon=True,
        )
        worker.start()
        time.sleep(1.5)
        assert con.execute("SELECT count(*) FROM patients").fetchone() == (before[0],)
    worker.join(90)
    assert proc_result and proc_result[0].returncode == 0, proc_result[0].stderr
    p, s, c = rows_in(second)
    assert totals(db_file) == (before[0] + p, before[1] + s, before[2] + c)


def test_a_reader_that_waits_too_long_gets_a_busy_error_in_words(cohort, monkeypatch):
    db_file, _ = cohort
    monkeypatch.setattr(db, "LOCK_WAIT_SECONDS", 0.3)
    gate = db._Gate.of(db_file)
    holding = threading.Event()
    done = threading.Event()

    def writer() -> None:
        with gate.hold(db_file, write=True):
            holding.set()
            done.wait(10)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    assert holding.wait(10)
    try:
        with pytest.raises(db.DatabaseBusy) as caught:
            totals(db_file)
        assert db.explain(caught.value) == (
            "The database is busy: another person or command is saving changes. Try again in a moment."
        )
    finally:
        done.set()
        t.join(10)
    assert totals(db_file)[0] == 60


def test_a_waiting_writer_goes_before_new_readers(tmp_path):
    target = tmp_path / "gate.duckdb"
    gate = db._Gate.of(target)
    order: list[str] = []
    first_reader_in = threading.Event()
    let_first_reader_go = threading.Event()

    def first_reader() -> None:
        with gate.hold(target, write=False):
            first_reader_in.set()
            let_first_reader_go.wait(10)
        order.append("reader 1 out")

    def writer() -> None:
        with gate.hold(target, write=True):
            order.append("writer")

    def second_reader() -> None:
        with gate.hold(target, write=False):
            order.append("reader 2")

    threads = [threading.Thread(target=first_reader, daemon=True)]
    threads[0].start()
    assert first_reader_in.wait(10)
    threads.append(threading.Thread(target=writer, daemon=True))
    threads[1].start()
    while not gate.writing():
        time.sleep(0.01)
    threads.append(threading.Thread(target=second_reader, daemon=True))
    threads[2].start()
    time.sleep(0.2)
    assert order == []  # the second reader queues behind the waiting writer
    let_first_reader_go.set()
    for t in threads:
        t.join(10)
    assert order == ["reader 1 out", "writer", "reader 2"]


def test_a_nested_read_in_one_thread_does_not_wait_for_itself(tmp_path, db_file):
    with db.session(db_file):
        pass
    with db.reader(db_file) as outer, db.reader(db_file) as inner:
        assert outer.execute("SELECT 1").fetchone() == inner.execute("SELECT 1").fetchone()


# -- the first load: checked in a whole copy of the (empty) database, which then takes its place


@pytest.fixture()
def empty_db(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A database with no data yet, and a cohort's files to load into it."""
    db_file = tmp_path / "db" / "kap.duckdb"
    with db.session(db_file):
        pass
    return db_file, sample.write_sample(200, tmp_path / "files", seed=5)


def copies_beside(db_file: Path) -> list[str]:
    return sorted(p.name for p in db_file.parent.iterdir() if p.name != db_file.name)


def test_a_first_load_is_checked_in_a_copy_readers_carry_on_and_no_copy_is_left(empty_db, monkeypatch):
    db_file, files = empty_db
    load = PausedLoad(monkeypatch, files, db_file).start()
    try:
        started = time.monotonic()
        assert totals(db_file) == (0, 0, 0)  # the database itself is untouched while the copy is checked
        assert time.monotonic() - started < db.LOCK_WAIT_SECONDS / 3
        assert not db.writing(db_file)
        assert any(name.endswith(".loading") for name in copies_beside(db_file))
    finally:
        result = load.finish()
    assert result.committed and load.checks == 1
    assert totals(db_file) == rows_in(files)
    assert query(db_file, "SELECT value FROM meta WHERE key = 'data_version'") == [("1",)]
    assert query(db_file, "SELECT count(*) > 0 FROM outcomes") == [(True,)]  # computed in the copy
    assert copies_beside(db_file) == []  # the copy became the database: nothing is left beside it


def test_a_first_load_checks_again_when_the_empty_database_was_written_meanwhile(empty_db, monkeypatch):
    """A write that moves no data version (here a saved column mapping) still makes the copy stale: it
    must not be lost under the copy."""
    db_file, files = empty_db
    load = PausedLoad(monkeypatch, files, db_file).start()
    try:
        with db.session(db_file) as con:
            con.execute("INSERT INTO mappings VALUES ('monthly', '{}', ['a'], current_localtimestamp())")
    finally:
        result = load.finish()
    assert result.committed
    assert load.checks == 2  # checked again, in a copy of the database as it is now
    assert query(db_file, "SELECT name FROM mappings") == [("monthly",)]
    assert totals(db_file) == rows_in(files)
    assert copies_beside(db_file) == []


def test_a_rejected_first_load_leaves_the_database_file_byte_for_byte_as_it_was(empty_db, tmp_path):
    db_file, files = empty_db
    before = db_file.read_bytes()
    bad = write_text(tmp_path / "bad.csv", csv_lines(SCORES_HEADER, [("K00001", "PHQ-9", "2025-06-01", 99)]))
    with pytest.raises(ingest.ImportRejected):
        ingest.load_files([*files, bad], db_file)
    assert db_file.read_bytes() == before
    assert copies_beside(db_file) == []
