"""The settings that change the numbers: read, validate, update and reset them (DESIGN §4, §5).

Two tables hold them, and the views in :mod:`kapdata.db` join both, so a change shows on every page and in
every command at once:

- ``settings`` (key, value): the general settings of ``db.DEFAULT_SETTINGS`` — the integration window,
  when an assessment is overdue, the blood-pressure flag, the smallest reportable cell;
- ``instruments``: per scale, the clinical-range cutoff (caseness), the response rule (% reduction), the
  remission rule (endpoint below) and the reliable-change index; defaults from the scale registry.

Every write validates the whole resulting set first and happens in one transaction. Nothing about who
changed a setting is recorded, only when (``meta.settings_changed_at``).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from kapdata import db
from kapdata import instruments as reg

CHANGED_AT_KEY = "settings_changed_at"


@dataclass(frozen=True)
class Spec:
    """One general setting: its key in the ``settings`` table, how people call it, its allowed range."""

    key: str
    label: str
    unit: str
    low: int
    high: int
    help: str


#: The general settings, in the order the settings page shows them.
GENERAL: tuple[Spec, ...] = (
    Spec(
        "integration_window_days",
        "Integration window",
        "days",
        1,
        365,
        "A questionnaire up to this many days after a patient's last dosing session is in the integration "
        "phase; a later one is in follow-up.",
    ),
    Spec(
        "overdue_days",
        "Assessment overdue after",
        "days",
        1,
        365,
        "A patient in dosing or integration with no questionnaire for more than this many days is flagged "
        "as overdue.",
    ),
    Spec(
        "bp_sys_threshold",
        "Blood-pressure flag: systolic",
        "mmHg",
        100,
        250,
        "A blood pressure before or after a dose with the systolic value above this is highlighted.",
    ),
    Spec(
        "bp_dia_threshold",
        "Blood-pressure flag: diastolic",
        "mmHg",
        50,
        150,
        "A blood pressure before or after a dose with the diastolic value above this is highlighted.",
    ),
    Spec(
        "baseline_max_days",
        "Baseline at most",
        "days before the first dose",
        1,
        3650,
        "A baseline is the last questionnaire of a scale in preparation no more than this many days before "
        "the first dosing session; an older one is not a baseline.",
    ),
    Spec(
        "dosing_complete_sessions",
        "Dosing complete after",
        "sessions",
        1,
        50,
        "A patient with at least this many dosing sessions has completed dosing (a full induction course) "
        "in the retention funnel.",
    ),
    Spec(
        "min_cell",
        "Smallest reportable group",
        "patients",
        1,
        100,
        "A figure built from fewer patients than this is suppressed in research views and exports and "
        "marked in director views.",
    ),
    Spec(
        "k_anonymity_min",
        "Research export k-anonymity floor",
        "patients",
        2,
        100,
        "A research export is refused unless every combination of its patient characteristics (age band, "
        "sex, clinic, condition, route) is shared by at least this many patients.",
    ),
)
GENERAL_BY_KEY: dict[str, Spec] = {s.key: s for s in GENERAL}


@dataclass(frozen=True)
class ThresholdSpec:
    """One per-scale threshold: a column of the ``instruments`` table."""

    key: str
    label: str  # in messages, after the scale's code: "PHQ-9 response threshold"
    short: str  # the settings page's field label
    unit: str
    help: str

    def bounds(self, inst: reg.Instrument) -> tuple[int, int]:
        return (1, 100) if self.key == "response_pct" else (1, inst.total_max)

    def describe(self, value: int) -> str:
        """The rule in words: ``≥ 50% reduction from baseline``."""
        return {
            "caseness": f"total ≥ {value}",
            "response_pct": f"≥ {value}% reduction from baseline",
            "remission_below": f"endpoint < {value}",
            "reliable_change": f"{value} points",
        }[self.key]


#: The per-scale thresholds (columns of ``instruments``), in the order the settings page shows them.
THRESHOLDS: tuple[ThresholdSpec, ...] = (
    ThresholdSpec(
        "caseness",
        "clinical-range cutoff",
        "Clinical range: total ≥",
        "points",
        "A total at or above this is in the clinical range (caseness; probable PTSD for the PCL-5). "
        "Used by recovery and reliable recovery.",
    ),
    ThresholdSpec(
        "response_pct",
        "response threshold",
        "Response: reduction ≥",
        "%",
        "Response is a reduction from baseline of at least this percentage.",
    ),
    ThresholdSpec(
        "remission_below",
        "remission threshold",
        "Remission: endpoint <",
        "points",
        "Remission is an endpoint score below this.",
    ),
    ThresholdSpec(
        "reliable_change",
        "reliable change index",
        "Reliable change ≥",
        "points",
        "A change of at least this many points is reliable improvement (down) or reliable deterioration "
        "(up): the scale's published reliable-change value (see Definitions: where each threshold comes "
        "from).",
    ),
)
THRESHOLDS_BY_KEY: dict[str, ThresholdSpec] = {t.key: t for t in THRESHOLDS}


@dataclass(frozen=True)
class Settings:
    """Every setting in force, ``general[key]`` and ``thresholds[instrument code][key]``: whole numbers."""

    general: dict[str, int]
    thresholds: dict[str, dict[str, int]]
    changed_at: str | None = None

    def fingerprint(self) -> str:
        """Changes whenever a value does (keys the settings page's widgets)."""
        values = sorted(self.general.items()) + sorted(
            (c, sorted(v.items())) for c, v in self.thresholds.items()
        )
        return hashlib.sha1(repr(values).encode()).hexdigest()[:12]

    def as_dict(self) -> dict[str, Any]:
        """For manifests and JSON: ``{"settings": {...}, "instruments": {"PHQ-9": {...}}, ...}``."""
        return {
            "settings": dict(self.general),
            "instruments": {code: dict(values) for code, values in self.thresholds.items()},
            "changed_at": self.changed_at,
        }


@dataclass(frozen=True)
class Problem:
    """A rejected value: ``key`` is ``integration_window_days`` or ``PHQ-9.response_pct``."""

    key: str
    value: object
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Change:
    key: str
    label: str
    old: int
    new: int

    def __str__(self) -> str:
        return f"{self.label}: {self.old} → {self.new}"


class InvalidSettings(ValueError):
    """Nothing was saved: ``problems`` says why."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


def defaults() -> Settings:
    """The defaults: ``db.DEFAULT_SETTINGS`` and the thresholds of the scale registry."""
    return Settings(
        general={k: int(v) for k, v in db.DEFAULT_SETTINGS.items()},
        thresholds={i.code: {t.key: int(getattr(i, t.key)) for t in THRESHOLDS} for i in reg.INSTRUMENTS},
    )


def read(con: duckdb.DuckDBPyConnection) -> Settings:
    """The settings in force in this database (a default for anything the tables lack)."""
    base = defaults()
    general = dict(base.general)
    general.update({k: int(v) for k, v in db.get_settings(con).items() if k in GENERAL_BY_KEY})
    thresholds = {code: dict(values) for code, values in base.thresholds.items()}
    rows = con.execute(
        "SELECT code, caseness, response_pct, remission_below, reliable_change FROM instruments"
    ).fetchall()
    for code, *values in rows:
        if code in thresholds:
            thresholds[code] = {t.key: int(v) for t, v in zip(THRESHOLDS, values, strict=True)}
    row = con.execute("SELECT value FROM meta WHERE key = ?", [CHANGED_AT_KEY]).fetchone()
    return Settings(general, thresholds, row[0] if row else None)


def load(db_path: str | os.PathLike[str] | None = None) -> Settings:
    """:func:`read` on a short read-only connection."""
    with db.reader(db_path) as con:
        return read(con)


def label_of(key: str) -> str:
    """``integration_window_days`` → ``Integration window``; ``PHQ-9.response_pct`` → ``PHQ-9 response …``."""
    if key in GENERAL_BY_KEY:
        return GENERAL_BY_KEY[key].label
    code, _, column = key.partition(".")
    spec = THRESHOLDS_BY_KEY.get(column)
    return f"{code} {spec.label}" if spec else key


def _whole(value: object) -> int | None:
    """A whole number from an int, a whole float or a numeric text; None otherwise (bools are not numbers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            return None
        return int(number) if math.isfinite(number) and number.is_integer() else None
    return None


def _int(value: object) -> int:
    """A value that :func:`validate` accepted, as an int."""
    number = _whole(value)
    if number is None:
        raise ValueError(f"not a whole number: {value!r}")
    return number


def _check_range(key: str, label: str, unit: str, value: object, low: int, high: int) -> Problem | None:
    number = _whole(value)
    if number is None or not low <= number <= high:
        span = f"{low}% to {high}%" if unit == "%" else f"{low} to {high} {unit}"
        shown = repr(value)
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?[\d.]+\s*", value):
            shown = value.strip()  # a number typed on the command line reads as the number
        return Problem(key, value, f"{label} must be a whole number from {span} (got {shown}).")
    return None


def validate(settings: Settings) -> list[Problem]:
    """Every problem with a complete set of settings; an empty list means it can be saved."""
    problems: list[Problem] = []
    for spec in GENERAL:
        if spec.key not in settings.general:
            problems.append(Problem(spec.key, None, f"{spec.label} is missing."))
            continue
        p = _check_range(spec.key, spec.label, spec.unit, settings.general[spec.key], spec.low, spec.high)
        if p:
            problems.append(p)
    sys_bp = _whole(settings.general.get("bp_sys_threshold"))
    dia_bp = _whole(settings.general.get("bp_dia_threshold"))
    if sys_bp is not None and dia_bp is not None and not problems and dia_bp >= sys_bp:
        problems.append(
            Problem(
                "bp_dia_threshold",
                dia_bp,
                f"The diastolic blood-pressure threshold ({dia_bp} mmHg) must be below the systolic one "
                f"({sys_bp} mmHg).",
            )
        )
    for inst in reg.INSTRUMENTS:
        values = settings.thresholds.get(inst.code, {})
        inst_problems: list[Problem] = []
        for spec in THRESHOLDS:
            key = f"{inst.code}.{spec.key}"
            if spec.key not in values:
                inst_problems.append(Problem(key, None, f"{label_of(key)} is missing."))
                continue
            low, high = spec.bounds(inst)
            p = _check_range(key, label_of(key), spec.unit, values[spec.key], low, high)
            if p:
                inst_problems.append(p)
        if not inst_problems and int(values["remission_below"]) > int(values["caseness"]):
            inst_problems.append(
                Problem(
                    f"{inst.code}.remission_below",
                    values["remission_below"],
                    f"{inst.code} remission (endpoint below {values['remission_below']}) must not reach into "
                    f"the clinical range (from {values['caseness']}): a patient in remission would still be "
                    "a case.",
                )
            )
        problems.extend(inst_problems)
    return problems


def merged(
    base: Settings,
    general: Mapping[str, object] | None = None,
    thresholds: Mapping[str, Mapping[str, object]] | None = None,
) -> tuple[Settings, list[Problem]]:
    """``base`` with the given values put in; unknown names come back as problems."""
    problems: list[Problem] = []
    new_general: dict[str, Any] = dict(base.general)
    for key, value in (general or {}).items():
        if key not in GENERAL_BY_KEY:
            known = ", ".join(GENERAL_BY_KEY)
            problems.append(Problem(key, value, f"There is no setting {key!r}; the settings are {known}."))
        else:
            new_general[key] = value
    new_thresholds: dict[str, dict[str, Any]] = {c: dict(v) for c, v in base.thresholds.items()}
    for name, values in (thresholds or {}).items():
        inst = reg.lookup(name)
        if inst is None:
            problems.append(
                Problem(name, None, f"Unknown scale {name!r}; the scales are {', '.join(reg.BY_CODE)}.")
            )
            continue
        for key, value in values.items():
            if key not in THRESHOLDS_BY_KEY:
                known = ", ".join(THRESHOLDS_BY_KEY)
                problems.append(
                    Problem(
                        f"{inst.code}.{key}", value, f"A scale has no threshold {key!r}; they are {known}."
                    )
                )
            else:
                new_thresholds[inst.code][key] = value
    return Settings(new_general, new_thresholds, base.changed_at), problems


def changes(old: Settings, new: Settings) -> list[Change]:
    """What differs between two complete sets of settings, in page order."""
    out: list[Change] = []
    for spec in GENERAL:
        a, b = old.general.get(spec.key), new.general.get(spec.key)
        if a != b and a is not None and b is not None:
            out.append(Change(spec.key, spec.label, int(a), int(b)))
    for inst in reg.INSTRUMENTS:
        for spec in THRESHOLDS:
            key = f"{inst.code}.{spec.key}"
            a = old.thresholds.get(inst.code, {}).get(spec.key)
            b = new.thresholds.get(inst.code, {}).get(spec.key)
            if a != b and a is not None and b is not None:
                out.append(Change(key, label_of(key), int(a), int(b)))
    return out


def differences_from_defaults(current: Settings) -> list[Change]:
    """Settings that are not at their defaults (``old`` is the default, ``new`` the value in force)."""
    return changes(defaults(), current)


def _write(con: duckdb.DuckDBPyConnection, new: Settings) -> None:
    con.execute("BEGIN TRANSACTION")
    try:
        con.executemany(
            "INSERT OR REPLACE INTO settings VALUES (?, ?)",
            [[spec.key, float(_int(new.general[spec.key]))] for spec in GENERAL],
        )
        db.seed_registry(con, overwrite=False)  # a scale added to the registry since the database was made
        con.executemany(
            "UPDATE instruments SET caseness = ?, response_pct = ?, remission_below = ?, reliable_change = ? "
            "WHERE code = ?",
            [[_int(new.thresholds[i.code][t.key]) for t in THRESHOLDS] + [i.code] for i in reg.INSTRUMENTS],
        )
        con.execute(
            "INSERT OR REPLACE INTO meta VALUES (?, strftime(current_localtimestamp(), '%Y-%m-%d %H:%M:%S'))",
            [CHANGED_AT_KEY],
        )
        db.bump_data_version(con)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def update_with_connection(
    con: duckdb.DuckDBPyConnection,
    general: Mapping[str, object] | None = None,
    thresholds: Mapping[str, Mapping[str, object]] | None = None,
) -> list[Change]:
    """Validate and save; raises :class:`InvalidSettings` (nothing saved) or returns what changed."""
    current = read(con)
    new, problems = merged(current, general, thresholds)
    problems += validate(new)
    if problems:
        raise InvalidSettings(problems)
    done = changes(current, new)
    if done:
        _write(con, new)
    return done


def update(
    db_path: str | os.PathLike[str] | None = None,
    *,
    general: Mapping[str, object] | None = None,
    thresholds: Mapping[str, Mapping[str, object]] | None = None,
) -> list[Change]:
    """:func:`update_with_connection` on a short write connection."""
    with db.session(db_path) as con:
        return update_with_connection(con, general, thresholds)


def reset_with_connection(con: duckdb.DuckDBPyConnection) -> list[Change]:
    """Every setting and threshold back to its default, in one transaction; returns what changed."""
    current = read(con)
    target = defaults()
    done = changes(current, target)
    if done:
        _write(con, target)
    return done


def reset(db_path: str | os.PathLike[str] | None = None) -> list[Change]:
    with db.session(db_path) as con:
        return reset_with_connection(con)


def parse_assignments(assignments: Sequence[str]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """``["integration_window_days=60", "PHQ-9.response_pct=40"]`` → (general, thresholds), for the CLI.

    Raises :class:`InvalidSettings` for text that is not ``NAME=VALUE``; values are checked by :func:`update`.
    """
    general: dict[str, str] = {}
    thresholds: dict[str, dict[str, str]] = {}
    problems: list[Problem] = []
    for text in assignments:
        name, sep, value = text.partition("=")
        name = name.strip()
        if not sep or not name:
            problems.append(
                Problem(
                    text,
                    None,
                    f"{text!r}: expected NAME=VALUE, e.g. integration_window_days=60 "
                    "or PHQ-9.response_pct=50.",
                )
            )
        elif name in GENERAL_BY_KEY or "." not in name:
            general[name] = value.strip()
        else:
            code, _, column = name.rpartition(".")
            thresholds.setdefault(code, {})[column.strip()] = value.strip()
    if problems:
        raise InvalidSettings(problems)
    return general, thresholds


def describe(current: Settings) -> str:
    """The settings in force as a plain-text table (for the command line)."""
    base = defaults()
    lines = [f"{'setting':<34} {'value':>7}  {'default':>7}  unit"]
    for spec in GENERAL:
        value, default = current.general[spec.key], base.general[spec.key]
        mark = "" if value == default else "  (changed)"
        lines.append(f"{spec.key:<34} {value:>7}  {default:>7}  {spec.unit}{mark}")
    for inst in reg.INSTRUMENTS:
        for spec in THRESHOLDS:
            key = f"{inst.code}.{spec.key}"
            value, default = current.thresholds[inst.code][spec.key], base.thresholds[inst.code][spec.key]
            mark = "" if value == default else "  (changed)"
            lines.append(f"{key:<34} {value:>7}  {default:>7}  {spec.unit}{mark}")
    if current.changed_at:
        lines.append(f"last changed {current.changed_at}")
    return "\n".join(lines)
