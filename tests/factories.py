"""Test data: valid identifiers and realistic records, as plain functions with overrides."""

from __future__ import annotations

import random
from typing import Any

from credit_hub.subjects import identifiers as ids

_ORG_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # characters legal in both codes
_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)


def org_code_check(body8: str) -> str:
    total = sum(int(c, 36) * w for c, w in zip(body8, _WEIGHTS, strict=True))
    check = 11 - total % 11
    return "X" if check == 10 else "0" if check == 11 else str(check)


def make_uscc(
    n: int | None = None,
    *,
    prefix: str = "91",
    division: str = "350100",
    rng: random.Random | None = None,
) -> str:
    """A valid USCC; `n` makes it deterministic (distinct n, distinct code)."""
    if n is None:
        rng = rng or random.Random()
        body8 = "".join(rng.choice(_ORG_ALPHABET[:10]) for _ in range(8))
    else:
        body8 = f"{n:08d}"
    org = body8 + org_code_check(body8)
    body17 = prefix + division + org
    return body17 + ids.uscc_check_char(body17)


def make_id_number(n: int = 1, *, birth: str = "19800101", division: str = "110105") -> str:
    body17 = f"{division}{birth}{n % 1000:03d}"
    return body17 + ids.id_number_check_char(body17)


DEPARTMENT_USCC = make_uscc(1, prefix="11", division="350100")
OTHER_DEPARTMENT_USCC = make_uscc(2, prefix="11", division="440300")


def penalty(n: int = 1, **overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "counterpart_name": f"福州示例{n}号贸易有限公司",
        "counterpart_category": "法人及非法人组织",
        "counterpart_uscc": make_uscc(1000 + n),
        "legal_rep_name": "张三",
        "decision_doc_no": f"榕市监处罚〔2026〕{n}号",
        "violation_type": "销售超过保质期的食品",
        "violation_facts": "当事人销售超过保质期的预包装食品共计12件，货值金额360元。",
        "legal_basis": "《中华人民共和国食品安全法》第一百二十四条",
        "penalty_categories": ["警告", "罚款"],
        "penalty_content": "警告，并处罚款人民币伍仟元整。",
        "fine_amount_wan": "0.5",
        "decision_date": "2026/04/02",
        "penalty_valid_to": "2030/12/31",
        "authority_name": "福州市市场监督管理局",
        "authority_uscc": DEPARTMENT_USCC,
        "source_org_name": "福州市市场监督管理局",
        "source_org_uscc": DEPARTMENT_USCC,
    }
    return record | overrides


def person_penalty(n: int = 1, **overrides: Any) -> dict[str, Any]:
    record = penalty(n)
    for key in ("counterpart_uscc", "legal_rep_name"):
        record.pop(key)
    record |= {
        "counterpart_name": "王五",
        "counterpart_category": "自然人",
        "person_id_type": "身份证",
        "person_id_no": make_id_number(n),
    }
    return record | overrides


def licence(n: int = 1, **overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "counterpart_name": f"福州示例{n}号餐饮有限公司",
        "counterpart_category": "法人及非法人组织",
        "counterpart_uscc": make_uscc(1000 + n),
        "legal_rep_name": "赵六",
        "decision_doc_name": "食品经营许可决定书",
        "decision_doc_no": f"榕市监许〔2026〕{n}号",
        "license_category": "普通",
        "certificate_name": "食品经营许可证",
        "certificate_no": f"JY135010{n:08d}",
        "license_content": "预包装食品销售，热食类食品制售",
        "decision_date": "2026/03/01",
        "valid_from": "2026/03/01",
        "valid_to": "2031/02/28",
        "authority_name": "福州市市场监督管理局",
        "authority_uscc": DEPARTMENT_USCC,
        "status": "1",
        "source_org_name": "福州市市场监督管理局",
        "source_org_uscc": DEPARTMENT_USCC,
    }
    return record | overrides
