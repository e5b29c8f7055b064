"""Tests of the identifier validators against the reference vectors and their algebra."""

import datetime
import pickle
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credit_hub.subjects.identifiers import (
    USCC_ALPHABET,
    USCC_PLACEHOLDER,
    IdentifierError,
    division_province,
    id_number_birth_date,
    id_number_check_char,
    is_uscc_placeholder,
    is_valid_id_number,
    is_valid_org_code,
    is_valid_reg_no,
    is_valid_uscc,
    mask_id_number,
    normalize_identifier,
    parse_id_number,
    parse_org_code,
    parse_reg_no,
    parse_uscc,
    uscc_check_char,
    uscc_division,
    uscc_org_code,
    uscc_registration_category,
)

VALID_USCCS = ["91350100M000100Y43", "914403001922038216", "91110000802100433B"]
VALID_ID_NUMBERS = ["11010519491231002X", "440524188001010014"]
# "91350100M000100Y43" typed with a full-width (U+FF01..U+FF5E) input method
FULL_WIDTH_USCC = (
    "\uff19\uff11\uff13\uff15\uff10\uff11\uff10\uff10\uff2d"
    "\uff10\uff10\uff10\uff11\uff10\uff10\uff39\uff14\uff13"
)


def with_uscc_check(body17: str) -> str:
    return body17 + uscc_check_char(body17)


def with_id_check(body17: str) -> str:
    return body17 + id_number_check_char(body17)


def org_check_char(body8: str) -> str:
    """GB 11714 check character, written independently of the module for the generators."""
    weights = (3, 7, 9, 10, 5, 8, 4, 2)
    check = 11 - sum(int(char, 36) * w for char, w in zip(body8, weights, strict=True)) % 11
    return {10: "X", 11: "0"}.get(check, str(check))


# --- strategies ------------------------------------------------------------------------------

uscc_chars = st.sampled_from(USCC_ALPHABET)
digits = st.sampled_from(string.digits)


@st.composite
def valid_usccs(draw: st.DrawFn) -> str:
    head = "".join(draw(st.lists(uscc_chars, min_size=2, max_size=2)))
    division = "".join(draw(st.lists(digits, min_size=6, max_size=6)))
    org_body = "".join(draw(st.lists(uscc_chars, min_size=8, max_size=8)))
    return with_uscc_check(head + division + org_body + org_check_char(org_body))


@st.composite
def valid_id_numbers(
    draw: st.DrawFn,
    earliest: datetime.date = datetime.date(1800, 1, 1),
    latest: datetime.date | None = None,
) -> str:
    address = "".join(draw(st.lists(digits, min_size=6, max_size=6)))
    born = draw(st.dates(min_value=earliest, max_value=latest or datetime.date.today()))
    sequence = "".join(draw(st.lists(digits, min_size=3, max_size=3)))
    return with_id_check(address + born.strftime("%Y%m%d") + sequence)


# --- errors ----------------------------------------------------------------------------------


def test_identifier_error_carries_code_and_message() -> None:
    error = IdentifierError("uscc.checksum", "The USCC check character does not match.")

    assert isinstance(error, ValueError)
    assert (error.code, error.message, str(error)) == (
        "uscc.checksum",
        "The USCC check character does not match.",
        "The USCC check character does not match.",
    )
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.code, copy.message) == (error.code, error.message)


# --- normalization ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (FULL_WIDTH_USCC, "91350100M000100Y43"),
        ("  91350100M000100Y43\t\n", "91350100M000100Y43"),
        ("9135 0100 M000 100Y 43", "91350100M000100Y43"),
        ("9135\u30000100M000100Y43", "91350100M000100Y43"),
        ("91350100m000100y43", "91350100M000100Y43"),
        ("\uff4d000100\uff59-4", "M000100Y4"),  # full-width lower-case m and y
        ("M000100Y\u20144", "M000100Y4"),
        ("M000100Y\u22124", "M000100Y4"),
        ("M000100Y\uff0d4", "M000100Y4"),
        ("M000100Y\u2010\u2011\u2012\u2013\u2015" + "4", "M000100Y4"),
        ("110105-19491231-002x", "11010519491231002X"),
        ("", ""),
    ],
)
def test_normalize_identifier(raw: str, expected: str) -> None:
    assert normalize_identifier(raw) == expected


