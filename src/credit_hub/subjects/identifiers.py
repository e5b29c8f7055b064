"""Identifier formats of credit subjects: USCC, org code, registration number, ID number."""

import datetime
import functools
import operator
import string

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_PLACEHOLDER = "00000000000000000X"


class IdentifierError(ValueError):
    """An identifier failed validation: `code` is stable for machines, `message` is for people."""

    code: str
    message: str

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type["IdentifierError"], tuple[str, str]]:
        # Ingest may validate in worker processes; the default pickling would drop `code`.
        return type(self), (self.code, self.message)


_Problem = tuple[str, str]

# --- normalization -------------------------------------------------------------------------

_DASHES = "-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\uff0d"
_NORMALIZE_TABLE: dict[int, int | None] = {
    **{code_point: code_point - 0xFEE0 for code_point in range(0xFF01, 0xFF5F)},
    # No entry for the ideographic space U+3000: str.split() drops it with the other whitespace.
    # translate() is a single pass: the full-width hyphen must be deleted here, not converted.
    **{ord(dash): None for dash in _DASHES},
}


def normalize_identifier(raw: str) -> str:
    """Full-width to half-width, drop whitespace and hyphens, upper-case."""
    if raw.isascii() and raw.isalnum():  # the common case: already clean
        return raw.upper()
    return "".join(raw.translate(_NORMALIZE_TABLE).split()).upper()


def _is_ascii_digits(value: str) -> bool:
    return value.isascii() and value.isdigit()


# --- organization code, GB 11714 -----------------------------------------------------------

_ORG_BODY_VALUES: dict[str, int] = {
    char: int(char, 36) for char in string.digits + string.ascii_uppercase
}
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_ORG_CHECK_CHARS = "0123456789X"


def _org_check_char(body8: str) -> str:
    """Check character for 8 characters already known to be in 0-9A-Z."""
    total = sum(map(operator.mul, map(_ORG_BODY_VALUES.__getitem__, body8), _ORG_WEIGHTS))
    check = 11 - total % 11
    return "X" if check == 10 else "0" if check == 11 else str(check)


def _org_code_problem(value: str) -> _Problem | None:
    if len(value) != 9:
        return "org_code.length", f"An organization code has 9 characters, not {len(value)}."
    for position, char in enumerate(value[:8], start=1):
        if char not in _ORG_BODY_VALUES:
            return (
                "org_code.alphabet",
                f"Organization code character {position} ({char!r}) is not a digit or a letter.",
            )
    if value[8] not in _ORG_CHECK_CHARS:
        return (
            "org_code.alphabet",
            f"Organization code character 9 ({value[8]!r}) must be a digit or X.",
        )
    if _org_check_char(value[:8]) != value[8]:
        return "org_code.checksum", "The organization code's check character does not match."
    return None


def is_valid_org_code(value: str) -> bool:
    """Whether a normalized 9-character organization code (hyphen removed) checks out."""
    return _org_code_problem(value) is None


def parse_org_code(raw: str) -> str:
    """Canonical 9 characters from e.g. 'M000100Y-4', or raise IdentifierError."""
    value = normalize_identifier(raw)
    if problem := _org_code_problem(value):
        raise IdentifierError(*problem)
    return value


# --- Unified Social Credit Code, GB 32100-2015 ----------------------------------------------

_USCC_VALUES: dict[str, int] = {char: value for value, char in enumerate(USCC_ALPHABET)}
_USCC_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))
# The check character counts with weight 1, so a valid code sums to 0 mod 31.
_USCC_WEIGHTS_WITH_CHECK = (*_USCC_WEIGHTS, 1)


def _uscc_alphabet_problem(value: str) -> _Problem:
    position, char = next((i, c) for i, c in enumerate(value, 1) if c not in _USCC_VALUES)
    return (
        "uscc.alphabet",
        f"USCC character {position} ({char!r}) is not in the alphabet {USCC_ALPHABET}.",
    )


def _uscc_problem(value: str) -> _Problem | None:
    # Hot path: a valid code costs one list of dict look-ups and two weighted sums.
    if value == USCC_PLACEHOLDER:
        return "uscc.placeholder", "The placeholder USCC stands for 'no code', not for a subject."
    if len(value) != 18:
        return "uscc.length", f"A USCC has 18 characters, not {len(value)}."
    try:
        values = [_USCC_VALUES[char] for char in value]
    except KeyError:
        return _uscc_alphabet_problem(value)
    if max(values[2:8]) > 9:
        return "uscc.division", "USCC positions 3-8 (administrative division) must be digits."
    if _org_check_char(value[8:16]) != value[16]:
        return (
            "uscc.org_code_checksum",
            "The organization code in USCC positions 9-17 has a wrong check character.",
        )
    if sum(map(operator.mul, values, _USCC_WEIGHTS_WITH_CHECK)) % 31:
        return "uscc.checksum", "The USCC check character (position 18) does not match."
    return None


