"""What a load reports: problems (file, row, column, value, reason), per-file results, the headline."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from kapdata.ingest.contract import MAX_PROBLEMS_LISTED, Kind


@dataclass(frozen=True)
class Problem:
    file: str
    row: int | None
    column: str | None
    value: str | None
    reason: str
    severity: Literal["error", "warning", "info"] = "error"

    def __str__(self) -> str:
        where = self.file
        if self.row is not None:
            where += f", row {self.row}"
        if self.column:
            where += f", column {self.column}"
        value = "" if self.value is None else f" value {self.value!r}:"
        return f"{where}:{value} {self.reason}"


@dataclass
class FileResult:
    file: str
    kind: Kind | None
    sha256: str
    rows_read: int = 0
    rows_loaded: int = 0
    rows_already_present: int = 0
    rows_rejected: int = 0
    rows_prorated: int = 0  # rows whose total was prorated from 1-2 missing item answers
    new_patients: int = 0
    batch_id: int | None = None
    identical_to_batch: int | None = None
    rejects_path: Path | None = None
    refused: bool = False  # refused as a whole: unreadable, unknown kind, missing column, identifier column

    def summary(self) -> str:
        if self.identical_to_batch is not None:
            return (
                f"{self.file}: identical to batch {self.identical_to_batch}, already loaded; "
                f"nothing to do ({self.rows_read} rows)"
            )
        text = (
            f"{self.file}: {self.kind}, {self.rows_read} rows read, {self.rows_loaded} loaded, "
            f"{self.rows_already_present} already present, {self.rows_rejected} rejected"
        )
        if self.rows_prorated:
            text += f", {self.rows_prorated} with a prorated total"
        if self.new_patients:
            text += f", {self.new_patients} new patients with unknown attributes"
        if self.batch_id is not None:
            text += f" (batch {self.batch_id})"
        if self.rejects_path is not None:
            text += f"; rejected rows written to {self.rejects_path}"
        return text


@dataclass
class LoadResult:
    files: list[FileResult] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    committed: bool = False
    unlisted_errors: int = 0  # row errors beyond the first MAX_PROBLEMS_LISTED: counted, not listed
    error_rows: int | None = None  # rows with errors, listed or not (None: count the listed ones)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def headline(self) -> str:
        """``3 problem(s) in 2 row(s) of 1 file(s)``-style summary of the errors."""
        errors = self.errors
        if not errors:
            return "no errors"
        # A refused file's problems refuse it as a whole, even one naming a row ("row 5 has 3 fields"):
        # its rows are all counted rejected, so its problems are not "in 1 row".
        refused = {f.file for f in self.files if f.refused}
        rows = {(p.file, p.row) for p in errors if p.row is not None and p.file not in refused}
        whole = {p.file for p in errors if p.row is None or p.file in refused}
        n_rows = self.error_rows if self.error_rows else len(rows)
        parts = [f"{n_rows} row(s)"] if n_rows else []
        parts += [f"{len(whole)} whole file(s)"] if whole else []
        return f"{self.error_count} problem(s) in " + " and ".join(parts)

    @property
    def error_count(self) -> int:
        """Every error, listed or not."""
        return len(self.errors) + self.unlisted_errors

    def report(self) -> str:
        lines = [self.headline()] + [f"{p.severity}: {p}" for p in self.problems]
        if self.unlisted_errors:
            lines.append(
                f"... and {self.unlisted_errors:,} more error(s) not listed "
                f"(the first {MAX_PROBLEMS_LISTED:,} are listed)"
            )
        return "\n".join(lines)


class ImportRejected(Exception):
    """The batch was rejected: nothing was loaded. ``result.problems`` says why."""

    def __init__(self, result: LoadResult) -> None:
        self.result = result
        errors = result.errors
        super().__init__(
            f"import rejected, the database is unchanged: {len(errors)} error(s); first: {errors[0]}"
            if errors
            else "import rejected"
        )