@given(st.text(max_size=30))
@settings(max_examples=200)
def test_normalize_is_idempotent_and_drops_separators(raw: str) -> None:
    once = normalize_identifier(raw)

    assert normalize_identifier(once) == once
    assert not any(char.isspace() or char == "-" for char in once)


# --- USCC ------------------------------------------------------------------------------------


@pytest.mark.parametrize("uscc", VALID_USCCS)
def test_valid_uscc_vectors(uscc: str) -> None:
    assert is_valid_uscc(uscc)
    assert parse_uscc(uscc) == uscc
    assert uscc_check_char(uscc[:17]) == uscc[17]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("914403001922038217", "uscc.checksum"),
        ("91440300192203821", "uscc.length"),
        ("9144030O1922038216", "uscc.alphabet"),
        ("", "uscc.length"),
        ("91350100M000100Y431", "uscc.length"),
        ("91350100M000100YI3", "uscc.alphabet"),
        ("91350100M000100Y4Z", "uscc.alphabet"),
        # A letter in the division, check character recomputed so only the division is wrong.
        (with_uscc_check("9135010AM000100Y4"), "uscc.division"),
        # Embedded organization code with a wrong check character, outer check recomputed.
        (with_uscc_check("91350100M000100Y5"), "uscc.org_code_checksum"),
        (with_uscc_check("91350100M000100YA"), "uscc.org_code_checksum"),
        (USCC_PLACEHOLDER, "uscc.placeholder"),
        ("00000000-00000000-0x", "uscc.placeholder"),
    ],
)
def test_invalid_uscc_raises_specific_code(raw: str, code: str) -> None:
    with pytest.raises(IdentifierError) as caught:
        parse_uscc(raw)

    assert caught.value.code == code
    assert not is_valid_uscc(normalize_identifier(raw))


def test_uscc_alphabet_error_names_the_position() -> None:
    with pytest.raises(IdentifierError) as caught:
        parse_uscc("9144030O1922038216")

    assert "character 8" in caught.value.message


def test_parse_uscc_normalizes() -> None:
    assert parse_uscc(FULL_WIDTH_USCC) == "91350100M000100Y43"
    assert parse_uscc(" 9135-0100-m000-100y-43 ") == "91350100M000100Y43"


def test_is_valid_uscc_expects_normalized_input() -> None:
    assert not is_valid_uscc("91350100m000100y43")
    assert not is_valid_uscc(" 91350100M000100Y43")


@pytest.mark.parametrize("head", ["A1", "N1", "N2", "Y1", "11", "51"])
def test_letters_and_other_pairs_are_legal_in_positions_1_and_2(head: str) -> None:
    uscc = with_uscc_check(head + "350100M000100Y4")

    assert is_valid_uscc(uscc)
    assert parse_uscc(uscc) == uscc


def test_placeholder() -> None:
    assert not is_valid_uscc(USCC_PLACEHOLDER)
    assert is_uscc_placeholder(USCC_PLACEHOLDER)
    assert is_uscc_placeholder(" 00000000000000000x ")
    assert not is_uscc_placeholder("91350100M000100Y43")
    # It is not a valid code even by checksum alone: "no code" is the only reading.
    assert uscc_check_char(USCC_PLACEHOLDER[:17]) != USCC_PLACEHOLDER[17]


@pytest.mark.parametrize("uscc", VALID_USCCS)
def test_embedded_org_code_is_a_valid_org_code(uscc: str) -> None:
    assert is_valid_org_code(uscc_org_code(uscc))


def test_uscc_parts() -> None:
    assert uscc_org_code("91350100M000100Y43") == "M000100Y4"
    assert uscc_division("91350100M000100Y43") == "350100"
    assert uscc_division("914403001922038216") == "440300"
    with pytest.raises(IdentifierError) as caught:
        uscc_division("91350100M000100Y4")
    assert caught.value.code == "uscc.length"


