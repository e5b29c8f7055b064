"""Realistic generated records for the benchmarks: valid USCCs, Chinese text, about 1.4 KB each."""

from __future__ import annotations

import random
from typing import Any

from credit_hub.subjects import identifiers as ids

_DIGITS = "0123456789"
_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_DIVISIONS = ["350100", "350200", "440300", "440100", "110105", "310115", "330100", "510100"]
_VIOLATIONS = [
    ("销售超过保质期的食品", "《中华人民共和国食品安全法》第一百二十四条第一款第（五）项"),
    ("发布虚假广告", "《中华人民共和国广告法》第五十五条第一款"),
    ("未按规定明码标价", "《中华人民共和国价格法》第四十二条"),
    ("无证经营", "《无证无照经营查处办法》第十三条"),
    ("生产不符合安全标准的产品", "《中华人民共和国产品质量法》第四十九条"),
]
_CATEGORIES = [
    ["警告"],
    ["罚款"],
    ["警告", "罚款"],
    ["罚款", "没收违法所得"],
    ["责令停产停业", "罚款"],
]


def org_code(body8: str) -> str:
    total = sum(int(c, 36) * w for c, w in zip(body8, _WEIGHTS, strict=True))
    check = 11 - total % 11
    return body8 + ("X" if check == 10 else "0" if check == 11 else str(check))


def uscc(n: int, *, prefix: str = "91", division: str = "350100") -> str:
    body = prefix + division + org_code(f"{n:08d}")
    return body + ids.uscc_check_char(body)


DEPARTMENT_USCC = uscc(1, prefix="11")


def penalty(n: int, *, subject: int, rng: random.Random, revision: int = 0) -> dict[str, Any]:
    violation, basis = _VIOLATIONS[n % len(_VIOLATIONS)]
    categories = _CATEGORIES[n % len(_CATEGORIES)]
    record: dict[str, Any] = {
        "counterpart_name": (
            f"{rng.choice(['福州', '厦门', '深圳', '杭州'])}市示例第{subject}号商贸有限公司"
        ),
        "counterpart_category": "法人及非法人组织",
        "counterpart_uscc": uscc(10_000_000 + subject, division=_DIVISIONS[subject % 8]),
        "legal_rep_name": rng.choice(["张伟", "王芳", "李娜", "刘洋", "陈静"]),
        "decision_doc_no": f"榕市监处罚〔2026〕{n}号",
        "violation_type": violation,
        "violation_facts": (
            f"经查，当事人于2026年{1 + n % 12}月在其经营场所{violation}，涉及商品{5 + n % 40}件，"
            f"货值金额{100 + n % 9000}元，违法所得{n % 500}元。上述行为违反了相关法律法规的规定，"
            "执法人员现场制作了询问笔录和现场检查笔录，当事人对违法事实无异议。"
            + ("（更正）" if revision else "")
        ),
        "legal_basis": basis + "；《中华人民共和国行政处罚法》第二十八条、第三十二条",
        "penalty_categories": categories,
        "penalty_content": (
            f"{'、'.join(categories)}。责令改正违法行为，并处罚款人民币{1 + n % 50}千元整。"
        ),
        "decision_date": f"2026/{1 + n % 9:02d}/{1 + n % 28:02d}",
        "penalty_valid_to": "2026/12/31",
        "authority_name": "福州市市场监督管理局",
        "authority_uscc": DEPARTMENT_USCC,
        "source_org_name": "福州市市场监督管理局",
        "source_org_uscc": DEPARTMENT_USCC,
        "remarks": (
            "本决定书自送达之日起生效。当事人如不服本处罚决定，"
            "可在收到本决定书之日起六十日内申请行政复议，"
            "也可以在六个月内依法向人民法院提起行政诉讼。"
        ),
    }
    if "罚款" in categories:
        record["fine_amount_wan"] = f"{(1 + n % 50) / 10:.1f}"
    if "没收违法所得" in categories:
        record["confiscation_amount_wan"] = "0.05"
    return record


def licence(n: int, *, subject: int, rng: random.Random) -> dict[str, Any]:
    return {
        "counterpart_name": f"示例第{subject}号餐饮管理有限公司",
        "counterpart_category": "法人及非法人组织",
        "counterpart_uscc": uscc(10_000_000 + subject, division=_DIVISIONS[subject % 8]),
        "legal_rep_name": rng.choice(["赵敏", "钱进", "孙丽"]),
        "decision_doc_name": "食品经营许可决定书",
        "decision_doc_no": f"榕市监许〔2026〕{n}号",
        "license_category": "普通",
        "certificate_name": "食品经营许可证",
        "certificate_no": f"JY1350100{n:08d}",
        "license_content": (
            "预包装食品（含冷藏冷冻食品）销售，散装食品销售，"
            "热食类食品制售，冷食类食品制售，自制饮品制售。"
            "经营场所面积约二百平方米，"
            "设有独立的粗加工、切配、烹饪和餐用具清洗消毒区域。"
        ),
        "decision_date": "2026/03/01",
        "valid_from": "2026/03/01",
        "valid_to": "2031/02/28",
        "authority_name": "福州市市场监督管理局",
        "authority_uscc": DEPARTMENT_USCC,
        "status": "1",
        "source_org_name": "福州市市场监督管理局",
        "source_org_uscc": DEPARTMENT_USCC,
    }


def penalty_batch(size: int, *, start: int = 0, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [penalty(start + i, subject=(start + i) * 3 % 200_000, rng=rng) for i in range(size)]
