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
from typing import Any

import orjson
from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from credit_hub.access.models import Scope
from credit_hub.access.service import Principal
from credit_hub.audit import service as audit
from credit_hub.errors import Forbidden, RequestInvalid, invalid_parameter
from credit_hub.keyring import Keyring
from credit_hub.profiles import queries
from credit_hub.profiles.schemas import (
    Department,
    FormerName,
    Profile,
    ProfileRecord,
    Region,
    ScreenReport,
    ScreenResult,
    SubjectIdentity,
    Summary,
)
from credit_hub.records.models import RecordStatus
from credit_hub.standards.registry import Standards
from credit_hub.subjects import identifiers as ids
from credit_hub.subjects import service as subjects
from credit_hub.subjects.models import Subject, SubjectKind, SubjectName

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


def _person_id(subject: Subject, client: Principal, keyring: Keyring) -> str | None:
    if subject.kind != SubjectKind.NATURAL_PERSON:
        return None
    if client.has_scope(Scope.PERSONAL_DATA) and subject.person_id_enc is not None:
        clear = keyring.decrypt(subject.person_id_enc)
        if clear is not None:
            return clear.decode().split("\x1f", 1)[-1]
    return subject.person_id_masked


def identity(
    session: Session, subject: Subject, client: Principal, keyring: Keyring
) -> SubjectIdentity:
    names = session.scalars(
        select(SubjectName)
        .where(SubjectName.subject_id == subject.id, SubjectName.name != subject.name)
        .order_by(SubjectName.last_seen_on.desc())
    ).all()
    region = None
    if subject.division:
        region = Region(division=subject.division, province=ids.division_province(subject.division))
    return SubjectIdentity(
        id=subject.id,
        kind=subject.kind,
        name=subject.name,
        uscc=subject.uscc,
        org_code=subject.org_code,
        reg_no=subject.reg_no,
        person_id=_person_id(subject, client, keyring),
        former_names=[
            FormerName(name=n.name, first_seen_on=n.first_seen_on, last_seen_on=n.last_seen_on)
            for n in names
        ],
        region=region,
        registration_category=ids.uscc_registration_category(subject.uscc)
        if subject.uscc
        else None,
    )


def _record(row: Row[Any], client: Principal, keyring: Keyring) -> ProfileRecord:
    data: dict[str, Any] = row.data
    if row.personal_enc is not None and client.has_scope(Scope.PERSONAL_DATA):
        clear = keyring.decrypt(row.personal_enc)
        if clear is not None:
            data = data | orjson.loads(clear)
    return ProfileRecord(
        id=row.id,
        standard=row.standard,
        source_id=row.source_id,
        version=row.version,
        status=row.status,
        severity=row.severity,
        decision_date=row.decision_date,
        publish_from=row.publish_from,
        publish_until=row.publish_until,
        under_objection=row.under_objection,
        department=Department(id=row.department_id, name=row.department_name),
        data=data,
    )


def summarize(records: Sequence[ProfileRecord], penalty_standards: frozenset[str]) -> Summary:
    counts: dict[str, int] = defaultdict(int)
    largest: Decimal | None = None
    for record in records:
        counts[record.standard] += 1
        raw = record.data.get("fine_amount_wan")
        if raw is not None:
            try:
                amount = Decimal(str(raw))
            except InvalidOperation:
                continue
            largest = amount if largest is None or amount > largest else largest
    objections = sum(1 for r in records if r.under_objection)
    return Summary(
        counts=dict(sorted(counts.items())),
        active_penalties=sum(
            1
            for r in records
            if r.standard in penalty_standards and r.status == RecordStatus.ACTIVE
        ),
        largest_fine_wan=format(largest, "f") if largest is not None else None,
        under_objection=objections > 0,
        objections_open=objections,
        latest_decision_date=max((r.decision_date for r in records), default=None),
    )


def penalty_standards(standards: Standards) -> frozenset[str]:
    """Standards whose records are sanctions: those with severity tiers."""
    return frozenset(s.id for s in standards if "periods" in s.current.engine.publication)


def profile(
    session: Session,
    subject: Subject,
    request: ReadRequest,
    *,
    client: Principal,
    keyring: Keyring,
    standards: Standards,
) -> Profile:
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
    records = [_record(row, client, keyring) for row in rows]
    grouped: dict[str, list[ProfileRecord]] = defaultdict(list)
    for record in records:
        grouped[record.standard].append(record)
    return Profile(
        subject=identity(session, subject, client, keyring),
        as_of=request.on,
        records=dict(sorted(grouped.items())),
        summary=summarize(records, penalty_standards(standards)),
    )


def audit_read(
    session: Session,
    client: Principal,
    subject_id: uuid.UUID,
    request: ReadRequest,
    *,
    action: str = "profile.read",
    result: str = "ok",
    records: int | None = None,
) -> None:
    audit.record(
        session,
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
    client: Principal,
    keyring: Keyring,
    standards: Standards,
) -> ScreenReport:
    """Many subjects in a fixed number of queries: keys by kind, then records, then audit."""
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
    rows = queries.visible_records(
        session,
        subject_ids,
        standards=request.standards,
        on=request.on,
        include_unpublished=request.include_unpublished,
        include_withdrawn=request.include_withdrawn,
    )
    by_subject: dict[uuid.UUID, list[ProfileRecord]] = defaultdict(list)
    for row in rows:
        by_subject[row.subject_id].append(_record(row, client, keyring))
    penalties = penalty_standards(standards)
    results = []
    for identifier, key in zip(identifiers, parsed, strict=True):
        subject = found.get(key)
        if subject is None:
            results.append(ScreenResult(identifier=identifier, found=False))
            continue
        results.append(
            ScreenResult(
                identifier=identifier,
                found=True,
                subject_id=subject.id,
                kind=subject.kind,
                name=subject.name,
                summary=summarize(by_subject.get(subject.id, []), penalties),
            )
        )
    audit.record_many(
        session,
        [
            {
                "actor": client,
                "action": "profile.screened",
                "subject_id": subject_id,
                "purpose": request.purpose,
                "case_ref": request.case_ref,
                "result": "ok",
                "payload": {"as_of": request.on.isoformat(), "screened": len(identifiers)},
            }
            for subject_id in subject_ids
        ],
    )
    return ScreenReport(
        purpose=request.purpose,
        case_ref=request.case_ref,
        as_of=request.on,
        checked=len(identifiers),
        found=sum(1 for r in results if r.found),
        results=results,
    )
