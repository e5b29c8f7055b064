"""Rules of the read side: what an agency may see of a subject, summaries, purpose binding,
and the audit event every read leaves behind."""

from __future__ import annotations

import hashlib
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from credit_hub.access.models import Scope
from credit_hub.access.service import Principal
from credit_hub.audit import service as audit
from credit_hub.errors import Forbidden, RequestInvalid, invalid_parameter
from credit_hub.fastsql import Prepared
from credit_hub.keyring import Keyring
from credit_hub.profiles import queries
from credit_hub.records.models import RecordStatus
from credit_hub.standards.registry import Standards
from credit_hub.subjects import identifiers as ids
from credit_hub.subjects import service as subjects
from credit_hub.subjects.models import SubjectKind
from credit_hub.subjects.service import SubjectRow

Json = dict[str, Any]

INCLUDE_OPTIONS = ("unpublished", "withdrawn")
MAX_SCREEN = 1000


@dataclass(frozen=True)
class ReadRequest:
    """What a reader asked for, checked: purpose, case, date, standards, inclusions."""

    purpose: str
    case_ref: str
    on: date
    as_of_end: datetime | None
    standards: frozenset[str]
    include_unpublished: bool
    include_withdrawn: bool


def read_request(
    client: Principal,
    purposes: Sequence[str],
    *,
    purpose: str | None,
    case_ref: str | None,
    as_of: date | None,
    standards: Iterable[str] | None,
    include: Iterable[str] | None,
    today: date,
) -> ReadRequest:
    if not purpose:
        raise invalid_parameter("purpose", "purpose.missing", "State the purpose of this read.")
    if purpose not in purposes:
        raise invalid_parameter(
            "purpose", "purpose.unknown", f"Purpose must be one of: {', '.join(purposes)}."
        )
    if not case_ref or not case_ref.strip():
        raise invalid_parameter("case_ref", "case_ref.missing", "Give the case or file reference.")
    if len(case_ref) > 200:
        raise invalid_parameter(
            "case_ref", "case_ref.too_long", "case_ref has at most 200 characters."
        )
    if as_of is not None and as_of > today:
        raise invalid_parameter("as_of", "as_of.future", "as_of cannot be in the future.")
    requested = {s for item in (standards or ()) for s in item.split(",") if s}
    allowed = client.standards
    unknown = requested - allowed
    if unknown:
        raise invalid_parameter(
            "standards",
            "standards.not_allowed",
            f"Not registered to read: {', '.join(sorted(unknown))}.",
        )
    wanted = frozenset(requested or allowed)
    options = {o for item in (include or ()) for o in item.split(",") if o}
    if options - set(INCLUDE_OPTIONS):
        raise invalid_parameter(
            "include", "include.unknown", f"include takes {', '.join(INCLUDE_OPTIONS)}."
        )
    if options and not client.has_scope(Scope.UNPUBLISHED):
        raise Forbidden("Seeing unpublished or withdrawn records needs the 'unpublished' scope.")
    as_of_end = (
        datetime.combine(as_of, time.max, tzinfo=UTC)
        if as_of is not None and as_of < today
        else None
    )
    return ReadRequest(
        purpose=purpose,
        case_ref=case_ref.strip(),
        on=as_of or today,
        as_of_end=as_of_end,
        standards=wanted,
        include_unpublished="unpublished" in options,
        include_withdrawn="withdrawn" in options,
    )


def _person_id(subject: SubjectRow, client: Principal, keyring: Keyring) -> str | None:
    if subject.kind != SubjectKind.NATURAL_PERSON:
        return None
    if client.has_scope(Scope.PERSONAL_DATA) and subject.person_id_enc is not None:
        clear = keyring.decrypt(subject.person_id_enc)
        if clear is not None:
            return clear.decode().split("\x1f", 1)[-1]
    masked: str | None = subject.person_id_masked
    return masked


