"""The validation engine: one record in, every violation out, then the normalized record.

The pipeline for one record, all driven by the standard's schema and its `x-` keywords:

1. prepare: field names given as Chinese names or national codes become snake_case names;
   code-list cells given as text are split; labels and legacy values map to current codes.
2. validate: the compiled JSON Schema (jsonschema-rs, identifier checks as format callbacks),
   then the cross-field rules JSON Schema cannot say (`x-rules`).
3. normalize: identifiers to canonical form, dates to ISO (long-term dates become "no end"),
   amounts to exact decimals written as strings, text trimmed.
4. derive: the source id, the subject reference, the severity tier and the publication window.

Steps 1-2 are `validate()`, the hot path measured by `bench/validate.py`; `check()` runs all four.
"""

from __future__ import annotations

import calendar
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

import jsonschema_rs

from credit_hub.errors import json_pointer
from credit_hub.subjects import identifiers as ids

LONG_TERM_FROM = date(2099, 12, 31)
SEVERITY_ORDER = {"minor": 0, "general": 1, "serious": 2}
RESIDENT_ID_TYPE = "身份证"
MAX_VALUE_DEPTH = 32  # levels inside one field; jsonschema-rs gives up at 255


@dataclass(frozen=True, slots=True)
class Violation:
    pointer: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"pointer": self.pointer, "code": self.code, "message": self.message}


@dataclass(slots=True)
class SubjectRef:
    """What a record says about its subject, normalized (clear ID numbers stay in memory only)."""

    kind: str
    name: str
    uscc: str | None = None
    org_code: str | None = None
    reg_no: str | None = None
    person_id_type: str | None = None
    person_id_no: str | None = None
    seen_on: date | None = None  # the decision date of the record that names it so


@dataclass(slots=True)
class Derived:
    source_id: str
    subject: SubjectRef
    decision_date: date
    publish_from: date
    publish_until: date | None
    repair_from: date | None
    severity: str | None
    severity_source: str | None
    data_source_uscc: str | None


@dataclass(slots=True)
class Outcome:
    """The result of checking one record: `record` and `derived` are set only when it passed."""

    violations: list[Violation]
    warnings: list[Violation] = field(default_factory=list)
    record: dict[str, Any] | None = None
    originals: dict[str, Any] = field(default_factory=dict)
    derived: Derived | None = None

    @property
    def ok(self) -> bool:
        return not self.violations


# --- format callbacks (they see raw text: normalize first, as the standard allows) -----------


@lru_cache(maxsize=65536)
def _uscc_ok(value: str) -> bool:
    if ids.is_valid_uscc(value):
        return True
    clean = ids.normalize_identifier(value)
    return clean == ids.USCC_PLACEHOLDER or ids.is_valid_uscc(clean)


