"""SQL building blocks of validation: row rules (:class:`Check`) and parsers of dates, numbers and aliases.
Everything here is SQL text of our own (no user input is ever formatted into it)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kapdata.ingest.contract import DATE_RE, EARLIEST_DATE, PATIENT_ID_RE, ROUTES

# ------------------------------------------------------------------------------------------ validation


@dataclass(frozen=True)
class Check:
    """A row-level rule: rows where ``bad`` (SQL over table ``parsed``) holds are reported."""

    column: str
    bad: str
    reason: str  # an SQL expression giving the reason text
    value: str | None = None  # an SQL expression for the value shown; default: the raw column
    #: False where a rule is covered in the checking pass by a cheaper equivalent (``_checked_clean``'s
    #: ``also_bad``); it is still reported, by itself, for every failing row.
    in_pass: bool = True


def _lit(text: str) -> str:
    """A constant of ours as an SQL string literal (never user input)."""
    return "'" + text.replace("'", "''") + "'"


def _num(col: str) -> str:
    """SQL: the text column parsed as a number, NULL if it is not one. DuckDB's own cast reads ``1_2`` as
    12 (digit separators); a value with an underscore is not a number here."""
    return f"(CASE WHEN NOT contains({col}, '_') THEN try_cast({col} AS DOUBLE) END)"


def _whole(col: str) -> str:
    """SQL: the text column parsed as a whole number, NULL if it is not one."""
    num = _num(col)
    return f"(CASE WHEN {num} = round({num}) THEN {num} END)"


def _in_list(values: Iterable[str]) -> str:
    return "(" + ", ".join(_lit(v) for v in values) + ")"


def _alias_case(col: str, aliases: dict[str, str]) -> str:
    whens = " ".join(f"WHEN {_lit(k)} THEN {_lit(v)}" for k, v in aliases.items())
    return f"(CASE lower({col}) {whens} END)"


def _common_checks() -> list[Check]:
    return [
        Check("patient_id", "patient_id IS NULL", _lit("patient_id is required")),
        Check(
            "patient_id",
            "patient_id IS NOT NULL AND NOT regexp_full_match(patient_id, " + _lit(PATIENT_ID_RE) + ")",
            _lit("patient_id must be 1-64 characters of letters, digits, '-' or '_'"),
        ),
        Check(
            "patient_id",
            "regexp_full_match(patient_id, '[0-9]{3}-[0-9]{2}-[0-9]{4}')",
            _lit(
                "patient_id looks like a social security number, a direct identifier: use the pseudonymous "
                "code (the value is not shown)"
            ),
            value="NULL",
        ),
    ]


#: Folds an ID to the spelling two look-alike IDs share: letter case, O/0 and I/L/1.
def _fold_id(col: str) -> str:
    return f"translate(upper({col}), 'OIL', '011')"


#: Free-text columns of a patients file: a value that holds an e-mail address or a phone or identity
#: number is refused (the value itself is never repeated in the report).
IDENTIFIER_VALUE_COLUMNS: tuple[str, ...] = ("clinic", "provider")
MIN_IDENTIFIER_DIGITS = 7  # phone numbers, SSNs, NHS and medical record numbers have at least 7 digits


def _identifier_value_checks() -> list[Check]:
    checks = []
    for col in IDENTIFIER_VALUE_COLUMNS:
        checks += [
            Check(
                col,
                f"regexp_matches({col}, '[^[:space:]@]+@[^[:space:]@]+[.][^[:space:]@]+')",
                _lit(
                    "value holds an e-mail address, a direct identifier: the data must arrive anonymized "
                    "(the value is not shown)"
                ),
                value="NULL",
            ),
            Check(
                col,
                f"length(regexp_replace({col}, '[^0-9]', '', 'g')) >= {MIN_IDENTIFIER_DIGITS}",
                _lit(
                    f"value holds {MIN_IDENTIFIER_DIGITS} or more digits, like a phone, social security or "
                    "record number (a direct identifier): the data must arrive anonymized (the value is not "
                    "shown)"
                ),
                value="NULL",
            ),
        ]
    return checks


def _date_checks(column: str) -> list[Check]:
    return [
        Check(column, f"{column} IS NULL", _lit(f"{column} is required")),
        Check(
            column,
            f"{column} IS NOT NULL AND {column}__d IS NULL",
            _lit("not a date: expected YYYY-MM-DD or an ISO date-time such as 2026-06-01T09:30:00+01:00"),
        ),
        Check(
            column,
            f"{column}__d < DATE '{EARLIEST_DATE.isoformat()}'",
            _lit(f"date before {EARLIEST_DATE.year}: check the year"),
        ),
        Check(
            column,
            f"{column}__d > $today",
            "'date is in the future (today is ' || CAST($today AS VARCHAR) || ')'",
        ),
    ]


def _number_column(column: str, whole: bool = True) -> str:
    """SELECT item for the parsed view: the text column as a (whole) number, ``<column>__n``, parsed once
    per row for every rule and the typed value that use it."""
    return f"{_whole(column) if whole else _num(column)} AS {column}__n"


def _range_check(column: str, low: float, high: float, what: str, whole: bool = True) -> list[Check]:
    """The rules of a number column; the parsed view has its ``<column>__n`` (:func:`_number_column`, the
    same ``whole``)."""
    parsed = f"{column}__n"
    kind = "a whole number" if whole else "a number"
    return [
        Check(column, f"{column} IS NOT NULL AND {parsed} IS NULL", _lit(f"not {kind}")),
        Check(
            column,
            f"{parsed} < {low} OR {parsed} > {high}",
            _lit(f"{what} must be between {low:g} and {high:g}"),
        ),
    ]


def _parse_date_sql(column: str) -> str:
    """SQL giving the local timestamp of a date or date-time text (its offset ignored), NULL if bad."""
    time_text = f"regexp_extract({column}, '^.{{10}}[T ]([0-9:.]+)', 1)"
    # A time that is present but invalid (25:00) makes the whole value unparseable, not midnight.
    # Fast path for the common plain date (YYYY-MM-DD); everything else goes through the full pattern.
    return (
        f"CASE WHEN length({column}) = 10 AND substr({column}, 5, 1) = '-' AND substr({column}, 8, 1) = '-' "
        f"AND regexp_full_match({column}, '[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}') "
        f"THEN CAST(try_cast({column} AS DATE) AS TIMESTAMP) "
        f"WHEN regexp_full_match({column}, {_lit(DATE_RE)}) THEN "
        f"try_cast(left({column}, 10) AS DATE) + (CASE WHEN {time_text} = '' THEN TIME '00:00:00' "
        f"ELSE try_cast({time_text} AS TIME) END) END"
    )


def _route_check(column: str = "route") -> Check:
    return Check(
        column,
        f"{column} IS NOT NULL AND {column}__v IS NULL",
        _lit("unknown route; expected one of " + ", ".join(ROUTES)),
    )