@pytest.mark.parametrize(
    ("uscc", "category"),
    [
        ("91350100M000100Y43", "enterprise"),
        ("92350100M000100Y43", "individual business"),
        ("93350100M000100Y43", "farmer cooperative"),
        ("11350100M000100Y43", "government organ"),
        ("12350100M000100Y43", "public institution"),
        ("13350100M000100Y43", "mass organization"),
        ("31350100M000100Y43", "law firm"),
        ("51350100M000100Y43", "social association"),
        ("52350100M000100Y43", "private non-enterprise unit"),
        ("53350100M000100Y43", "foundation"),
        ("N1350100M000100Y43", "rural collective economic organization"),
        ("N3350100M000100Y43", "rural collective economic organization"),
        ("Y1350100M000100Y43", "other"),
        ("99350100M000100Y43", None),
        ("", None),
    ],
)
def test_uscc_registration_category(uscc: str, category: str | None) -> None:
    assert uscc_registration_category(uscc) == category


@pytest.mark.parametrize(
    ("body", "code"),
    [("9135010", "uscc.length"), ("91350100M000100YO", "uscc.alphabet")],
)
def test_uscc_check_char_rejects_bad_bodies(body: str, code: str) -> None:
    with pytest.raises(IdentifierError) as caught:
        uscc_check_char(body)

    assert caught.value.code == code


@given(valid_usccs())
@settings(max_examples=200)
def test_generated_usccs_are_valid(uscc: str) -> None:
    assert is_valid_uscc(uscc)
    assert parse_uscc(uscc.lower()) == uscc
    assert is_valid_org_code(uscc_org_code(uscc))


def assert_every_substitution_rejected(uscc: str) -> None:
    for position, original in enumerate(uscc):
        for char in USCC_ALPHABET + "IOSVZ":
            if char != original:
                changed = uscc[:position] + char + uscc[position + 1 :]
                assert not is_valid_uscc(changed), (position, char)


def assert_every_adjacent_transposition_rejected(uscc: str) -> None:
    for position in range(len(uscc) - 1):
        left, right = uscc[position], uscc[position + 1]
        if left != right:
            swapped = uscc[:position] + right + left + uscc[position + 2 :]
            assert not is_valid_uscc(swapped), position


@pytest.mark.parametrize("uscc", VALID_USCCS)
def test_every_substitution_of_a_vector_is_rejected(uscc: str) -> None:
    assert_every_substitution_rejected(uscc)


@pytest.mark.parametrize("uscc", VALID_USCCS)
def test_every_adjacent_transposition_of_a_vector_is_rejected(uscc: str) -> None:
    assert_every_adjacent_transposition_rejected(uscc)


@given(valid_usccs())
@settings(max_examples=40)
def test_every_substitution_of_a_generated_code_is_rejected(uscc: str) -> None:
    assert_every_substitution_rejected(uscc)


@given(valid_usccs())
@settings(max_examples=100)
def test_every_adjacent_transposition_of_a_generated_code_is_rejected(uscc: str) -> None:
    assert_every_adjacent_transposition_rejected(uscc)


# --- organization code -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("M000100Y-4", "M000100Y4"), ("19220382-1", "192203821"), ("80210043-3", "802100433")],
)
def test_valid_org_code_vectors(raw: str, expected: str) -> None:
    assert parse_org_code(raw) == expected
    assert is_valid_org_code(expected)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("M000100Y-5", "org_code.checksum"),
        ("19220382-X", "org_code.checksum"),
        ("M000100Y", "org_code.length"),
        ("M000100Y-44", "org_code.length"),
        ("M000100*-4", "org_code.alphabet"),
        ("M000100Y-A", "org_code.alphabet"),
    ],
)
def test_invalid_org_code_raises_specific_code(raw: str, code: str) -> None:
    with pytest.raises(IdentifierError) as caught:
        parse_org_code(raw)

    assert caught.value.code == code


@pytest.mark.parametrize(
    ("body", "check"),
    [("00000000", "0"), ("00000006", "X"), ("ZZZZZZZZ", "3")],
)
def test_org_code_check_char_maps_10_to_x_and_11_to_0(body: str, check: str) -> None:
    # 00000000: 11 - 0 -> '0'; 00000006: 11 - 12 % 11 = 10 -> 'X'; ZZZZZZZZ: 11 - 35 * 48 % 11 = 3.
    assert org_check_char(body) == check
    assert is_valid_org_code(body + check)
    assert not is_valid_org_code(body + ("1" if check != "1" else "2"))