@lru_cache(maxsize=8192)
def parse_date(value: str) -> date | None:
    """`YYYY/MM/DD` or `YYYY-MM-DD` to a date; None when the text is not a real date."""
    text = value.strip()
    if len(text) != 10 or text[4] not in "-/" or text[7] != text[4]:
        return None
    try:
        return date(int(text[0:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        return None


def _org_code_ok(value: str) -> bool:
    return ids.is_valid_org_code(ids.normalize_identifier(value))


def _resident_id_ok(value: str) -> bool:
    try:
        ids.parse_id_number(value)
    except ids.IdentifierError:
        return False
    return True


FORMATS: dict[str, Callable[[str], bool]] = {
    "uscc": _uscc_ok,
    "org-code": _org_code_ok,
    "cn-date": lambda value: parse_date(value) is not None,
    "cn-resident-id": _resident_id_ok,
}


def _format_message(fmt: str, value: str, title: str) -> str:
    parser = {
        "uscc": ids.parse_uscc,
        "org-code": ids.parse_org_code,
        "cn-resident-id": ids.parse_id_number,
    }.get(fmt)
    if parser is not None:
        try:
            parser(value)
        except ids.IdentifierError as exc:
            return f"{title}: {exc.message}"
    if fmt == "cn-date":
        return f"{title}: {value!r} is not a real calendar date (YYYY/MM/DD or YYYY-MM-DD)."
    return f"{title}: not a valid {fmt}."


# --- the engine ----------------------------------------------------------------------------


def add_months(start: date, months: int) -> date:
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


_KIND_CODES = {
    "Required": "required",
    "AdditionalProperties": "additional_property",
    "Type": "type",
    "Enum": "enum",
    "Constant": "const",
    "MaxLength": "max_length",
    "MinLength": "min_length",
    "Pattern": "pattern",
    "Minimum": "minimum",
    "Maximum": "maximum",
    "ExclusiveMinimum": "minimum",
    "ExclusiveMaximum": "maximum",
    "MinItems": "min_items",
    "MaxItems": "max_items",
    "UniqueItems": "unique_items",
    "FalseSchema": "forbidden",
    "Not": "forbidden",
    "AnyOf": "any_of",
    "OneOfNotValid": "one_of",
    "OneOfMultipleValid": "one_of",
    "Contains": "contains",
    "MultipleOf": "multiple_of",
}


class RecordEngine:
    """Validates, normalizes and derives records of one standard version."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = schema
        self.properties: dict[str, dict[str, Any]] = dict(schema["properties"])
        self.required = frozenset(schema.get("required", ()))
        self.field_names = frozenset(self.properties)
        self.aliases: dict[str, str] = {}
        for name, prop in self.properties.items():
            for alias in (name, prop.get("x-code"), prop.get("title"), *prop.get("x-aliases", ())):
                if alias:
                    self.aliases[str(alias).strip().casefold()] = name
        self.titles = {
            name: f"{name} ({prop['title']})" if prop.get("title") else name
            for name, prop in self.properties.items()
        }
        self.kinds = {
            name: prop.get("x-normalize", "text") for name, prop in self.properties.items()
        }
        self.personal_fields = frozenset(schema.get("x-personal-fields", ())) | {
            n for n, p in self.properties.items() if p.get("x-personal")
        }
        self.code_lists = {
            name: _CodeList(prop)
            for name, prop in self.properties.items()
            if self.kinds[name] == "code_list"
        }
        self.code_labels = {
            name: {str(k): str(v) for k, v in prop.get("x-label-aliases", {}).items()}
            for name, prop in self.properties.items()
            if self.kinds[name] == "code" and prop.get("x-label-aliases")
        }
        self.id_type_field = {
            name: prop.get("x-id-type-field", name.removesuffix("_no") + "_type")
            for name, prop in self.properties.items()
            if self.kinds[name] == "id_number"
        }
        self.scales = {
            name: int(prop.get("x-scale", 6))
            for name, prop in self.properties.items()
            if self.kinds[name] == "money"
        }
        self.rules: list[dict[str, str]] = list(schema.get("x-rules", ()))
        for rule in self.rules:
            if rule.get("rule") != "not_before":
                raise ValueError(f"unknown x-rules entry {rule.get('rule')!r}")
            for key in ("field", "other"):
                if rule[key] not in self.properties:
                    raise ValueError(f"x-rules names an unknown field {rule[key]!r}")
        self.source_id = dict(schema["x-source-id"])
        self.subject = dict(schema["x-subject"])
        self.decision_field = str(schema["x-decision-date"])
        self.data_source = dict(schema.get("x-data-source", {}))
        self.publication = dict(schema.get("x-publication", {}))
        for name in self._named_fields():
            if name not in self.properties:
                raise ValueError(f"an x- keyword names an unknown field {name!r}")
        self.validator = jsonschema_rs.validator_for(
            dict(schema), formats=FORMATS, validate_formats=True
        )

    def _named_fields(self) -> list[str]:
        names = [self.decision_field, self.source_id["field"], self.source_id["default_from"]]
        names += [v for k, v in self.subject.items() if k.endswith("_field")]
        names += [v for k, v in self.data_source.items() if k.endswith("_field")]
        names += [v for k, v in self.publication.items() if k.endswith("_field")]
        if "derive_severity_from" in self.publication:
            names.append(self.publication["derive_severity_from"])
        return names

    # 1. prepare ----------------------------------------------------------------------------

    def prepare(
        self, raw: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any], list[Violation]]:
        """Canonical field names and codes; returns (record, originals, violations)."""
        problems: list[Violation] = []
        if raw.keys() <= self.field_names:
            record = dict(raw)
        else:
            record = {}
            for key, value in raw.items():
                name = (
                    self.aliases.get(key.strip().casefold(), key) if isinstance(key, str) else key
                )
                if name in record:
                    problems.append(
                        Violation(
                            json_pointer([name]),
                            "duplicate_field",
                            f"{self.titles.get(name, name)} is given twice (as {key!r} too).",
                        )
                    )
                    continue
                record[name] = value
        originals: dict[str, Any] = {}
        for name, code_list in self.code_lists.items():
            value = record.get(name)
            if value is not None and not code_list.is_current(value):
                mapped, changed = code_list.map(value)
                record[name] = mapped
                if changed:
                    originals[name] = value
        for name, labels in self.code_labels.items():
            value = record.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                record[name] = value = str(value)
            if isinstance(value, str) and value.strip() in labels:
                originals[name] = value
                record[name] = labels[value.strip()]
        return record, originals, problems

    # 2. validate ---------------------------------------------------------------------------

    def validate(
        self, raw: object
    ) -> tuple[dict[str, Any] | None, dict[str, Any], list[Violation]]:
        if not isinstance(raw, dict):
            return (
                None,
                {},
                [Violation("", "type", f"A record must be a JSON object, not {_json_type(raw)}.")],
            )
        record, originals, problems = self.prepare(raw)
        if not self.validator.is_valid(record):
            # Exports often write an absent value as null or "": treat those as absent, but
            # only on this slow path so that clean records pay nothing for it.
            blanks = [
                k for k, v in record.items() if v is None or (isinstance(v, str) and not v.strip())
            ]
            for key in blanks:
                del record[key]
            if not blanks or not self.validator.is_valid(record):
                problems.extend(self._schema_violations(record))
        problems.extend(self._rule_violations(record))
        return record, originals, problems

    def _schema_violations(self, record: dict[str, Any]) -> list[Violation]:
        found: list[Violation] = []
        kinds = jsonschema_rs.ValidationErrorKind
        for error in self.validator.iter_errors(record):
            kind = error.kind
            path = list(error.instance_path)
            name = str(path[0]) if path else ""
            if isinstance(kind, kinds.Required):
                missing = str(kind.property)
                found.append(
                    Violation(
                        json_pointer([*path, missing]),
                        "required",
                        f"{self._title(missing)} is required.",
                    )
                )
            elif isinstance(kind, kinds.AdditionalProperties):
                found.extend(
                    Violation(
                        json_pointer([*path, unexpected]),
                        "additional_property",
                        f"{unexpected!r} is not a field of this standard.",
                    )
                    for unexpected in kind.unexpected
                )
            elif isinstance(kind, kinds.Format):
                message = _format_message(kind.format, str(error.instance), self._title(name))
                found.append(Violation(json_pointer(path), f"format.{kind.format}", message))
            else:
                kind_name = type(kind).__name__
                code = _KIND_CODES.get(kind_name, kind_name.lower())
                prefix = f"{self._title(name)}: " if name else ""
                found.append(Violation(json_pointer(path), code, prefix + error.message))
        unique = {(v.pointer, v.code): v for v in found}
        return sorted(unique.values(), key=lambda v: (v.pointer, v.code))

    def _rule_violations(self, record: dict[str, Any]) -> list[Violation]:
        found = []
        for rule in self.rules:
            later, earlier = record.get(rule["field"]), record.get(rule["other"])
            if not (isinstance(later, str) and isinstance(earlier, str)):
                continue
            later_date, earlier_date = parse_date(later), parse_date(earlier)
            if later_date is None or earlier_date is None:
                continue
            if later_date < earlier_date:
                message = rule.get("message") or (
                    f"{self._title(rule['field'])} ({later}) is before "
                    f"{self._title(rule['other'])} ({earlier})."
                )
                found.append(Violation(json_pointer([rule["field"]]), "not_before", message))
        return found

    def _title(self, name: str) -> str:
        return self.titles.get(name, name)

    # 3-4. normalize and derive ---------------------------------------------------------------

    def check(self, raw: object, *, today: date | None = None) -> Outcome:
        if isinstance(raw, dict) and (screened := _screen(raw)) is not None:
            return Outcome(violations=[screened])
        record, originals, problems = self.validate(raw)
        if problems or record is None:
            return Outcome(violations=problems)
        normalized, problems = self.normalize(record, originals)
        if problems:
            return Outcome(violations=problems)
        derived, problems = self.derive(normalized, originals)
        if problems or derived is None:
            return Outcome(violations=problems)
        return Outcome(
            violations=[],
            warnings=self._warnings(derived),
            record=normalized,
            originals=originals,
            derived=derived,
        )

    def normalize(
        self, record: dict[str, Any], originals: dict[str, Any]
    ) -> tuple[dict[str, Any], list[Violation]]:
        out: dict[str, Any] = {}
        problems: list[Violation] = []
        for name, value in record.items():
            kind = self.kinds[name]
            if kind == "text" or kind == "code":
                if isinstance(value, str):
                    value = value.strip()
                    if not value:
                        if name in self.required:
                            problems.append(
                                Violation(
                                    json_pointer([name]), "blank", f"{self._title(name)} is blank."
                                )
                            )
                        continue
            elif kind in ("uscc", "org_code", "reg_no"):
                value = ids.normalize_identifier(value)
            elif kind == "id_number":
                value = ids.normalize_identifier(value)
                if record.get(self.id_type_field[name]) == RESIDENT_ID_TYPE:
                    value = ids.parse_id_number(value)  # validated already: converts 15 to 18
            elif kind == "date":
                parsed = parse_date(value)
                assert parsed is not None  # the schema's format checked it
                if parsed >= LONG_TERM_FROM:
                    originals[name] = value
                    value = None
                else:
                    value = parsed.isoformat()
            elif kind == "money":
                amount, problem = _decimal(value, self.scales[name])
                if problem:
                    problems.append(
                        Violation(json_pointer([name]), "scale", f"{self._title(name)}: {problem}")
                    )
                    continue
                value = amount
            out[name] = value
        return out, problems

    def derive(
        self, record: dict[str, Any], originals: Mapping[str, Any]
    ) -> tuple[Derived | None, list[Violation]]:
        decision = date.fromisoformat(record[self.decision_field])
        source_id = record.get(self.source_id["field"]) or record[self.source_id["default_from"]]
        subject = self._subject(record)
        severity = severity_source = None
        publish_until: date | None
        repair_from: date | None = None
        pub = self.publication
        problems: list[Violation] = []
        if "periods" in pub:
            severity = record.get(pub["severity_field"])
            severity_source = "given" if severity else None
            if not severity:
                severity = self._derived_severity(record.get(pub["derive_severity_from"]) or [])
                severity_source = "derived"
            period = pub["periods"][severity]
            earliest = add_months(decision, int(period["min_months"]))
            latest = add_months(decision, int(period["max_months"]))
            repair_from = earliest
            publish_until = latest
            given_field = pub.get("given_end_field")
            given = record.get(given_field) if given_field else None
            if given_field and (given is not None or given_field in originals):
                given_date = date.fromisoformat(given) if given else None
                if given_date is None or not earliest <= given_date <= latest:
                    problems.append(
                        Violation(
                            json_pointer([given_field]),
                            "publication_period",
                            f"{self._title(given_field)} must fall between {earliest} and "
                            f"{latest} for a {severity} penalty decided on {decision}.",
                        )
                    )
                else:
                    publish_until = given_date
        elif "end_field" in pub:
            end = record.get(pub["end_field"])
            publish_until = date.fromisoformat(end) if end else None
        else:
            publish_until = None
        if problems:
            return None, problems
        return (
            Derived(
                source_id=str(source_id),
                subject=subject,
                decision_date=decision,
                publish_from=decision,
                publish_until=publish_until,
                repair_from=repair_from,
                severity=severity,
                severity_source=severity_source,
                data_source_uscc=record.get(self.data_source.get("uscc_field", "")),
            ),
            [],
        )

    def _derived_severity(self, categories: list[str]) -> str:
        by_value: Mapping[str, str] = self.publication.get("severity_by_value", {})
        tiers = [by_value.get(c, "general") for c in categories] or ["general"]
        return max(tiers, key=SEVERITY_ORDER.__getitem__)

    def _subject(self, record: dict[str, Any]) -> SubjectRef:
        spec = self.subject
        kind = spec["categories"][record[spec["category_field"]]]
        uscc = record.get(spec["uscc_field"])
        if uscc == ids.USCC_PLACEHOLDER:
            uscc = None
        org_code = record.get(spec.get("org_code_field", ""))
        if org_code is None and uscc is not None:
            org_code = ids.uscc_org_code(uscc)
        return SubjectRef(
            kind=kind,
            name=record[spec["name_field"]],
            uscc=uscc,
            org_code=org_code,
            reg_no=record.get(spec.get("reg_no_field", "")),
            person_id_type=record.get(spec.get("person_id_type_field", "")),
            person_id_no=record.get(spec.get("person_id_no_field", "")),
            seen_on=date.fromisoformat(record[self.decision_field]),
        )

    def _warnings(self, derived: Derived) -> list[Violation]:
        uscc = derived.subject.uscc
        if uscc and ids.uscc_registration_category(uscc) is None:
            return [
                Violation(
                    json_pointer([self.subject["uscc_field"]]),
                    "uscc.unknown_category",
                    f"Registration category {uscc[:2]!r} is not in the GB 32100 table.",
                )
            ]
        return []


class _CodeList:
    """A multi-valued code field: text cells split on the standard's separators, legacy mapped."""

    def __init__(self, prop: Mapping[str, Any]) -> None:
        self.current = frozenset(prop.get("items", {}).get("enum", ()))
        self.separators = list(prop.get("x-separators", [";"]))
        self.legacy: dict[str, list[str]] = {
            k: list(v) for k, v in prop.get("x-legacy-values", {}).items()
        }

    def is_current(self, value: Any) -> bool:
        return isinstance(value, list) and all(v in self.current for v in value)

    def map(self, value: Any) -> tuple[Any, bool]:
        """Current codes, keeping order and dropping repeats; (value, False) if not mappable."""
        if isinstance(value, str):
            items: list[Any] = (
                [value.strip()] if value.strip() in self.legacy else self._split(value)
            )
        elif isinstance(value, list):
            items = value
        else:
            return value, False
        mapped: list[Any] = []
        changed = isinstance(value, str) and len(items) != 1
        for item in items:
            text = item.strip() if isinstance(item, str) else item
            replacement = self.legacy.get(text) if isinstance(text, str) else None
            if replacement is not None:
                changed = True
            for code in replacement or [text]:
                if code not in mapped:
                    mapped.append(code)
        return mapped, changed or (isinstance(value, str) and mapped != [value])

    def _split(self, text: str) -> list[str]:
        for separator in self.separators[1:]:
            text = text.replace(separator, self.separators[0])
        return [part for part in (p.strip() for p in text.split(self.separators[0])) if part]


def _decimal(value: Any, scale: int) -> tuple[str, str | None]:
    try:
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value).strip())
    except InvalidOperation:
        return "", "not a decimal number."
    if not amount.is_finite() or amount < 0:
        return "", "must be a finite amount of zero or more."
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > scale:
        return "", f"at most {scale} decimal places are allowed."
    return format(amount.normalize(), "f"), None


def _screen(record: Mapping[Any, Any]) -> Violation | None:
    """What no field may hold, checked before the schema: a NUL character (U+0000; PostgreSQL
    text cannot hold one, so SQLite gets the same answer) and values nested deeper than
    MAX_VALUE_DEPTH (the schema validator stops at 255 levels with an error). The value is
    never echoed back: a message or pointer holding NUL could not be stored in a report."""
    for key, value in record.items():
        if value.__class__ is str:
            problem = "nul_character" if "\x00" in value else None
        elif isinstance(value, list | dict):
            problem = _container_problem(value, MAX_VALUE_DEPTH)
        else:
            problem = None
        if problem is None and isinstance(key, str) and "\x00" in key:
            problem = "nul_character"
        if problem is not None:
            name = str(key).replace("\x00", "\ufffd")
            message = (
                f"{name} contains a NUL character (U+0000), which no text field may hold."
                if problem == "nul_character"
                else f"{name} is nested more than {MAX_VALUE_DEPTH} levels deep."
            )
            return Violation(json_pointer([name]), problem, message)
    return None


def _container_problem(value: list[Any] | dict[Any, Any], depth: int) -> str | None:
    if depth <= 0:
        return "too_deep"
    items: Any = value if isinstance(value, list) else itertools.chain(value, value.values())
    for item in items:
        if item.__class__ is str:
            if "\x00" in item:
                return "nul_character"
        elif isinstance(item, list | dict) and (found := _container_problem(item, depth - 1)):
            return found
    return None


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__
