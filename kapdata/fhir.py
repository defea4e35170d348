"""FHIR R4 in and out: read questionnaire scores, dosing sessions and patients from a FHIR R4 Bundle, a
bulk-export NDJSON file or a folder of them; write scores as an R4 Bundle of Observations.

Reading turns FHIR resources into the data contract's rows (every value as text, as a CSV cell holds it),
so that the import pipeline checks them exactly like a CSV file. This module decides only what each
resource *says*; it never judges a score: a stated total that contradicts the items, or an impossible
total, is passed on as stated and rejected row by row by validation.

- ``Observation``: the LOINC total codes, panel codes and item codes of the scale registry
  (``kapdata.instruments``); items in ``component`` or as their own Observations at the same time.
- ``QuestionnaireResponse``: the PHQ-9, GAD-7 and PCL-5 panels, known by the ``questionnaire`` canonical or
  by their item codes; items by LOINC code (``definition`` or ``linkId``), by the linkIds a mapping names, or
  by position when every item is answered (by the number or letter the linkIds end in, ``phq-phq9-q01`` or
  ``phq-phq2a``, else in document order). Without a code, an item whose linkId or text says total or score
  (with a number answered) is the total, and the PHQ-9 / GAD-7 difficulty question (LOINC 69722-7: its
  answer codes, "difficult" in its linkId or text, or a 10th numbered PHQ-9 question) is left out. A
  response from which nothing can be read is a row error. A response at the same patient, scale and local
  date-time as an Observation (one assessment sent both ways) is joined into the Observation's row; a
  column both give with different values is a row error naming both.
- ``Procedure`` / ``MedicationAdministration`` with ketamine (RxNorm 6130, SNOMED CT 373464007 or 49327004,
  ATC N01AX03 or N01AX14 (esketamine), or "ketamine" in the code's text; a ``Medication`` referenced in any
  file read or contained): dosing sessions.
- ``Patient``: only makes a patient known. Its id becomes a keyed hash (HMAC-SHA256) unless the ids are
  already pseudonymous; no other Patient field is read.
- Everything else is counted in ``skipped``. STU3 and DSTU2 files are refused (:class:`FhirError`).

Validation uses the ``fhir.resources`` models of FHIR R4B (4.3.0): ``fhir.resources`` 7 and 8 ship R5 as
the default, R4B and STU3 as sub-packages, and no R4 (4.0.1) package. R4B changed none of the resources
read here (Patient, Observation, QuestionnaireResponse, Procedure, MedicationAdministration, Medication,
Bundle), so an R4 resource that fails the R4B model is not valid R4 either.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
from pydantic import ValidationError

from kapdata import instruments as reg

LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
V3_ROUTE = "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration"
UCUM = "http://unitsofmeasure.org"
ORDINAL_URLS = (
    "http://hl7.org/fhir/StructureDefinition/ordinalValue",
    "http://hl7.org/fhir/StructureDefinition/iso21090-CO-value",
)
#: LOINC answer list LL358-3 (Not at all … Nearly every day), the answers of the PHQ-9 and GAD-7 items.
LA_SCORES: dict[str, int] = {"LA6568-5": 0, "LA6569-3": 1, "LA6570-1": 2, "LA6571-9": 3}
LA_INSTRUMENTS: frozenset[str] = frozenset({"PHQ-9", "GAD-7"})
#: The LOINC answers of the PHQ-9 difficulty question (69722-7, not scored): Not difficult at all, Somewhat
#: difficult, Very difficult, Extremely difficult.
LA_DIFFICULTY: frozenset[str] = frozenset({"LA6572-7", "LA6573-5", "LA6575-0", "LA6574-3"})
#: Other questionnaires named in the skipped counts (any other LOINC code is counted by its code).
OTHER_SCALES: dict[str, str] = {"55758-7": "PHQ-2", "89204-2": "PHQ-9 modified for teens"}
KETAMINE_CODES: frozenset[tuple[str, str]] = frozenset(
    {(RXNORM, "6130"), (SNOMED, "373464007"), (SNOMED, "49327004")}
)
#: WHO ATC codes of ketamine and esketamine (under any ATC code system URL: WHO's, BfArM's in Germany…).
KETAMINE_ATC: frozenset[str] = frozenset({"N01AX03", "N01AX14"})
#: Route codes (SNOMED CT routes, HL7 v3 RouteOfAdministration) → the contract's route vocabulary.
ROUTE_CODES: dict[tuple[str, str], str] = {
    (SNOMED, "47625008"): "IV",
    (SNOMED, "78421000"): "IM",
    (SNOMED, "37839007"): "SL",
    (SNOMED, "46713006"): "IN",
    (SNOMED, "26643006"): "oral",
    (V3_ROUTE, "IVINJ"): "IV",
    (V3_ROUTE, "IVINJBOL"): "IV",
    (V3_ROUTE, "IVINFUS"): "IV",
    (V3_ROUTE, "IV"): "IV",
    (V3_ROUTE, "IMINJ"): "IM",
    (V3_ROUTE, "SL"): "SL",
    (V3_ROUTE, "NASINHL"): "IN",
    (V3_ROUTE, "NASINHLC"): "IN",
    (V3_ROUTE, "NASINSTIL"): "IN",
    (V3_ROUTE, "PO"): "oral",
}
#: Route words in a code's text or display (checked in this order).
ROUTE_WORDS: tuple[tuple[str, str], ...] = (
    ("intravenous", "IV"),
    ("intramuscular", "IM"),
    ("sublingual", "SL"),
    ("intranasal", "IN"),
    ("nasal", "IN"),
    ("oral", "oral"),
)
READ_STATUSES = {
    "Observation": ("final", "amended", "corrected"),
    "QuestionnaireResponse": ("completed", "amended"),
    "Procedure": ("completed",),
    "MedicationAdministration": ("completed",),
}

# -------------------------------------------------------------------------------- version markers
# Elements and resource types that exist only in an older FHIR version (from the R4 "changes from STU3" and
# STU3 "changes from DSTU2" pages of the specification). One is enough to refuse a file.
_STU3_TYPES = frozenset(
    {
        "ProcedureRequest",
        "ReferralRequest",
        "ProcessRequest",
        "ProcessResponse",
        "EligibilityRequest",
        "EligibilityResponse",
        "DeviceComponent",
        "DataElement",
        "ServiceDefinition",
        "BodySite",
        "ImagingManifest",
        "ExpansionProfile",
        "Sequence",
    }
)
_DSTU2_TYPES = frozenset(
    {"MedicationOrder", "DiagnosticOrder", "Order", "OrderResponse", "DeviceUseRequest", "Conformance"}
)
_STU3_ELEMENTS: dict[str, tuple[str, ...]] = {
    "Patient": ("animal",),
    "Observation": ("context", "related", "comment"),
    "Procedure": ("notDone", "notDoneReason", "context", "definition"),
    "Condition": ("assertedDate", "context", "abatementBoolean"),
    "AllergyIntolerance": ("assertedDate",),
    "MedicationRequest": ("context", "definition"),
    "MedicationAdministration": ("notGiven", "reasonNotGiven", "definition", "prescription"),
    "MedicationStatement": ("taken", "reasonNotTaken"),
    "DiagnosticReport": ("context", "codedDiagnosis", "image"),
    "CarePlan": ("context", "definition"),
    "CareTeam": ("context",),
    "Immunization": ("notGiven", "date", "explanation", "vaccinationProtocol"),
    "Encounter": ("incomingReferral",),
    "Goal": ("status",),
}
_DSTU2_ELEMENTS: dict[str, tuple[str, ...]] = {
    "Patient": ("careProvider",),
    "Condition": ("patient", "dateRecorded"),
    "Encounter": ("patient",),
    "Observation": ("comments",),
    "Procedure": ("notPerformed",),
    "QuestionnaireResponse": ("group",),
    "Questionnaire": ("group",),
    "MedicationAdministration": ("patient", "wasNotGiven", "effectiveTimeDateTime"),
    "MedicationStatement": ("patient", "wasNotTaken"),
    "Immunization": ("wasNotGiven",),
}
#: Elements that are a code (a JSON string) before R4 and a CodeableConcept (an object) from R4 on.
_STRING_IN_R4_CODEABLE: dict[str, tuple[str, ...]] = {
    "Condition": ("clinicalStatus", "verificationStatus"),
    "AllergyIntolerance": ("clinicalStatus", "verificationStatus"),
}
_PROFILE_MARKERS = (
    ("/DSTU2/", "DSTU2"),
    ("hl7.org/fhir/1.0", "DSTU2"),
    ("fhir.org/guides/argonaut/", "DSTU2"),
    ("/STU3/", "STU3"),
    ("hl7.org/fhir/3.0", "STU3"),
)

_LOINC_RE = re.compile(r"\d{1,7}-\d")
_CODE_IN_TEXT_RE = re.compile(r"(?<![0-9-])(\d{4,7}-\d)(?![0-9])")
_TYPE_RE = re.compile(r"[A-Z][A-Za-z]{1,63}")
_STATUS_RE = re.compile(r"[a-z-]{1,32}")
_PATIENT_REF_RE = re.compile(r"(?:^|/)Patient/([A-Za-z0-9.\-]{1,64})(?:/_history/[^/]*)?$")
_FHIR_DATETIME_RE = re.compile(
    r"(\d{4}-\d{2}-\d{2})(?:T(\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?))?(?:Z|[+-]\d{2}:\d{2})?"
)
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")
#: Words that make an item without a LOINC code the total (in its linkId or text, with a number answered).
_TOTAL_WORDS_RE = re.compile(r"(?<![a-z])(?:total|score|sum(?![a-z])|summe|gesamt)")
_DIFFICULT_RE = re.compile(r"difficult|schwierig|erschwert")
#: The number or the single letter a linkId ends in (``phq-phq9-q01`` → 01, ``phq-phq2c`` → c).
_TRAILING_RE = re.compile(r"(?:(?<![0-9])([0-9]{1,3})|(?<![a-z])([a-z]))$")
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # no I, L, O, U: keys never look alike when folded


Kind = Literal["patients", "sessions", "scores"]


class FhirError(ValueError):
    """A whole source refused; the message is one line in words."""


@dataclass
class Converted:
    kind: Kind
    #: The contract's columns as text, plus ``_kap_row`` (int64: NDJSON line or Bundle entry, 1-based),
    #: ``_kap_source`` (the file the row came from, for a folder) and ``_kap_error`` (empty, or why the
    #: resource cannot be used: the pipeline makes it a row error).
    table: pa.Table
    source_name: str


@dataclass
class FhirResult:
    converted: list[Converted]
    skipped: dict[str, int]
    notes: list[str]


# ----------------------------------------------------------------------------------------- helpers


def pseudonym(fhir_id: str, key: bytes) -> str:
    """``F`` + 10 Crockford base32 characters of HMAC-SHA256(key, id): 50 bits, the same id always giving
    the same key, so next month's export of the same EHR lands on the same patients."""
    digest = hmac.new(key, b"kap-fhir-patient\x00" + fhir_id.encode("utf-8"), hashlib.sha256).digest()
    n = int.from_bytes(digest[:8], "big") >> 14
    chars = []
    for _ in range(10):
        chars.append(CROCKFORD[n & 31])
        n >>= 5
    return "F" + "".join(reversed(chars))


