"""The profile read in one statement (on a Session or a plain Connection) answers exactly what
the read statement by statement answers: subject, merged subjects followed, former names,
records, summary."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from itertools import product

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from credit_hub.access.models import Scope
from credit_hub.access.service import Principal
from credit_hub.errors import NotFound
from credit_hub.profiles import service
from credit_hub.subjects import service as subjects
from credit_hub.subjects.models import Subject, SubjectKind
from tests import factories
from tests.conftest import Caller, pushed


def _day(days_ago: int) -> str:
    return (datetime.now(UTC).date() - timedelta(days=days_ago)).isoformat()


def _request(reader: Principal, *, include: list[str] | None = None) -> service.ReadRequest:
    return service.read_request(
        reader,
        ["procurement"],
        purpose="procurement",
        case_ref="ONE-1",
        as_of=None,
        standards=None,
        include=include,
        today=datetime.now(UTC).date(),
    )


def _unpublished_too(agency: Caller) -> Principal:
    return replace(Principal.of(agency.client), scopes=frozenset({Scope.UNPUBLISHED}))


def test_one_statement_and_statement_by_statement_answer_the_same(
    app_client: TestClient, department: Caller, agency: Caller, session: Session
) -> None:
    uscc = factories.make_uscc(610)
    pushed(
        app_client,
        department,
        [
            factories.penalty(1, counterpart_uscc=uscc, decision_date=_day(5), fine_amount_wan="3"),
            factories.penalty(
                2,
                counterpart_uscc=uscc,
                decision_date=_day(40),
                counterpart_name="旧名商贸公司",
            ),
        ],
    )
    pushed(
        app_client,
        department,
        [factories.licence(1, counterpart_uscc=uscc, decision_date=_day(3), valid_from=_day(3))],
        standard="administrative_licensing",
    )
    target = subjects.find(session, uscc)
    bare = factories.make_uscc(611)  # a subject without records
    session.add(Subject(kind=SubjectKind.ORGANIZATION, uscc=bare, org_code=bare[8:17], name="空"))
    merged = factories.make_uscc(612)[8:17]  # a legacy code merged into the subject above
    session.add(
        Subject(kind=SubjectKind.ORGANIZATION, org_code=merged, name="旧", merged_into_id=target.id)
    )
    session.flush()
    state = app_client.app.state  # type: ignore[attr-defined]
    keys = [uscc, uscc[8:17], str(target.id), merged, bare]
    reader, privileged = Principal.of(agency.client), _unpublished_too(agency)
    reads = [
        (reader, _request(reader)),
        (privileged, _request(privileged, include=["unpublished", "withdrawn"])),
    ]
    for (principal, request), key, on in product(reads, keys, (session, session.connection())):
        parsed = subjects.parse_key(key)
        subject, built = service.profile_of_key(
            on,
            parsed,
            request,
            client=principal,
            keyring=state.keyring,
            standards=state.standards,
        )
        expected = subjects.find_parsed(session, parsed)
        by_statements = service.profile(
            session,
            expected,
            request,
            client=principal,
            keyring=state.keyring,
            standards=state.standards,
        )
        assert tuple(subject) == tuple(expected)
        assert service.render(built) == service.render(by_statements)
    one = service.profile_of_key(
        session,
        subjects.parse_key(uscc),
        _request(reader),
        client=reader,
        keyring=state.keyring,
        standards=state.standards,
    )[1]
    names = {one["subject"]["name"], *(n["name"] for n in one["subject"]["former_names"])}
    assert "旧名商贸公司" in names
    assert len(names) == 3  # the penalties' two names and the licence's
    assert sum(map(len, one["records"].values())) == 3
    with pytest.raises(NotFound):
        service.profile_of_key(
            session,
            subjects.parse_key(factories.make_uscc(613)),
            _request(reader),
            client=Principal.of(agency.client),
            keyring=state.keyring,
            standards=state.standards,
        )
    assert isinstance(one["as_of"], date)