def identity(
    subject: SubjectRow, former_names: list[Json], client: Principal, keyring: Keyring
) -> Json:
    """The subject part of a profile (the shape of `SubjectIdentity`)."""
    region = None
    if subject.division:
        region = {
            "division": subject.division,
            "province": ids.division_province(subject.division),
        }
    return {
        "id": subject.id,
        "kind": subject.kind,
        "name": subject.name,
        "uscc": subject.uscc,
        "org_code": subject.org_code,
        "reg_no": subject.reg_no,
        "person_id": _person_id(subject, client, keyring),
        "former_names": former_names,
        "region": region,
        "registration_category": ids.uscc_registration_category(subject.uscc)
        if subject.uscc
        else None,
    }


def _record(row: Any, personal_data: bool, keyring: Keyring) -> Json:
    """One record of a profile (the shape of `ProfileRecord`)."""
    data: Any = orjson.Fragment(row.data)  # the stored JSON, written out as it is
    if personal_data and row.personal_enc is not None:
        clear = keyring.decrypt(row.personal_enc)
        if clear is not None:
            data = orjson.loads(row.data) | orjson.loads(clear)
    return {
        "id": row.id,
        "standard": row.standard,
        "source_id": row.source_id,
        "version": row.version,
        "status": row.status,
        "severity": row.severity,
        "decision_date": row.decision_date,
        "publish_from": row.publish_from,
        "publish_until": row.publish_until,
        "under_objection": bool(row.under_objection),
        "department": {"id": row.department_id, "name": row.department_name},
        "data": data,
    }


class Fact(NamedTuple):
    """What a summary needs of a record."""

    standard: str
    status: str
    under_objection: bool
    decision_date: date
    fine_amount_wan: Any


def summarize(facts: Iterable[Fact], penalty_standards: frozenset[str]) -> Json:
    """Counts per standard, active penalties, largest fine, objections, latest decision (the
    shape of `Summary`)."""
    counts: dict[str, int] = defaultdict(int)
    largest: Decimal | None = None
    active = objections = 0
    latest: date | None = None
    for standard, status, under_objection, decided, fine in facts:
        counts[standard] += 1
        if fine is not None:
            try:
                amount = Decimal(str(fine))
            except InvalidOperation:
                amount = None
            if amount is not None and (largest is None or amount > largest):
                largest = amount
        if status == RecordStatus.ACTIVE and standard in penalty_standards:
            active += 1
        if under_objection:
            objections += 1
        if latest is None or decided > latest:
            latest = decided
    return {
        "counts": dict(sorted(counts.items())),
        "active_penalties": active,
        "largest_fine_wan": format(largest, "f") if largest is not None else None,
        "under_objection": objections > 0,
        "objections_open": objections,
        "latest_decision_date": latest,
    }


def _fact(row: Any, past: bool) -> Fact:
    """What a summary needs of a record row of `queries.visible_records`: the fine of a
    `past` version is read from its document, today's from the record."""
    fine = orjson.loads(row.data).get("fine_amount_wan") if past else row.fine
    return Fact(row.standard, row.status, bool(row.under_objection), row.decision_date, fine)


def penalty_standards(standards: Standards) -> frozenset[str]:
    """Standards whose records are sanctions: those with severity tiers."""
    return frozenset(s.id for s in standards if "periods" in s.current.engine.publication)


def profile(
    session: Session,
    subject: SubjectRow,
    request: ReadRequest,
    *,
    client: Principal,
    keyring: Keyring,
    standards: Standards,
) -> Json:
    """The profile (the shape of `Profile`, built as plain data: it is serialized at once)."""
    if request.as_of_end is not None:
        first = queries.first_record_at(session, subject.id)
        if first is None or first > request.as_of_end:
            raise invalid_parameter(
                "as_of",
                "as_of.before_records",
                "as_of is before the first record the hub holds about this subject.",
            )
    rows = queries.visible_records(
        session,
        [subject.id],
        standards=request.standards,
        on=request.on,
        as_of_end=request.as_of_end,
        include_unpublished=request.include_unpublished,
        include_withdrawn=request.include_withdrawn,
    )
    former_names = [
        {"name": row.name, "first_seen_on": row.first_seen_on, "last_seen_on": row.last_seen_on}
        for row in queries.former_names(session, subject.id, subject.name)
    ]
    return _assemble(subject, former_names, rows, request, client, keyring, standards)