def local_datetime(text: object) -> str:
    """A FHIR date or date-time keeping its own local date and time, offset dropped:
    ``2012-05-30T21:34:39+12:00`` → ``2012-05-30T21:34:39``. Anything else comes back as given (as text)
    for validation to reject."""
    if not isinstance(text, str):
        return "" if text is None else str(text)
    m = _FHIR_DATETIME_RE.fullmatch(text.strip())
    if not m:
        return text
    return m[1] + (f"T{m[2]}" if m[2] else "")


def _number_text(value: object) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str) and _NUMBER_RE.fullmatch(value.strip()):
        return value.strip()
    return None


def _codings(concept: object) -> list[dict[str, Any]]:
    if not isinstance(concept, dict):
        return []
    return [c for c in concept.get("coding") or [] if isinstance(c, dict)]


def _loinc_codes(concept: object) -> list[str]:
    return [
        str(c["code"])
        for c in _codings(concept)
        if str(c.get("system", "")).rstrip("/") == LOINC and isinstance(c.get("code"), str)
    ]


def _texts(concept: object) -> str:
    """The text and displays of a CodeableConcept, lower case (for name matching only)."""
    if not isinstance(concept, dict):
        return ""
    parts = [str(concept.get("text") or "")] + [str(c.get("display") or "") for c in _codings(concept)]
    return " ".join(parts).lower()