@given(st.lists(st.sampled_from(string.digits + string.ascii_uppercase), min_size=8, max_size=8))
@settings(max_examples=100)
def test_org_code_substitution_is_rejected_unless_values_differ_by_11(
    body_chars: list[str],
) -> None:
    # Body values run 0..35 but the check is mod 11: '0' -> 'B' (0 -> 11) goes unnoticed.
    # Inside a USCC the outer mod-31 check catches those.
    body = "".join(body_chars)
    code = body + org_check_char(body)

    assert is_valid_org_code(code)
    for position in range(8):
        for char in string.digits + string.ascii_uppercase:
            if char != code[position]:
                undetectable = (int(char, 36) - int(code[position], 36)) % 11 == 0
                changed = code[:position] + char + code[position + 1 :]
                assert is_valid_org_code(changed) is undetectable, (position, char)
    for check in "0123456789X":
        if check != code[8]:
            assert not is_valid_org_code(body + check)


# --- business registration number ------------------------------------------------------------


def test_valid_reg_no_vector() -> None:
    assert is_valid_reg_no("440301103448669")
    assert parse_reg_no(" 440301 103448669 ") == "440301103448669"
    assert is_valid_reg_no("440301103448610")  # (11 - 1) % 10: the check digit 0


@given(st.lists(digits, min_size=14, max_size=14))
@settings(max_examples=100)
def test_exactly_one_reg_no_check_digit_fits_a_body(body_digits: list[str]) -> None:
    body = "".join(body_digits)

    assert sum(is_valid_reg_no(body + digit) for digit in string.digits) == 1


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("440301103448668", "reg_no.checksum"),
        ("440301103448660", "reg_no.checksum"),
        ("44030110344866", "reg_no.length"),
        ("4403011034486690", "reg_no.length"),
        ("44030110344866A", "reg_no.alphabet"),
    ],
)
def test_invalid_reg_no_raises_specific_code(raw: str, code: str) -> None:
    with pytest.raises(IdentifierError) as caught:
        parse_reg_no(raw)

    assert caught.value.code == code
    assert not is_valid_reg_no(normalize_identifier(raw))


def test_every_reg_no_digit_substitution_is_rejected() -> None:
    valid = "440301103448669"
    for position in range(15):
        for digit in string.digits:
            if digit != valid[position]:
                assert not is_valid_reg_no(valid[:position] + digit + valid[position + 1 :])


# --- resident identity number ----------------------------------------------------------------


@pytest.mark.parametrize("id_number", VALID_ID_NUMBERS)
def test_valid_id_number_vectors(id_number: str) -> None:
    assert is_valid_id_number(id_number)
    assert parse_id_number(id_number) == id_number
    assert id_number_check_char(id_number[:17]) == id_number[17]


def test_id_number_normalization_and_first_generation_conversion() -> None:
    assert parse_id_number("110105491231002") == "11010519491231002X"
    assert parse_id_number("11010519491231002x") == "11010519491231002X"
    assert parse_id_number(" 110105 19491231 002x ") == "11010519491231002X"
    assert not is_valid_id_number("11010519491231002x")  # not normalized


def test_id_number_birth_date() -> None:
    assert id_number_birth_date("11010519491231002X") == datetime.date(1949, 12, 31)
    assert id_number_birth_date("440524188001010014") == datetime.date(1880, 1, 1)
    assert id_number_birth_date("110105491231002") == datetime.date(1949, 12, 31)
    with pytest.raises(IdentifierError) as caught:
        id_number_birth_date(with_id_check("11010519490231002"))
    assert caught.value.code == "id_number.birth_date"


