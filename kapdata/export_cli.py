"""The ``export`` sub-command's parser and the export's exceptions, without the export itself.

``python -m kapdata`` builds every sub-command's parser on each run; this module lets it do so (and catch
:class:`ExportError` / :class:`ExportRefused`) without importing :mod:`kapdata.export` and what that needs
(pyarrow, the cohort and import modules). The export is imported only when the command runs.
:mod:`kapdata.export` re-exports all three names.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kapdata.export import KAnonymity


class ExportError(ValueError):
    """A bad export request (unknown scale, phase, shape, value or date): a usage error."""


class ExportRefused(Exception):
    """The export's k-anonymity is under the floor: nothing is built. ``str()`` says which columns to
    leave out."""

    def __init__(self, k: KAnonymity, message: str | None = None) -> None:
        super().__init__(message or k.refusal or "export refused")
        self.k_anonymity = k


def add_cli(sub: argparse._SubParsersAction) -> None:
    """The ``export`` sub-command (``python -m kapdata export ...``)."""
    p = sub.add_parser(
        "export",
        help="write a de-identified research dataset with its data dictionary and manifest",
        description="Write DIR/data.csv (or data.parquet), DIR/data_dictionary.csv, DIR/table1.csv and "
        "DIR/manifest.json. Patients are re-keyed and dates are days from the first dosing session unless "
        "--dates calendar. By default the file keeps the most patient characteristics (age band, sex, "
        "clinic, condition, route) for which every combination is shared by at least k_anonymity_min "
        "patients; an export under that floor is refused (exit 3) and nothing is written.",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the four files into")
    p.add_argument("--db", help="database file (default: $KAP_DB, then data/kap.duckdb)")
    p.add_argument("--shape", default="long", help="long (default), wide, outcomes or sessions")
    p.add_argument(
        "--format",
        default="csv",
        dest="file_format",
        help="csv (default), parquet, or fhir (DIR/bundle.json, an R4 Bundle; needs --dates calendar)",
    )
    p.add_argument(
        "--instrument", action="append", default=[], metavar="NAME", help="PHQ-9, GAD-7, PCL-5 (repeat)"
    )
    p.add_argument(
        "--phase",
        action="append",
        default=[],
        metavar="NAME",
        help="long: preparation, dosing, integration, follow-up; wide/outcomes: dosing, integration, "
        "follow-up, latest (repeat)",
    )
    p.add_argument("--clinic", action="append", default=[], metavar="NAME")
    p.add_argument("--route", action="append", default=[], metavar="NAME")
    p.add_argument("--condition", action="append", default=[], metavar="NAME")
    p.add_argument("--start-from", metavar="DATE", help="first dosing session on or after (YYYY-MM-DD)")
    p.add_argument("--start-to", metavar="DATE", help="first dosing session on or before (YYYY-MM-DD)")
    p.add_argument(
        "--dates",
        default="relative",
        help="relative (default: no calendar dates; protects against matching on dates) or calendar "
        "(dates included: protects against nothing date-based)",
    )
    p.add_argument(
        "--days",
        default="day",
        help="with relative dates: day (default, whole days from the first dose) or week (whole weeks: no "
        "exact day gaps, so score sequences are harder to match with other records)",
    )
    p.add_argument(
        "--without",
        action="append",
        default=None,
        metavar="NAME",
        help="leave out this patient characteristic: age_band, sex, clinic, primary_condition, route "
        "(repeat; with --without the file keeps every other one, and the k-anonymity floor still applies)",
    )
    p.set_defaults(handler=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from kapdata import export

    return export.cmd_export(args)