def _ordinal(element: object) -> float | int | None:
    if not isinstance(element, dict):
        return None
    for ext in element.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") in ORDINAL_URLS:
            for k in ("valueDecimal", "valueInteger"):
                if isinstance(ext.get(k), int | float) and not isinstance(ext.get(k), bool):
                    return ext[k]
    return None


@cache
def _code_index() -> dict[str, tuple[reg.Instrument, str, int]]:
    """LOINC code → (instrument, role, item number): role ``panel``, ``total`` or ``item``."""
    index: dict[str, tuple[reg.Instrument, str, int]] = {}
    for inst in reg.INSTRUMENTS:
        index[inst.loinc_panel] = (inst, "panel", 0)
        index[inst.loinc_total] = (inst, "total", 0)
        for n, code in inst.loinc_items.items():
            index[code] = (inst, "item", n)
    return index


def _coded_score(
    codings: Iterable[dict[str, Any]], holder: object, inst: reg.Instrument
) -> tuple[str | None, str | None]:
    """The score an answer coding stands for: the ordinal extension (on the coding, else on the element
    holding it) wins over the LOINC answer code, which only PHQ-9 and GAD-7 answers are read by."""
    codings = list(codings)
    for c in codings:
        o = _ordinal(c)
        if o is not None:
            return _number_text(o), None
    o = _ordinal(holder)
    if o is not None:
        return _number_text(o), None
    if inst.code in LA_INSTRUMENTS:
        for c in codings:
            if c.get("code") in LA_SCORES:
                return str(LA_SCORES[str(c["code"])]), None
    return (
        None,
        "an answer is a code with no score (no ordinalValue extension and no known LOINC answer code)",
    )


def _value(element: dict[str, Any], inst: reg.Instrument) -> tuple[str | None, str | None]:
    """(value as text, problem) of an Observation, a component or a QuestionnaireResponse answer."""
    if "valueQuantity" in element:
        q = element["valueQuantity"]
        v = _number_text(q.get("value")) if isinstance(q, dict) else None
        return (v, None) if v is not None else (None, "the value is not a number")
    for k in ("valueInteger", "valueDecimal"):
        if k in element:
            v = _number_text(element[k])
            return (v, None) if v is not None else (None, "the value is not a number")
    if "valueString" in element:
        v = _number_text(element["valueString"])
        return (v, None) if v is not None else (None, "the value is text, not a number")
    if "valueCodeableConcept" in element:
        cc = element["valueCodeableConcept"]
        return _coded_score(_codings(cc), cc, inst)
    if "valueCoding" in element:
        c = element["valueCoding"]
        return _coded_score([c] if isinstance(c, dict) else [], element, inst)
    if any(k.startswith("value") for k in element):
        return None, "the value is not a number"
    return None, None


# -------------------------------------------------------------------------------------- reading files


@dataclass
class _Res:
    source: str
    where: str  # "line" or "entry"
    pos: int
    res: dict[str, Any]
    full_url: str | None = None

    @property
    def place(self) -> str:
        return f"{self.source} {self.where} {self.pos}" if self.pos else f"{self.source} (the Bundle)"