def uscc_check_char(body17: str) -> str:
    """The 18th character for 17 characters of the USCC alphabet."""
    if len(body17) != 17:
        raise IdentifierError("uscc.length", f"A USCC body has 17 characters, not {len(body17)}.")
    if any(char not in _USCC_VALUES for char in body17):
        raise IdentifierError(*_uscc_alphabet_problem(body17))
    total = sum(map(operator.mul, map(_USCC_VALUES.__getitem__, body17), _USCC_WEIGHTS))
    return USCC_ALPHABET[-total % 31]


@functools.lru_cache(maxsize=65536)  # feeds repeat the same subjects across many records
def is_valid_uscc(value: str) -> bool:
    """Whether a normalized USCC is valid: alphabet, division digits, both check characters."""
    return _uscc_problem(value) is None


def parse_uscc(raw: str) -> str:
    """Canonical USCC from raw input, or IdentifierError with the most specific code."""
    value = normalize_identifier(raw)
    if problem := _uscc_problem(value):
        raise IdentifierError(*problem)
    return value


def is_uscc_placeholder(raw: str) -> bool:
    """Whether raw input is the 'no code' placeholder used for some individual businesses."""
    return normalize_identifier(raw) == USCC_PLACEHOLDER


def _require_uscc_length(uscc: str) -> None:
    if len(uscc) != 18:
        raise IdentifierError("uscc.length", f"A USCC has 18 characters, not {len(uscc)}.")


def uscc_org_code(uscc: str) -> str:
    """The organization code embedded in positions 9-17."""
    _require_uscc_length(uscc)
    return uscc[8:17]


def uscc_division(uscc: str) -> str:
    """The GB/T 2260 division code of the registering office, positions 3-8."""
    _require_uscc_length(uscc)
    return uscc[2:8]


_REGISTRATION_CATEGORIES: dict[str, str] = {
    "11": "government organ",
    "12": "public institution",
    "13": "mass organization",
    "31": "law firm",
    "51": "social association",
    "52": "private non-enterprise unit",
    "53": "foundation",
    "91": "enterprise",
    "92": "individual business",
    "93": "farmer cooperative",
    "N1": "rural collective economic organization",
    "N2": "rural collective economic organization",
    "N3": "rural collective economic organization",
    "Y1": "other",
}


def uscc_registration_category(uscc: str) -> str | None:
    """What positions 1-2 say about the subject; None for a pair we do not know (a warning)."""
    return _REGISTRATION_CATEGORIES.get(uscc[:2])


# --- business registration number, GS 15-2006 -----------------------------------------------


def _reg_no_problem(value: str) -> _Problem | None:
    if len(value) != 15:
        return "reg_no.length", f"A registration number has 15 digits, not {len(value)} characters."
    if not _is_ascii_digits(value):
        return "reg_no.alphabet", "A registration number has digits only."
    product = 10  # ISO 7064 MOD 11,10
    for digit in value[:14]:
        product = 2 * ((product + int(digit)) % 10 or 10) % 11
    if (11 - product) % 10 != int(value[14]):
        return "reg_no.checksum", "The registration number's check digit does not match."
    return None


def is_valid_reg_no(value: str) -> bool:
    """Whether a normalized 15-digit business registration number checks out."""
    return _reg_no_problem(value) is None


def parse_reg_no(raw: str) -> str:
    """Canonical 15-digit registration number, or raise IdentifierError."""
    value = normalize_identifier(raw)
    if problem := _reg_no_problem(value):
        raise IdentifierError(*problem)
    return value


# --- resident identity number, GB 11643-1999 ------------------------------------------------
# Personal data: messages name the failing part, never the number.

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK_CHARS = "10X98765432"


def id_number_check_char(body17: str) -> str:
    """The 18th character (MOD 11-2) for the first 17 digits."""
    if len(body17) != 17:
        raise IdentifierError(
            "id_number.length", f"An ID number body has 17 digits, not {len(body17)} characters."
        )
    if not _is_ascii_digits(body17):
        raise IdentifierError("id_number.alphabet", "An ID number body has digits only.")
    return _ID_CHECK_CHARS[sum(map(operator.mul, map(int, body17), _ID_WEIGHTS)) % 11]