def one_statement(request: ReadRequest) -> bool:
    """Whether `profile_of_key` reads in one statement: without `as_of` (which first checks
    the date against the subject's first record)."""
    return request.as_of_end is None


def profile_of_key(
    on: Session | Connection,
    parsed: tuple[str, str | uuid.UUID],
    request: ReadRequest,
    *,
    client: Principal,
    keyring: Keyring,
    standards: Standards,
) -> tuple[SubjectRow, Json]:
    """The subject with this parsed key (404 if none) and its profile. Where `one_statement`
    holds, one statement reads the subject, its former names and its records, on a Session
    or a plain Connection; otherwise statement by statement, on a Session."""
    if not one_statement(request):
        if not isinstance(on, Session):
            raise TypeError("a profile as_of a past day is read statement by statement")
        subject = subjects.find_parsed(on, parsed)
        found = profile(on, subject, request, client=client, keyring=keyring, standards=standards)
        return subject, found
    dialect = (on.get_bind() if isinstance(on, Session) else on).dialect.name
    statement, params = profile_statement(dialect, parsed, request)
    read = queries.one_read(statement.rows(on, **params), dialect)
    return profile_of_read(read, request, client=client, keyring=keyring, standards=standards)


def profile_statement(
    dialect: str, parsed: tuple[str, str | uuid.UUID], request: ReadRequest
) -> tuple[Prepared, dict[str, Any]]:
    """The one statement of `profile_of_key` (where `one_statement` holds) and its
    parameters; `queries.one_read` of its rows goes to `profile_of_read`."""
    return queries.profile_statement(
        dialect,
        parsed,
        on=request.on,
        include_unpublished=request.include_unpublished,
        include_withdrawn=request.include_withdrawn,
    )


def profile_of_read(
    read: queries.OneRead | None,
    request: ReadRequest,
    *,
    client: Principal,
    keyring: Keyring,
    standards: Standards,
) -> tuple[SubjectRow, Json]:
    """The subject and profile of a one-statement read (404 if no subject had the key)."""
    if read is None:
        raise subjects.no_subject()
    wanted = request.standards
    rows = [row for row in read.records if row.standard in wanted]
    built = _assemble(read.subject, read.former_names, rows, request, client, keyring, standards)
    return read.subject, built


def _assemble(
    subject: SubjectRow,
    former_names: list[Json],
    rows: Sequence[Any],
    request: ReadRequest,
    client: Principal,
    keyring: Keyring,
    standards: Standards,
) -> Json:
    personal_data = client.has_scope(Scope.PERSONAL_DATA)
    records = [_record(row, personal_data, keyring) for row in rows]
    grouped: dict[str, list[Json]] = defaultdict(list)
    for record in records:
        grouped[record["standard"]].append(record)
    return {
        "subject": identity(subject, former_names, client, keyring),
        "as_of": request.on,
        "records": dict(sorted(grouped.items())),
        "summary": summarize(
            (_fact(row, request.as_of_end is not None) for row in rows),
            penalty_standards(standards),
        ),
    }


def render(document: Json) -> bytes:
    """JSON bytes of a profile or screening built by this module (UTC times end in Z, as
    pydantic writes them)."""
    return orjson.dumps(document, option=orjson.OPT_UTC_Z, default=_encode)


def _encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


def read_event(
    client: Principal,
    subject_id: uuid.UUID,
    request: ReadRequest,
    *,
    action: str = "profile.read",
    result: str = "ok",
    records: int | None = None,
) -> dict[str, Any]:
    """The audit event of one profile read or lookup."""
    return audit.read_event(
        actor=client,
        action=action,
        subject_id=subject_id,
        purpose=request.purpose,
        case_ref=request.case_ref,
        result=result,
        payload={
            "as_of": request.on.isoformat(),
            "standards": sorted(request.standards),
            **({"records": records} if records is not None else {}),
        },
    )


def etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def matches(if_none_match: str | None, tag: str) -> bool:
    if not if_none_match:
        return False
    candidates = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in candidates or tag in candidates


def screen(
    session: Session,
    identifiers: Sequence[str],
    request: ReadRequest,
    *,
    standards: Standards,
) -> Json:
    """Many subjects in a fixed number of queries: keys by kind, then the facts of their
    records (the caller appends the audit events: `screening_events`)."""
    if not identifiers:
        raise RequestInvalid(
            "Give at least one identifier.",
            errors=[{"pointer": "/identifiers", "code": "min_items", "message": "empty list"}],
        )
    if len(identifiers) > MAX_SCREEN:
        raise RequestInvalid(
            f"At most {MAX_SCREEN} identifiers per screening; {len(identifiers)} given.",
            errors=[
                {"pointer": "/identifiers", "code": "max_items", "message": f"at most {MAX_SCREEN}"}
            ],
        )
    parsed: list[tuple[str, str | uuid.UUID]] = []
    errors: list[dict[str, Any]] = []
    seen: dict[tuple[str, str | uuid.UUID], int] = {}
    for index, identifier in enumerate(identifiers):
        try:
            key = subjects.parse_key(identifier)
        except RequestInvalid as exc:
            errors.extend(
                {**e, "pointer": f"/identifiers/{index}"} | {"parameter": None}
                for e in exc.extensions.get("errors", [])
            )
            continue
        if key in seen:
            errors.append(
                {
                    "pointer": f"/identifiers/{index}",
                    "code": "duplicate",
                    "message": f"Same subject key as /identifiers/{seen[key]}.",
                }
            )
            continue
        seen[key] = index
        parsed.append(key)
    if errors:
        for error in errors:
            error.pop("parameter", None)
        raise RequestInvalid(f"{len(errors)} problem(s) in the identifiers.", errors=errors)
    found = subjects.find_many(session, parsed)
    subject_ids = sorted({s.id for s in found.values()})
    facts: dict[uuid.UUID, list[Fact]] = defaultdict(list)
    for row in queries.visible_facts(
        session,
        subject_ids,
        standards=request.standards,
        on=request.on,
        include_unpublished=request.include_unpublished,
        include_withdrawn=request.include_withdrawn,
    ):
        facts[row.subject_id].append(
            Fact(row.standard, row.status, row.under_objection, row.decision_date, row.fine)
        )
    penalties = penalty_standards(standards)
    results: list[Json] = []
    for identifier, key in zip(identifiers, parsed, strict=True):
        subject = found.get(key)
        if subject is None:
            results.append(
                {
                    "identifier": identifier,
                    "found": False,
                    "subject_id": None,
                    "kind": None,
                    "name": None,
                    "summary": None,
                }
            )
            continue
        results.append(
            {
                "identifier": identifier,
                "found": True,
                "subject_id": subject.id,
                "kind": subject.kind,
                "name": subject.name,
                "summary": summarize(facts.get(subject.id, ()), penalties),
            }
        )
    return {
        "purpose": request.purpose,
        "case_ref": request.case_ref,
        "as_of": request.on,
        "checked": len(identifiers),
        "found": sum(1 for r in results if r["found"]),
        "results": results,
    }


def screening_events(client: Principal, request: ReadRequest, report: Json) -> list[Json]:
    """One audit event per subject found by a screening."""
    payload = {"as_of": request.on.isoformat(), "screened": report["checked"]}
    found = sorted({r["subject_id"] for r in report["results"] if r["found"]})
    return [
        audit.read_event(
            actor=client,
            action="profile.screened",
            subject_id=subject_id,
            purpose=request.purpose,
            case_ref=request.case_ref,
            result="ok",
            payload=payload,
        )
        for subject_id in found
    ]