tomorrow = datetime.date.today() + datetime.timedelta(days=1)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("11010519491231002Y", "id_number.alphabet"),
        ("1101051949123100XX", "id_number.alphabet"),
        ("11010519491231002", "id_number.length"),
        ("11010519491231002X0", "id_number.length"),
        ("11010519491231003X", "id_number.checksum"),
        ("110105194912310021", "id_number.checksum"),
        (with_id_check("11010519490231002"), "id_number.birth_date"),  # 31 February
        (with_id_check("11010519491301002"), "id_number.birth_date"),  # month 13
        (with_id_check("11010519490100002"), "id_number.birth_date"),  # day 0
        (with_id_check("11010517991231002"), "id_number.birth_date"),  # before 1800
        (with_id_check("110105" + tomorrow.strftime("%Y%m%d") + "002"), "id_number.birth_date"),
        ("110105490231002", "id_number.birth_date"),  # 15 digits, 31 February
        ("11010549123100X", "id_number.alphabet"),
        ("1101054912310", "id_number.length"),
    ],
)
def test_invalid_id_number_raises_specific_code(raw: str, code: str) -> None:
    with pytest.raises(IdentifierError) as caught:
        parse_id_number(raw)

    assert caught.value.code == code
    assert raw not in caught.value.message  # personal data never echoed
    assert raw[:17] not in str(caught.value)
    if len(raw) == 18:
        assert not is_valid_id_number(raw)


@pytest.mark.parametrize(
    ("body", "code"),
    [("1101051949123100", "id_number.length"), ("1101051949123100A", "id_number.alphabet")],
)
def test_id_number_check_char_rejects_bad_bodies(body: str, code: str) -> None:
    with pytest.raises(IdentifierError) as caught:
        id_number_check_char(body)

    assert caught.value.code == code


@given(valid_id_numbers())
@settings(max_examples=100)
def test_generated_id_numbers_pass_and_every_substitution_fails(id_number: str) -> None:
    assert is_valid_id_number(id_number)
    assert parse_id_number(id_number.lower()) == id_number
    for position in range(18):
        for char in string.digits + "X":
            if char != id_number[position]:
                changed = id_number[:position] + char + id_number[position + 1 :]
                assert not is_valid_id_number(changed), (position, char)


@given(valid_id_numbers(earliest=datetime.date(1900, 1, 1), latest=datetime.date(1999, 12, 31)))
@settings(max_examples=100)
def test_first_generation_conversion_round_trip(id_number: str) -> None:
    first_generation = id_number[:6] + id_number[8:17]

    assert parse_id_number(first_generation) == id_number
    assert id_number_birth_date(first_generation) == id_number_birth_date(id_number)


# --- masking ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("11010519491231002X", "110105********002X"),
        ("E12345678", "E1*****78"),
        ("110105491231002", "11***********02"),
        ("ABCDEF", "AB**EF"),
        ("ABCDE", "*****"),
        ("", ""),
    ],
)
def test_mask_id_number(value: str, masked: str) -> None:
    assert mask_id_number(value) == masked


@given(valid_id_numbers())
@settings(max_examples=100)
def test_mask_of_an_id_number_hides_birth_date_and_sequence(id_number: str) -> None:
    masked = mask_id_number(id_number)

    assert masked == id_number[:6] + "*" * 8 + id_number[14:]


@given(st.text(alphabet=st.characters(exclude_characters="*"), max_size=40))
@settings(max_examples=200)
def test_mask_never_reveals_the_middle(value: str) -> None:
    masked = mask_id_number(value)
    keep = (6, 4) if len(value) == 18 else (0, 0) if len(value) < 6 else (2, 2)

    assert len(masked) == len(value)
    assert masked[keep[0] : len(value) - keep[1]] == "*" * (len(value) - sum(keep))
    assert sum(char != "*" for char in masked) == sum(keep)


# --- divisions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("division", "province"),
    [
        ("110105", "北京市"),
        ("350100", "福建省"),
        ("440300", "广东省"),
        ("440524", "广东省"),
        ("500000", "重庆市"),
        ("650100", "新疆维吾尔自治区"),
        ("810000", "香港特别行政区"),
        ("820000", "澳门特别行政区"),
        ("100000", "中华人民共和国"),
        ("101000", None),
        ("990000", None),
        ("3501", None),
        ("35010A", None),
    ],
)
def test_division_province(division: str, province: str | None) -> None:
    assert division_province(division) == province


@pytest.mark.parametrize("uscc", VALID_USCCS)
def test_every_vector_division_has_a_province(uscc: str) -> None:
    assert division_province(uscc_division(uscc)) is not None