def _birth_date(yyyymmdd: str) -> datetime.date | None:
    """The date for 8 ASCII digits if it is real, from 1800 and not after today."""
    try:
        born = datetime.date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:]))
    except ValueError:
        return None
    if born.year < 1800 or born > datetime.date.today():
        return None
    return born


_BIRTH_DATE_PROBLEM = (
    "id_number.birth_date",
    "The ID number's birth date is not a real date between 1800 and today.",
)


def _id_number_problem(value: str) -> _Problem | None:
    if len(value) != 18:
        return "id_number.length", f"An ID number has 18 characters, not {len(value)}."
    if not _is_ascii_digits(value[:17]) or value[17] not in _ID_CHECK_CHARS:
        return "id_number.alphabet", "An ID number has 17 digits and then a digit or X."
    if _birth_date(value[6:14]) is None:
        return _BIRTH_DATE_PROBLEM
    if id_number_check_char(value[:17]) != value[17]:
        return "id_number.checksum", "The ID number's check character does not match."
    return None


def is_valid_id_number(value: str) -> bool:
    """Whether a normalized 18-character ID number has a real birth date and a valid check."""
    return _id_number_problem(value) is None


def parse_id_number(raw: str) -> str:
    """Canonical 18-character ID number (15-digit ones converted), or raise IdentifierError."""
    value = normalize_identifier(raw)
    if len(value) == 15:
        if not _is_ascii_digits(value):
            raise IdentifierError("id_number.alphabet", "A 15-character ID number has digits only.")
        body = value[:6] + "19" + value[6:]
        if _birth_date(body[6:14]) is None:
            raise IdentifierError(*_BIRTH_DATE_PROBLEM)
        return body + id_number_check_char(body)
    if problem := _id_number_problem(value):
        raise IdentifierError(*problem)
    return value


def id_number_birth_date(id_number: str) -> datetime.date:
    """Birth date of an 18-character (or first-generation 15-digit) ID number."""
    if len(id_number) == 18:
        digits = id_number[6:14]
    elif len(id_number) == 15:
        digits = "19" + id_number[6:12]
    else:
        raise IdentifierError(
            "id_number.length", f"An ID number has 18 characters, not {len(id_number)}."
        )
    if not _is_ascii_digits(digits):
        raise IdentifierError("id_number.alphabet", "The ID number's birth date is not digits.")
    if (born := _birth_date(digits)) is None:
        raise IdentifierError(*_BIRTH_DATE_PROBLEM)
    return born


def mask_id_number(id_number: str) -> str:
    """Keep the first 6 and last 4 of an ID number; of anything else at most 2 and 2."""
    length = len(id_number)
    if length == 18:
        return id_number[:6] + "*" * 8 + id_number[14:]
    if length < 6:
        return "*" * length
    return id_number[:2] + "*" * (length - 4) + id_number[-2:]


# --- administrative divisions, GB/T 2260 ---------------------------------------------------

_PROVINCES: dict[str, str] = {
    "11": "北京市",
    "12": "天津市",
    "13": "河北省",
    "14": "山西省",
    "15": "内蒙古自治区",
    "21": "辽宁省",
    "22": "吉林省",
    "23": "黑龙江省",
    "31": "上海市",
    "32": "江苏省",
    "33": "浙江省",
    "34": "安徽省",
    "35": "福建省",
    "36": "江西省",
    "37": "山东省",
    "41": "河南省",
    "42": "湖北省",
    "43": "湖南省",
    "44": "广东省",
    "45": "广西壮族自治区",
    "46": "海南省",
    "50": "重庆市",
    "51": "四川省",
    "52": "贵州省",
    "53": "云南省",
    "54": "西藏自治区",
    "61": "陕西省",
    "62": "甘肃省",
    "63": "青海省",
    "64": "宁夏回族自治区",
    "65": "新疆维吾尔自治区",
    "71": "台湾省",
    "81": "香港特别行政区",
    "82": "澳门特别行政区",
}
_NATIONAL_DIVISION = "100000"  # used by central organs


def division_province(division: str) -> str | None:
    """Chinese name of the province-level division of a 6-digit code; None if unknown."""
    if len(division) != 6 or not _is_ascii_digits(division):
        return None
    if division == _NATIONAL_DIVISION:
        return "中华人民共和国"
    return _PROVINCES.get(division[:2])
