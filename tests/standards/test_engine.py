"""The validation engine on the published standards: every rule, alias and normalization."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from credit_hub.standards.registry import Standards, StandardVersion
from tests import factories

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def standards() -> Standards:
    return Standards.load(Path(__file__).resolve().parents[2] / "schemas")


@pytest.fixture(scope="module")
def penalty_std(standards: Standards) -> StandardVersion:
    return standards.resolve("administrative_penalty")


@pytest.fixture(scope="module")
def licence_std(standards: Standards) -> StandardVersion:
    return standards.resolve("administrative_licensing")


def _load(name: str) -> list[Any]:
    data: list[Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize(
    ("standard", "fixture"),
    [
        ("administrative_penalty", "penalty_valid.json"),
        ("administrative_licensing", "licensing_valid.json"),
    ],
)
def test_valid_examples_pass(standards: Standards, standard: str, fixture: str) -> None:
    found = standards.resolve(standard)
    for record in _load(fixture):
        outcome = found.engine.check(record)
        assert outcome.violations == [], record.get("decision_doc_no")
        assert outcome.record is not None
        assert outcome.derived is not None


@pytest.mark.parametrize(
    ("standard", "fixture"),
    [
        ("administrative_penalty", "penalty_invalid_cases.json"),
        ("administrative_licensing", "licensing_invalid_cases.json"),
    ],
)
def test_invalid_cases_report_pointer_and_code(
    standards: Standards, standard: str, fixture: str
) -> None:
    found = standards.resolve(standard)
    for case in _load(fixture):
        outcome = found.engine.check(case["record"])
        got = {(v.pointer, v.code) for v in outcome.violations}
        expected = {(e["pointer"], e["code"]) for e in case["expect"]}
        assert expected <= got, case["name"]
        assert not outcome.ok


def test_chinese_names_and_national_codes_are_aliases(penalty_std: StandardVersion) -> None:
    record = factories.penalty(1)
    aliased = {
        (
            "行政相对人名称"
            if k == "counterpart_name"
            else "cf_xdr_shxym"
            if k == "counterpart_uscc"
            else k
        ): v
        for k, v in record.items()
    }
    outcome = penalty_std.engine.check(aliased)
    assert outcome.ok, outcome.violations
    assert outcome.record is not None
    assert outcome.record["counterpart_name"] == record["counterpart_name"]
    assert outcome.record["counterpart_uscc"] == record["counterpart_uscc"]


def test_a_field_given_twice_under_two_names_is_rejected(penalty_std: StandardVersion) -> None:
    record = factories.penalty(1) | {"行政相对人名称": "另一个名称"}
    outcome = penalty_std.engine.check(record)
    assert ("/counterpart_name", "duplicate_field") in {
        (v.pointer, v.code) for v in outcome.violations
    }


def test_csv_style_text_values_are_accepted(penalty_std: StandardVersion) -> None:
    record = factories.penalty(1, penalty_categories="警告；罚款", fine_amount_wan="1.25")
    outcome = penalty_std.engine.check(record)
    assert outcome.ok, outcome.violations
    assert outcome.record is not None
    assert outcome.record["penalty_categories"] == ["警告", "罚款"]
    assert outcome.record["fine_amount_wan"] == "1.25"


def test_normalization_canonical_forms(penalty_std: StandardVersion) -> None:
    uscc = factories.make_uscc(77)
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in uscc.lower())
    record = factories.penalty(
        1,
        counterpart_uscc=full_width,
        fine_amount_wan=12.50,
        penalty_valid_to="2099/12/31",
        counterpart_name="  示例公司  ",
    )
    outcome = penalty_std.engine.check(record)
    assert outcome.ok, outcome.violations
    assert outcome.record is not None
    assert outcome.record["counterpart_uscc"] == uscc
    assert outcome.record["fine_amount_wan"] == "12.5"
    assert outcome.record["decision_date"] == "2026-04-02"
    assert outcome.record["penalty_valid_to"] is None  # long-term: no end
    assert outcome.originals["penalty_valid_to"] == "2099/12/31"
    assert outcome.record["counterpart_name"] == "示例公司"


def test_money_is_exact_and_bounded(penalty_std: StandardVersion) -> None:
    ok = penalty_std.engine.check(factories.penalty(1, fine_amount_wan="0.000001"))
    assert ok.record is not None
    assert ok.record["fine_amount_wan"] == "0.000001"
    too_fine = penalty_std.engine.check(factories.penalty(1, fine_amount_wan=0.0000001))
    assert {v.code for v in too_fine.violations} == {"scale"}
    negative = penalty_std.engine.check(factories.penalty(1, fine_amount_wan=-1))
    assert ("/fine_amount_wan", "minimum") in {(v.pointer, v.code) for v in negative.violations}


def test_legacy_categories_map_to_current_and_keep_the_original(
    penalty_std: StandardVersion,
) -> None:
    record = factories.penalty(
        1, penalty_categories="警告、没收违法所得、没收非法财物", confiscation_amount_wan="0.2"
    )
    outcome = penalty_std.engine.check(record)
    assert outcome.ok, outcome.violations
    assert outcome.record is not None
    assert outcome.record["penalty_categories"] == ["警告", "没收违法所得", "没收非法财物"]
    legacy = factories.penalty(
        2,
        penalty_categories=["暂扣或者吊销许可证、暂扣或者吊销执照"],
        suspended_revoked_license="食品经营许可证JY1350100001",
    )
    outcome = penalty_std.engine.check(legacy)
    assert outcome.ok, outcome.violations
    assert outcome.record is not None
    assert outcome.record["penalty_categories"] == ["暂扣许可证件"]
    assert outcome.originals["penalty_categories"] == ["暂扣或者吊销许可证、暂扣或者吊销执照"]


@pytest.mark.parametrize(
    ("categories", "extra", "tier", "months"),
    [
        (["警告"], {}, "minor", 3),
        (["警告", "罚款"], {}, "general", 12),
        (["吊销许可证件"], {"suspended_revoked_license": "许可证"}, "serious", 36),
        (["行政拘留"], {}, "serious", 36),
    ],
)
def test_severity_is_derived_and_sets_the_window(
    penalty_std: StandardVersion,
    categories: list[str],
    extra: dict[str, str],
    tier: str,
    months: int,
) -> None:
    record = factories.penalty(
        1, penalty_categories=categories, decision_date="2026-01-31", **extra
    )
    outcome = penalty_std.engine.check(record)
    assert outcome.ok, outcome.violations
    derived = outcome.derived
    assert derived is not None
    assert (derived.severity, derived.severity_source) == (tier, "derived")
    assert derived.publish_from == date(2026, 1, 31)
    expected_until = {3: date(2026, 4, 30), 12: date(2027, 1, 31), 36: date(2029, 1, 31)}[months]
    assert derived.publish_until == expected_until


def test_given_severity_wins_and_publication_end_is_checked(penalty_std: StandardVersion) -> None:
    given = penalty_std.engine.check(factories.penalty(1, severity="serious"))
    assert given.derived is not None
    assert (given.derived.severity, given.derived.severity_source) == ("serious", "given")
    inside = penalty_std.engine.check(factories.penalty(1, publication_end="2026/10/02"))
    assert inside.derived is not None
    assert inside.derived.publish_until == date(2026, 10, 2)
    outside = penalty_std.engine.check(factories.penalty(1, publication_end="2026/05/01"))
    assert {v.code for v in outside.violations} == {"publication_period"}


def test_licence_window_runs_to_validity_end(licence_std: StandardVersion) -> None:
    outcome = licence_std.engine.check(factories.licence(1))
    assert outcome.derived is not None
    assert outcome.derived.publish_until == date(2031, 2, 28)
    long_term = licence_std.engine.check(factories.licence(1, valid_to="2099/12/31"))
    assert long_term.derived is not None
    assert long_term.derived.publish_until is None
    backwards = licence_std.engine.check(factories.licence(1, valid_to="2026/02/01"))
    assert {(v.pointer, v.code) for v in backwards.violations} == {("/valid_to", "not_before")}


def test_status_label_maps_to_code(licence_std: StandardVersion) -> None:
    outcome = licence_std.engine.check(factories.licence(1, status="有效"))
    assert outcome.record is not None
    assert outcome.record["status"] == "1"
    assert outcome.originals["status"] == "有效"


def test_natural_person_subject_and_15_digit_id(penalty_std: StandardVersion) -> None:
    outcome = penalty_std.engine.check(factories.person_penalty(1, person_id_no="110105491231002"))
    assert outcome.ok, outcome.violations
    assert outcome.derived is not None
    subject = outcome.derived.subject
    assert subject.kind == "natural_person"
    assert subject.person_id_no == "11010519491231002X"
    assert subject.uscc is None


def test_placeholder_uscc_needs_registration_number(penalty_std: StandardVersion) -> None:
    record = factories.penalty(
        1, counterpart_category="个体工商户", counterpart_uscc="00000000000000000X"
    )
    missing = penalty_std.engine.check(record)
    assert ("/business_reg_no", "required") in {(v.pointer, v.code) for v in missing.violations}
    ok = penalty_std.engine.check(record | {"business_reg_no": "440301103448669"})
    assert ok.derived is not None
    assert ok.derived.subject.uscc is None
    assert ok.derived.subject.reg_no == "440301103448669"


@pytest.mark.parametrize("value", [None, 17, "text", ["list"], True])
def test_non_object_record_is_one_violation_at_the_root(
    penalty_std: StandardVersion, value: Any
) -> None:
    outcome = penalty_std.engine.check(value)
    assert [(v.pointer, v.code) for v in outcome.violations] == [("", "type")]


def test_every_violation_is_reported_not_just_the_first(penalty_std: StandardVersion) -> None:
    record = factories.penalty(1, counterpart_uscc="914403001922038217", decision_date="2024/02/30")
    del record["violation_facts"]
    codes = {(v.pointer, v.code) for v in penalty_std.engine.check(record).violations}
    assert {
        ("/counterpart_uscc", "format.uscc"),
        ("/decision_date", "format.cn-date"),
        ("/violation_facts", "required"),
    } <= codes


def test_hostile_text_is_kept_verbatim(penalty_std: StandardVersion) -> None:
    text = "'; DROP TABLE record; -- <script>alert(1)</script>"
    outcome = penalty_std.engine.check(factories.penalty(1, violation_facts=text))
    assert outcome.record is not None
    assert outcome.record["violation_facts"] == text