def _is_fhir_file(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix == ".ndjson":
        return path.is_file()
    if suffix != ".json" or not path.is_file():
        return False
    try:
        with path.open("rb") as fh:
            head = fh.read(65536)
    except OSError:
        return False
    return b'"resourceType"' in head


def _folder_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in (".json", ".ndjson")
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def is_fhir(path: Path) -> bool:
    """A cheap sniff: an ``.ndjson`` file, a ``.json`` file naming a ``resourceType`` in its first 64 KB,
    or a folder holding one of those."""
    path = Path(path)
    if path.is_dir():
        return any(_is_fhir_file(p) for p in _folder_files(path))
    return _is_fhir_file(path)


def _iter_file(path: Path, name: str) -> Iterator[_Res]:
    if path.suffix.lower() == ".ndjson":
        try:
            with path.open(encoding="utf-8-sig") as fh:
                for i, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        res = json.loads(line)
                    except ValueError:
                        raise FhirError(
                            f"{name} line {i} is not JSON: an NDJSON file holds one FHIR resource per line"
                        ) from None
                    if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
                        raise FhirError(f"{name} line {i} is not a FHIR resource (no resourceType)")
                    yield _Res(name, "line", i, res)
        except UnicodeDecodeError:
            raise FhirError(f"{name} is not UTF-8 text") from None
        return
    try:
        doc = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise FhirError(f"{name} is not UTF-8 text") from None
    except ValueError:
        raise FhirError(f"{name} is not valid JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("resourceType"), str):
        raise FhirError(f"{name} is not a FHIR resource or Bundle (no resourceType)")
    if doc["resourceType"] != "Bundle":
        yield _Res(name, "entry", 1, doc)
        return
    _check_version(_Res(name, "entry", 0, doc))
    for i, entry in enumerate(doc.get("entry") or [], 1):
        res = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            yield _Res(name, "entry", i, {"resourceType": "(Bundle entry without a resource)"})
            continue
        full_url = entry.get("fullUrl")
        yield _Res(name, "entry", i, res, full_url if isinstance(full_url, str) else None)


def _old_version(res: dict[str, Any]) -> tuple[str, str] | None:
    """(version, the marker that shows it) when a resource is FHIR STU3 or DSTU2, else None."""
    rtype = res.get("resourceType")
    version = res.get("fhirVersion")
    if isinstance(version, str):
        if version.startswith(("1.0", "0.")):
            return "DSTU2", f"fhirVersion {version}"
        if version.startswith("3.0"):
            return "STU3", f"fhirVersion {version}"
    meta = res.get("meta")
    for profile in (meta.get("profile") or []) if isinstance(meta, dict) else []:
        for marker, ver in _PROFILE_MARKERS:
            if isinstance(profile, str) and marker in profile:
                return ver, f"meta.profile {profile}"
    if rtype in _DSTU2_TYPES:
        return "DSTU2", f"the resource type {rtype} (renamed or removed after DSTU2)"
    if rtype in _STU3_TYPES:
        return "STU3", f"the resource type {rtype} (renamed or removed in R4)"
    if not isinstance(rtype, str):
        return None
    for el in _DSTU2_ELEMENTS.get(rtype, ()):
        if el in res:
            return "DSTU2", f"{rtype}.{el} (a DSTU2 element)"
    for el in _STU3_ELEMENTS.get(rtype, ()):
        if el in res:
            return "STU3", f"{rtype}.{el} (an STU3 element, renamed or removed in R4)"
    for el in _STRING_IN_R4_CODEABLE.get(rtype, ()):
        if isinstance(res.get(el), str):
            return "STU3", f"{rtype}.{el} is a code, not a CodeableConcept as in R4"
    if rtype == "QuestionnaireResponse" and isinstance(res.get("questionnaire"), dict):
        return "STU3", "QuestionnaireResponse.questionnaire is a Reference, not a canonical URL as in R4"
    return None


def _refuse(version: str, r: _Res, marker: str) -> FhirError:
    return FhirError(
        f"this is a FHIR {version} file, not R4 ({r.place}: {marker}); only FHIR R4 is read: export the "
        "data again as FHIR R4"
    )


def _check_version(r: _Res) -> None:
    found = _old_version(r.res)
    if found:
        raise _refuse(found[0], r, found[1])


# ------------------------------------------------------------------------------------- validation


@cache
def _model(version: str, rtype: str) -> Any:
    if version == "STU3":
        from fhir.resources.STU3 import get_fhir_model_class as stu3_class

        return stu3_class(rtype)
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(rtype)


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


_ERROR_WORDS = {
    "extra_forbidden": "is not an element of FHIR R4",
    "missing": "is required",
}


def _validate(r: _Res) -> str | None:
    """None when the resource is valid FHIR R4; otherwise a reason in words (the element path and the kind
    of problem, never the value). A resource that fails R4 but is valid STU3 refuses the file."""
    rtype = str(r.res["resourceType"])
    try:
        _model("R4", rtype).model_validate(r.res)
        return None
    except ValidationError as exc:
        errors = exc.errors()
    try:
        _model("STU3", rtype).model_validate(r.res)
    except (ValidationError, ValueError):
        pass
    else:
        raise _refuse("STU3", r, f"the {rtype} is valid FHIR STU3 but not valid R4")
    first = errors[0]
    words = _ERROR_WORDS.get(str(first.get("type")), "is not valid")
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"not valid FHIR R4: {rtype}{_loc(tuple(first.get('loc', ())))} {words}{more}"


# -------------------------------------------------------------------------------------------- reading


@dataclass
class _Row:
    place: _Res
    values: dict[str, str]
    errors: list[str] = field(default_factory=list)
    members: list[int] = field(default_factory=list)
    #: A QuestionnaireResponse from which nothing could be read: why, in words (a row error unless the
    #: response is joined with an Observation of the same score).
    unread: str | None = None


class _Reader:
    def __init__(
        self,
        key: bytes | None,
        ids_are_pseudonymous: bool,
        link_ids: Mapping[str, Mapping[str, str]] | None,
    ) -> None:
        self.key = key
        self.plain = ids_are_pseudonymous
        self.link_ids = {reg.get(k).code: dict(v) for k, v in (link_ids or {}).items()}
        self.skipped: dict[str, int] = {}
        self.notes: list[str] = []
        self.patient_urls: dict[str, str] = {}  # fullUrl → Patient id
        self.patients: dict[str, _Res] = {}  # Patient id → where it was
        self.patient_errors: dict[str, str] = {}  # Patient id → why the resource is not valid R4
        self.medications: dict[str, bool] = {}  # "Medication/id" or fullUrl → is ketamine
        self.observations: list[tuple[_Res, reg.Instrument, str, int]] = []
        self.responses: list[tuple[_Res, reg.Instrument]] = []
        self.doses: list[_Res] = []
        self.by_position = 0
        self.difficulty_dropped = 0
        self.items_unread = 0
        self.merged_with_observation = 0
        self.merged_responses = 0
        self.merged_unread = 0
        self.routes_unknown = 0
        self.units_unknown = 0

    def skip(self, what: str) -> None:
        self.skipped[what] = self.skipped.get(what, 0) + 1

    # ---- pass 1: sort every resource
    def take(self, r: _Res) -> None:
        _check_version(r)
        res = r.res
        rtype = str(res["resourceType"])
        if rtype == "Patient":
            pid = res.get("id")
            if not isinstance(pid, str) and r.full_url:
                pid = r.full_url.rsplit(":", 1)[-1].rsplit("/", 1)[-1]
            if not isinstance(pid, str) or not pid:
                self.skip("Patient without an id")
                return
            if r.full_url:
                self.patient_urls[r.full_url] = pid
            if pid not in self.patients:
                self.patients[pid] = r
                problem = _validate(r)
                if problem:
                    self.patient_errors[pid] = problem
            # Only the id is kept: names, birth dates, addresses and every other field are dropped here.
            r.res = {"resourceType": "Patient", "id": pid}
            return
        if rtype == "Medication":
            keti = _is_ketamine(res.get("code")) or any(
                _is_ketamine(i.get("itemCodeableConcept"))
                for i in res.get("ingredient") or []
                if isinstance(i, dict)
            )
            if isinstance(res.get("id"), str):
                self.medications[f"Medication/{res['id']}"] = keti
            if r.full_url:
                self.medications[r.full_url] = keti
            self.skip("Medication")
            return
        if rtype == "Observation":
            self._take_observation(r)
        elif rtype == "QuestionnaireResponse":
            if not self._status_ok(r):
                return
            inst = self._response_inst(r.res, list(_leaves(r.res.get("item") or [])))
            if inst is None:
                self.skip("QuestionnaireResponse (not PHQ-9, GAD-7 or PCL-5)")
                return
            self.responses.append((r, inst))
        elif rtype in ("Procedure", "MedicationAdministration"):
            # decided now where the resource itself says (so a large Procedure file is not kept in memory);
            # a MedicationAdministration naming a Medication elsewhere waits for every file to be read
            if _direct_ketamine(res) is False:
                self.skip(f"{rtype} (not ketamine)")
            else:
                self.doses.append(r)
        else:
            self.skip(rtype if _TYPE_RE.fullmatch(rtype) else "(resource of an unknown type)")

    def _status_ok(self, r: _Res, what: str | None = None) -> bool:
        rtype = str(r.res["resourceType"])
        status = r.res.get("status")
        if status in READ_STATUSES[rtype]:
            return True
        shown = status if isinstance(status, str) and _STATUS_RE.fullmatch(status) else "missing"
        self.skip(f"{what or rtype} with status {shown}")
        return False

    def _take_observation(self, r: _Res) -> None:
        codes = _loinc_codes(r.res.get("code"))
        index = _code_index()
        for code in codes:
            if code in index:
                inst, role, item = index[code]
                if self._status_ok(r, f"{inst.code} Observation"):
                    self.observations.append((r, inst, role, item))
                return
        other = next((c for c in codes if _LOINC_RE.fullmatch(c)), None)
        if other is None:
            self.skip("Observation without a LOINC code")
        elif other in OTHER_SCALES:
            self.skip(f"Observation LOINC {other} ({OTHER_SCALES[other]})")
        else:
            self.skip(f"Observation LOINC {other}")

    # ---- patients
    def patient_id(self, ref: object) -> tuple[str, str | None]:
        """(patient_id for the row, problem) of a subject/patient Reference."""
        if not isinstance(ref, dict):
            return "", "the resource names no patient (subject)"
        text = ref.get("reference")
        fhir_id: str | None = None
        if isinstance(text, str):
            if text in self.patient_urls:
                fhir_id = self.patient_urls[text]
            elif text.startswith(("urn:uuid:", "urn:oid:")):
                fhir_id = text.rsplit(":", 1)[-1]
            else:
                m = _PATIENT_REF_RE.search(text)
                if not m:
                    return "", "the subject is not a reference to a Patient"
                fhir_id = m[1]
        else:
            ident = ref.get("identifier")
            if isinstance(ident, dict) and isinstance(ident.get("value"), str):
                value = ident["value"]
                fhir_id = value if self.plain else f"identifier:{ident.get('system', '')}|{value}"
        if not fhir_id:
            return "", "the subject is not a reference to a Patient"
        return self._pseudonym(fhir_id), None

    def _pseudonym(self, fhir_id: str) -> str:
        if self.plain:
            return fhir_id
        assert self.key is not None
        return pseudonym(fhir_id, self.key)

    # ---- pass 2: rows
    def patient_rows(self) -> list[_Row]:
        rows = []
        for pid, r in self.patients.items():
            row = _Row(r, {"patient_id": self._pseudonym(pid)})
            if pid in self.patient_errors:
                row.errors.append(self.patient_errors[pid])
            rows.append(row)
        return rows

    def score_rows(self) -> list[_Row]:
        groups: dict[tuple[str, str, str], _Row] = {}
        order: list[_Row] = []
        for r, inst, role, item in self.observations:
            res = r.res
            pid, problem = self.patient_id(res.get("subject"))
            effective = res.get("effectiveDateTime")
            if effective is None and isinstance(res.get("effectivePeriod"), dict):
                effective = res["effectivePeriod"].get("start")
            if effective is None:
                effective = res.get("effectiveInstant")
            when = local_datetime(effective)
            key = (pid or f"?{r.place}", inst.code, when)
            row = groups.get(key)
            if row is None:
                row = _Row(r, {"patient_id": pid, "instrument": inst.code, "assessed_on": when})
                groups[key] = row
                order.append(row)
            row.members.append(r.pos)
            if problem:
                row.errors.append(problem)
            invalid = _validate(r)
            if invalid:
                row.errors.append(invalid)
            parts: list[tuple[str, int, dict[str, Any]]] = []
            if role == "item":
                parts.append(("item", item, res))
            elif role == "total" or any(k.startswith("value") for k in res):
                parts.append(("total", 0, res))  # a panel with a value of its own: its total
            for comp in res.get("component") or []:
                if not isinstance(comp, dict):
                    continue
                for code in _loinc_codes(comp.get("code")):
                    hit = _code_index().get(code)
                    if hit and hit[0] is inst and hit[1] in ("total", "item"):
                        parts.append((hit[1], hit[2], comp))
                        break
            for part_role, n, element in parts:
                value, why = _value(element, inst)
                column = "total" if part_role == "total" else f"item_{n}"
                if why:
                    row.errors.append(f"{column}: {why}")
                if value is None:
                    continue
                old = row.values.get(column)
                if old is not None and old != value:
                    row.errors.append(
                        f"two different {column} values for one {inst.code} at the same time "
                        f"({old} and {value})"
                    )
                row.values[column] = value
        # A response is joined with the Observation (or response) of the same patient, scale and local
        # date-time: a clinic system often sends one assessment both ways, and two rows with one key would be
        # rejected as duplicates.
        for r, inst in self.responses:
            row = self._response_row(r, inst)
            key = (row.values["patient_id"], inst.code, row.values["assessed_on"])
            target = groups.get(key) if all(key) else None
            if target is None:
                if row.unread:
                    row.errors.append(row.unread)
                if all(key):
                    groups[key] = row
                order.append(row)
            else:
                self._merge(target, row)
        return order

    def _response_inst(self, res: dict[str, Any], leaves: list[dict[str, Any]]) -> reg.Instrument | None:
        canonical = res.get("questionnaire")
        if isinstance(canonical, str):
            for inst in reg.INSTRUMENTS:
                if re.search(rf"(?<![0-9]){re.escape(inst.loinc_panel)}(?![0-9])", canonical):
                    return inst
            tail = canonical.split("|", 1)[0].rstrip("/").rsplit("/", 1)[-1]
            for inst in reg.INSTRUMENTS:
                if inst.key in reg.normalize_key(tail):
                    return inst
        for inst in reg.INSTRUMENTS:
            names = set(self.link_ids.get(inst.code, {}).values())
            if names and any(leaf.get("linkId") in names for leaf in leaves):
                return inst
        # By item codes: at least three items or the total, so that a PHQ-2 (PHQ-9 items 1 and 2 under
        # another questionnaire) is not taken for a PHQ-9.
        found: dict[str, set[int]] = {}
        for leaf in leaves:
            hit = _code_index().get(_leaf_code(leaf) or "")
            if hit and hit[1] in ("item", "total"):
                found.setdefault(hit[0].code, set()).add(hit[2])
        for code, numbers in found.items():
            if 0 in numbers or len(numbers) >= 3:
                return reg.get(code)
        return None

    def _response_row(self, r: _Res, inst: reg.Instrument) -> _Row:
        """The score row of one QuestionnaireResponse. Items are placed by the linkIds a mapping names, else
        by LOINC code; an item without either is the total when its linkId or text says total/score (and
        the answer is a number), is dropped when it is the difficulty question of the PHQ-9 / GAD-7, and
        the items left are taken in order when exactly as many remain as the scale has items."""
        res = r.res
        leaves = list(_leaves(res.get("item") or []))
        subject = res.get("subject")
        source = res.get("source")
        if subject is None and isinstance(source, dict) and "Patient/" in str(source.get("reference", "")):
            subject = source  # a patient-completed response may name its patient only as the source
        pid, problem = self.patient_id(subject)
        when = local_datetime(res.get("authored"))
        row = _Row(r, {"patient_id": pid, "instrument": inst.code, "assessed_on": when}, members=[r.pos])
        if problem:
            row.errors.append(problem)
        invalid = _validate(r)
        if invalid:
            row.errors.append(invalid)
        by_link = {v: k for k, v in self.link_ids.get(inst.code, {}).items()}
        placed: list[tuple[str, dict[str, Any]]] = []
        loose: list[dict[str, Any]] = []
        for leaf in leaves:
            column = by_link.get(str(leaf.get("linkId")))
            if column is None:
                hit = _code_index().get(_leaf_code(leaf) or "")
                if hit and hit[0] is inst and hit[1] == "total":
                    column = "total"
                elif hit and hit[0] is inst and hit[1] == "item":
                    column = f"item_{hit[2]}"
            if column is None:
                if _is_difficulty(leaf, inst):
                    self.difficulty_dropped += 1
                    continue
                if _names_total(leaf) and _numeric_answer(leaf):
                    column = "total"
            if column is None:
                loose.append(leaf)
            else:
                placed.append((column, leaf))
        if not any(c.startswith("item_") for c, _ in placed) and loose:
            loose = self._without_tenth_question(inst, loose)
            if len(loose) == inst.n_items:
                placed += [(f"item_{n}", leaf) for n, leaf in enumerate(_in_order(loose), 1)]
                self.by_position += 1
            else:
                self.items_unread += 1
        for column, leaf in placed:
            answers = [a for a in leaf.get("answer") or [] if isinstance(a, dict)]
            if len(answers) > 1:
                row.errors.append(f"{column}: more than one answer")
            value, why = _value(answers[0], inst) if answers else (None, None)
            if why:
                row.errors.append(f"{column}: {why}")
            if value is not None:
                if column in row.values and row.values[column] != value:
                    row.errors.append(f"{column} answered twice with different values")
                row.values[column] = value
        if not any(c == "total" or c.startswith("item_") for c in row.values):
            why = (
                "its answers are not scores (see the other problems)"
                if placed
                else "its answered items carry no LOINC code and no linkId of the mapping, none is named "
                f"total or score, and they are not exactly {inst.n_items} to take in order (map its linkIds "
                "to the columns)"
                if loose
                else "it holds no answered item"
            )
            row.unread = f"neither the items nor the total of this {inst.code} could be read: {why}"
        return row

    def _without_tenth_question(
        self, inst: reg.Instrument, loose: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The PHQ-9 items numbered 1 to 10 in their linkIds: the 10th is the difficulty question (LOINC
        69722-7, not scored), whatever its answers."""
        if inst.code != "PHQ-9" or len(loose) != inst.n_items + 1:
            return loose
        keys = [_trailing_key(leaf) for leaf in loose]
        if sorted(k for k in keys if k is not None) != list(range(1, inst.n_items + 2)):
            return loose
        self.difficulty_dropped += 1
        return [leaf for leaf, k in zip(loose, keys, strict=True) if k != inst.n_items + 1]

    def _merge(self, target: _Row, row: _Row) -> None:
        """Join a QuestionnaireResponse row into the row of the same score (same patient, scale and local
        date-time) from an Observation or another response; a column both give with different values is
        a row error naming both."""
        kind = str(row.place.res.get("resourceType"))
        other = str(target.place.res.get("resourceType"))
        inst = target.values["instrument"]
        for column, value in row.values.items():
            if column in ("patient_id", "instrument", "assessed_on"):
                continue
            old = target.values.get(column)
            if old is not None and old != value:
                target.errors.append(
                    f"two different {column} values for one {inst} at the same time: {value} in the {kind} "
                    f"({row.place.place}) and {old} in the {other} ({target.place.place})"
                )
            else:
                target.values[column] = value
        target.errors += row.errors
        if row.unread:
            self.merged_unread += 1
        if row.place.source == target.place.source:
            target.members.append(row.place.pos)
        if other == "Observation":
            self.merged_with_observation += 1
        else:
            self.merged_responses += 1

    def session_rows(self) -> list[_Row]:
        groups: dict[tuple[str, str], _Row] = {}
        order: list[_Row] = []
        for r in self.doses:
            res = r.res
            rtype = str(res["resourceType"])
            keti = _direct_ketamine(res)
            if rtype == "Procedure":
                concepts = [res.get("code"), *(res.get("usedCode") or [])]
                when = res.get("performedDateTime")
                if when is None and isinstance(res.get("performedPeriod"), dict):
                    when = res["performedPeriod"].get("start")
                route = _route_from_text(" ".join(_texts(c) for c in concepts))
                dose: tuple[str, str] | None = None
            else:
                if keti is None:  # a Medication in one of the files read
                    target = str(res["medicationReference"]["reference"])
                    keti = self.medications.get(target, False) or self.medications.get(
                        "Medication/" + target.rsplit("/", 1)[-1], False
                    )
                when = res.get("effectiveDateTime")
                if when is None and isinstance(res.get("effectivePeriod"), dict):
                    when = res["effectivePeriod"].get("start")
                dosage: dict[str, Any] = res["dosage"] if isinstance(res.get("dosage"), dict) else {}
                route = _route(dosage.get("route")) if dosage.get("route") else None
                dose = _dose(dosage.get("dose"))
                if dose is None and isinstance(dosage.get("dose"), dict):
                    self.units_unknown += 1
            if not keti:
                self.skip(f"{rtype} (not ketamine)")
                continue
            if not self._status_ok(r, f"{rtype} (ketamine)"):
                continue
            if route == "":
                self.routes_unknown += 1
                route = None
            pid, problem = self.patient_id(res.get("subject"))
            day = local_datetime(when)[:10] if isinstance(when, str) else ""
            key = (pid or f"?{r.place}", day)
            row = groups.get(key)
            if row is None:
                row = _Row(r, {"patient_id": pid, "session_date": day})
                groups[key] = row
                order.append(row)
            row.members.append(r.pos)
            if problem:
                row.errors.append(problem)
            invalid = _validate(r)
            if invalid:
                row.errors.append(invalid)
            found = {"route": route} | ({dose[0]: dose[1]} if dose else {})
            for column, value in found.items():
                if value is None:
                    continue
                old = row.values.get(column)
                if old is not None and old != value:
                    row.errors.append(f"two ketamine administrations on one day with different {column}")
                row.values[column] = value
        return order


def _is_ketamine(concept: object) -> bool:
    for c in _codings(concept):
        system, code = str(c.get("system", "")).rstrip("/"), str(c.get("code", ""))
        if (system, code) in KETAMINE_CODES or ("atc" in system.lower() and code in KETAMINE_ATC):
            return True
    return "ketamine" in _texts(concept)


def _direct_ketamine(res: dict[str, Any]) -> bool | None:
    """Whether a Procedure or MedicationAdministration is of ketamine by what it holds itself (its codes,
    a contained Medication); None when it names a Medication resource that only the other files can tell."""
    if res.get("resourceType") == "Procedure":
        return any(_is_ketamine(c) for c in [res.get("code"), *(res.get("usedCode") or [])])
    if _is_ketamine(res.get("medicationCodeableConcept")):
        return True
    ref = res.get("medicationReference")
    if not isinstance(ref, dict) or not isinstance(ref.get("reference"), str):
        return False
    target = ref["reference"]
    if target.startswith("#"):
        return any(
            _is_ketamine(c.get("code"))
            for c in res.get("contained") or []
            if isinstance(c, dict) and c.get("id") == target[1:]
        )
    return None


def _leaf_code(leaf: dict[str, Any]) -> str | None:
    """The LOINC code a QuestionnaireResponse item carries in ``definition`` or ``linkId`` (the last
    LOINC-shaped code in it: ``/44249-1/44250-9`` → ``44250-9``)."""
    for key in ("definition", "linkId"):
        text = leaf.get(key)
        if isinstance(text, str):
            found = _CODE_IN_TEXT_RE.findall(text)
            if found:
                return str(found[-1])
    return None


def _leaf_words(leaf: dict[str, Any]) -> str:
    return f"{leaf.get('linkId') or ''} {leaf.get('text') or ''}".lower()


def _is_difficulty(leaf: dict[str, Any], inst: reg.Instrument) -> bool:
    """The PHQ-9 / GAD-7 difficulty question (LOINC 69722-7): answered from its own answer list, or, for
    those two scales, "difficult" in its linkId or text (no item of theirs says so)."""
    for a in leaf.get("answer") or []:
        if not isinstance(a, dict):
            continue
        coded = [a["valueCoding"]] if isinstance(a.get("valueCoding"), dict) else []
        coded += _codings(a.get("valueCodeableConcept"))
        if any(c.get("code") in LA_DIFFICULTY for c in coded):
            return True
    return inst.code in LA_INSTRUMENTS and bool(_DIFFICULT_RE.search(_leaf_words(leaf)))


def _names_total(leaf: dict[str, Any]) -> bool:
    return bool(_TOTAL_WORDS_RE.search(_leaf_words(leaf)))


def _numeric_answer(leaf: dict[str, Any]) -> bool:
    for a in leaf.get("answer") or []:
        if isinstance(a, dict) and any(k in a for k in ("valueInteger", "valueDecimal", "valueQuantity")):
            return True
        if isinstance(a, dict) and _number_text(a.get("valueString")) is not None:
            return True
    return False


def _trailing_key(leaf: dict[str, Any]) -> int | None:
    """The number a linkId ends in, or its final single letter as a number (a = 1): ``q01`` → 1,
    ``phq-phq2c`` → 3."""
    m = _TRAILING_RE.search(str(leaf.get("linkId") or "").lower())
    if not m:
        return None
    return int(m[1]) if m[1] else ord(m[2]) - ord("a") + 1


def _in_order(leaves: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items by the number or letter their linkIds end in when those count 1 … n (or 0 … n-1), else in
    document order."""
    keys = [k for k in (_trailing_key(leaf) for leaf in leaves) if k is not None]
    if len(keys) == len(leaves) and sorted(keys) in (
        list(range(1, len(leaves) + 1)),
        list(range(len(leaves))),
    ):
        by_key = dict(zip(keys, leaves, strict=True))
        return [by_key[k] for k in sorted(by_key)]
    return leaves


def _leaves(items: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """Answered items in document order, groups flattened (also items nested under answers)."""
    for item in items:
        if not isinstance(item, dict):
            continue
        answers = [a for a in item.get("answer") or [] if isinstance(a, dict)]
        if any(k.startswith("value") for a in answers for k in a):
            yield item
        yield from _leaves(item.get("item") or [])
        for a in answers:
            yield from _leaves(a.get("item") or [])


def _route_from_text(text: str) -> str | None:
    for word, route in ROUTE_WORDS:
        if word in text:
            return route
    return None


def _route(concept: object) -> str:
    """The contract's route for a route CodeableConcept; "" when it names a route this reader does not
    know."""
    for c in _codings(concept):
        hit = ROUTE_CODES.get((str(c.get("system", "")).rstrip("/"), str(c.get("code", ""))))
        if hit:
            return hit
    return _route_from_text(_texts(concept)) or ""


def _dose(q: object) -> tuple[str, str] | None:
    """(column, value) of a dose Quantity in mg or mg/kg, else None."""
    if not isinstance(q, dict):
        return None
    value = _number_text(q.get("value"))
    unit = str(q.get("code") or q.get("unit") or "").strip().lower()
    if value is None:
        return None
    if unit == "mg":
        return "dose_mg", value
    if unit in ("mg/kg", "mg/kg{body weight}"):
        return "dose_mg_per_kg", value
    return None


# --------------------------------------------------------------------------------------------- tables

_BASE_COLUMNS: dict[str, tuple[str, ...]] = {
    "patients": ("patient_id",),
    "sessions": ("patient_id", "session_date", "route", "dose_mg", "dose_mg_per_kg"),
    "scores": ("patient_id", "instrument", "assessed_on", "total"),
}


def _table(kind: str, rows: list[_Row]) -> pa.Table:
    columns = list(_BASE_COLUMNS[kind])
    if kind == "scores":
        # item_1 … item_N up to the largest scale that has items in these rows (none when only totals)
        n_items = max(
            (
                max(int(c[5:]) for c in row.values if c.startswith("item_"))
                if row.values.get("instrument") not in reg.BY_CODE
                else reg.BY_CODE[row.values["instrument"]].n_items
                for row in rows
                if any(c.startswith("item_") for c in row.values)
            ),
            default=0,
        )
        columns += [f"item_{i}" for i in range(1, n_items + 1)]
    data: dict[str, pa.Array] = {
        c: pa.array([row.values.get(c) for row in rows], pa.string()) for c in columns
    }
    data["_kap_row"] = pa.array([min(row.members or [row.place.pos]) for row in rows], pa.int64())
    data["_kap_source"] = pa.array([row.place.source for row in rows], pa.string())
    data["_kap_error"] = pa.array(["; ".join(dict.fromkeys(row.errors)) for row in rows], pa.string())
    return pa.table(data)


def read_fhir(
    path: Path,
    *,
    key: bytes | None,
    ids_are_pseudonymous: bool = False,
    link_ids: Mapping[str, Mapping[str, str]] | None = None,
) -> FhirResult:
    """Read a Bundle ``.json``, an NDJSON file or a folder of them (read together, so Patient resources in
    one file resolve references in another). ``key``: the secret of the keyed hash that replaces FHIR
    patient ids (required unless ``ids_are_pseudonymous``). ``link_ids``: per scale, contract column →
    QuestionnaireResponse linkId (``{"PHQ-9": {"item_1": "q1", …, "total": "score"}}``). Raises
    :class:`FhirError` when the whole source is refused."""
    path = Path(path)
    if key is None and not ids_are_pseudonymous:
        raise FhirError("a key is needed to pseudonymise FHIR patient ids (or say the ids are pseudonymous)")
    for name in link_ids or {}:
        if reg.lookup(name) is None:
            raise FhirError(
                f"unknown instrument {name!r} in the linkId mapping; known: {', '.join(reg.BY_CODE)}"
            )
    reader = _Reader(key, ids_are_pseudonymous, link_ids)
    if path.is_dir():
        files = [(p, f"{path.name}/{p.relative_to(path).as_posix()}") for p in _folder_files(path)]
        fhir_files = [(p, n) for p, n in files if _is_fhir_file(p)]
        if not fhir_files:
            raise FhirError(f"the folder {path.name} holds no FHIR .json or .ndjson file")
        for p, n in files:
            if (p, n) not in fhir_files:
                reader.notes.append(f"{n} skipped: not a FHIR file")
        source_name = path.name
    elif path.is_file():
        fhir_files = [(path, path.name)]
        source_name = path.name
    else:
        raise FhirError(f"{path.name} is not a file or folder")
    n_resources = 0
    for p, n in fhir_files:
        for r in _iter_file(p, n):
            n_resources += 1
            reader.take(r)
    converted: list[Converted] = []
    kinds: tuple[tuple[Kind, list[_Row]], ...] = (
        ("patients", reader.patient_rows()),
        ("sessions", reader.session_rows()),
        ("scores", reader.score_rows()),
    )
    for kind, rows in kinds:
        if rows:
            converted.append(Converted(kind, _table(kind, rows), source_name))
    n_files = f"{len(fhir_files)} file{'s' if len(fhir_files) != 1 else ''}"
    found = ", ".join(f"{c.table.num_rows:,} {c.kind}" for c in converted) or "nothing to load"
    reader.notes.insert(0, f"{n_files}, {n_resources:,} FHIR R4 resources read: {found}")
    if reader.patients or any(c.kind != "patients" for c in converted):
        reader.notes.append(
            "patient ids used as given (said to be pseudonymous already)"
            if ids_are_pseudonymous
            else "FHIR patient ids replaced by keyed pseudonyms (HMAC-SHA256, F + 10 characters); no "
            "name, birth date, address, contact or other Patient detail was read"
        )
    counted = (
        (
            reader.by_position,
            "questionnaire response(s) without item codes: items taken in order (the number or letter their "
            "linkIds end in, else the order in the file)",
        ),
        (
            reader.difficulty_dropped,
            'answer(s) to the difficulty question ("how difficult have these problems made it…", not part of '
            "the score) left out",
        ),
        (
            reader.items_unread,
            "questionnaire response(s) whose items could not be identified (no LOINC code or mapped linkId, "
            "and not exactly one answer per item to take in order): items left empty",
        ),
        (
            reader.merged_with_observation,
            "questionnaire response(s) joined with the Observation of the same score (same patient, scale "
            "and local date-time): one row each",
        ),
        (
            reader.merged_responses,
            "questionnaire response(s) joined with another response of the same score (same patient, scale "
            "and local date-time): one row each",
        ),
        (
            reader.merged_unread,
            "of the joined questionnaire response(s) gave neither items nor a total: the Observation's "
            "values kept",
        ),
        (reader.routes_unknown, "ketamine administration(s) with an unknown route: left empty"),
        (reader.units_unknown, "ketamine dose(s) not in mg or mg/kg: left empty"),
    )
    reader.notes += [f"{n:,} {text}" for n, text in counted if n]
    return FhirResult(converted, dict(sorted(reader.skipped.items())), reader.notes)


# ------------------------------------------------------------------------------------------- writing


def observation(
    n: int,
    patient_key: str,
    instrument: str,
    date: str,
    total: int | None,
    items: Mapping[int, int | None],
    *,
    prorated: bool = False,
) -> dict[str, Any]:
    """One score as an R4 Observation: the LOINC total code, the items as components (LOINC-coded where
    the registry has the item codes), the subject a pseudonymous ``Patient/<key>`` reference."""
    inst = reg.get(instrument)
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"kap-{n}",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "survey",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": LOINC, "code": inst.loinc_total, "display": f"{inst.code} total score"}],
            "text": f"{inst.code} total",
        },
        "subject": {"reference": f"Patient/{patient_key}"},
        "effectiveDateTime": date,
    }
    if total is not None:
        obs["valueQuantity"] = {"value": total, "unit": "{score}", "system": UCUM, "code": "{score}"}
    components = []
    for i in range(1, inst.n_items + 1):
        value = items.get(i)
        if value is None:
            continue
        code: dict[str, Any] = {"text": f"{inst.code} item {i}"}
        if i in inst.loinc_items:
            code["coding"] = [{"system": LOINC, "code": inst.loinc_items[i]}]
        components.append({"code": code, "valueInteger": int(value)})
    if components:
        obs["component"] = components
    if prorated:
        obs["note"] = [{"text": "total prorated from the answered items (mean × number of items, rounded)"}]
    return obs


def bundle(observations: list[dict[str, Any]]) -> dict[str, Any]:
    """An R4 Bundle (type collection) of the given resources, checked with ``fhir.resources``."""
    doc = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'urn:kap:' + o['id'])}", "resource": o}
            for o in observations
        ],
    }
    _model("R4", "Bundle").model_validate(doc)
    return doc
