"""Who may do what: roles, their permissions, the signed-in ``Principal`` and its data scope.

Enforced here, in the core, not only by the app's navigation: the query functions the pages call take the
principal's scope (``scoped`` narrows a ``CohortFilter`` to the principal's clinics, in SQL), the patient
view refuses a patient outside the scope (``check_patient``) and a research export refuses calendar dates
without the per-user permission (``check_export``). A page bug therefore cannot show what the role may not
see. No Streamlit here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

    from kapdata.cohort import CohortFilter

ROLES: tuple[str, ...] = ("clinician", "director", "researcher", "data-manager", "admin")

ROLE_HELP: dict[str, str] = {
    "clinician": "caseload and patient views (their clinics when clinics are set), acknowledgements",
    "director": "overview and clinic outcomes (their clinics); no patient-level view",
    "researcher": "research export (de-identified; calendar dates only with the permission) and aggregates",
    "data-manager": "data import, undo, settings, definitions",
    "admin": "everything, plus users and the audit trail",
}

#: Pages (the file stem under pages/) each role may open.
PAGES: dict[str, frozenset[str]] = {
    "clinician": frozenset({"patient_trends", "definitions"}),
    "director": frozenset({"overview", "clinic_outcomes", "definitions"}),
    "researcher": frozenset({"research_export", "overview", "clinic_outcomes", "definitions"}),
    "data-manager": frozenset({"data_import", "definitions", "settings"}),
    "admin": frozenset(
        {
            "overview",
            "patient_trends",
            "clinic_outcomes",
            "research_export",
            "data_import",
            "definitions",
            "settings",
            "users",
            "audit",
        }
    ),
}

#: Actions each role may take (besides opening its pages).
ACTIONS: dict[str, frozenset[str]] = {
    "clinician": frozenset({"patient.view", "patient.record"}),
    "director": frozenset({"cohort.view"}),
    "researcher": frozenset({"cohort.view", "export"}),
    "data-manager": frozenset({"import", "undo", "settings"}),
    "admin": frozenset(
        {
            "patient.view",
            "patient.record",
            "cohort.view",
            "export",
            "export.calendar",
            "import",
            "undo",
            "settings",
            "users",
            "audit",
        }
    ),
}


class NotPermitted(PermissionError):
    """The principal's role or scope does not allow this. Its text is our own words, safe to show."""


@dataclass(frozen=True)
class Principal:
    """A person (or the operating-system user of the command line) acting on the data.

    ``clinics`` empty means every clinic. ``calendar_dates``: a researcher may export calendar dates.
    ``source``: "local" (an account with a password), "oidc" (organisation sign-in) or "os" (the command line,
    or the app serving only this computer with no accounts).
    """

    email: str
    role: str
    clinics: tuple[str, ...] = field(default_factory=tuple)
    calendar_dates: bool = False
    source: str = "local"

    def __post_init__(self) -> None:
        if self.role not in ROLES and self.role != "cli":
            raise ValueError(f"unknown role {self.role!r}")
        object.__setattr__(self, "clinics", tuple(self.clinics))

    def may_open(self, page: str) -> bool:
        if self.role == "cli":
            return True
        return page in PAGES[self.role]

    def may(self, action: str) -> bool:
        if self.role == "cli":
            return True
        if action == "export.calendar" and self.role == "researcher":
            return self.calendar_dates
        return action in ACTIONS[self.role]

    def require(self, action: str, what: str | None = None) -> None:
        if not self.may(action):
            raise NotPermitted(f"Not permitted: your role ({self.role}) cannot {what or action}.")

    def scope(self) -> tuple[str, ...] | None:
        """The clinics this principal may see; None for every clinic."""
        return self.clinics or None


def local_admin(user: str) -> Principal:
    """The one person at this computer when no account exists and no organisation sign-in is set up."""
    return Principal(email=user, role="admin", source="os")


def cli_principal(user: str) -> Principal:
    """The command line acts as the operating-system user (its writes are audited under that name)."""
    return Principal(email=user, role="cli", source="os")


def narrow(scope: tuple[str, ...] | None, clinics: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The intersection of two scopes (None: every clinic)."""
    if scope is None:
        return clinics
    if clinics is None:
        return scope
    return tuple(c for c in scope if c in clinics)


def scoped(principal: Principal, filt: CohortFilter | None = None) -> CohortFilter:
    """``filt`` narrowed to the principal's clinics: the cohort SQL then cannot return another clinic."""
    from kapdata.cohort import CohortFilter

    base = filt or CohortFilter()
    return dataclasses.replace(base, scope=narrow(base.scope, principal.scope()))


def check_patient(con: duckdb.DuckDBPyConnection, principal: Principal, patient_id: str) -> None:
    """Refuse a patient-level view the principal may not have: the role, or a patient of another clinic.
    A patient who does not exist passes (the view then says there is none)."""
    principal.require("patient.view", "open a patient's record")
    scope = principal.scope()
    if scope is None:
        return
    row = con.execute("SELECT clinic FROM patients WHERE patient_id = ?", [patient_id]).fetchone()
    if row is not None and row[0] not in scope:
        raise NotPermitted("Not permitted: this patient is not in your clinics.")


def check_export(principal: Principal, calendar_dates: bool) -> None:
    principal.require("export", "make a research export")
    if calendar_dates and not principal.may("export.calendar"):
        raise NotPermitted(
            "Not permitted: calendar dates need a per-user permission (ask your administrator); "
            "choose days or weeks from the first dose."
        )
