"""Nothing about minors is published: the rule applied to each record at ingest."""

from __future__ import annotations

from datetime import date

from credit_hub.standards.engine import RESIDENT_ID_TYPE, Derived
from credit_hub.subjects import identifiers as ids
from credit_hub.subjects.models import SubjectKind

MINOR = "minor"
AGE_OF_MAJORITY = 18


def was_minor(birth: date, on: date) -> bool:
    age = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    return age < AGE_OF_MAJORITY


def withheld_reason(derived: Derived) -> str | None:
    """`minor` when a natural person was under 18 at the decision date (birth date from the
    resident ID number, which is in memory only while the record is checked)."""
    subject = derived.subject
    if subject.kind != SubjectKind.NATURAL_PERSON or subject.person_id_type != RESIDENT_ID_TYPE:
        return None  # other documents carry no birth date we can read
    try:
        birth = ids.id_number_birth_date(subject.person_id_no or "")
    except ids.IdentifierError:
        return None
    return MINOR if was_minor(birth, derived.decision_date) else None
