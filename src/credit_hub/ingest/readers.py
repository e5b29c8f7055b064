"""Reading an uploaded file (NDJSON, CSV in UTF-8 or GB18030, XLSX) as a stream of rows that
keep their cells, so that a rejected row can be given back exactly as it came.

Rows are numbered as a person sees them: the line for NDJSON and CSV (the CSV header is row 1,
a quoted cell spanning lines counts its lines), the sheet row for XLSX. Column headers may be
snake_case names, Chinese names or national codes; columns whose header starts with `_` are
annotations (the error file adds them) and are ignored; other unknown headers are reported.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import re
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from credit_hub.ingest.files import detect_encoding
from credit_hub.standards.engine import RecordEngine

FORMATS = ("ndjson", "csv", "xlsx")
MEDIA_TYPES = {
    "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson",
    "application/jsonl": "ndjson",
    "text/csv": "csv",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
}
SUFFIXES = {".ndjson": "ndjson", ".jsonl": "ndjson", ".csv": "csv", ".xlsx": "xlsx"}
ENCODINGS = {"utf-8": "utf-8", "utf8": "utf-8", "utf-8-sig": "utf-8-sig", "gb18030": "gb18030"}
ENCODINGS |= {"gbk": "gb18030", "gb2312": "gb18030"}  # GB18030 is a superset of both
_NEUTRALIZED = re.compile(r"^'[=+\-@\t\r]")
_MERGE = re.compile(rb'<(?:\w+:)?mergeCell\s+ref="([A-Z]+[0-9]+:[A-Z]+[0-9]+)"')


class FileProblem(ValueError):
    """The file as a whole cannot be read: every job and upload ends with its code and message."""

    def __init__(self, code: str, message: str, *, row: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.row = code, message, row

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.row is not None:
            found["row"] = self.row
        return found


@dataclass(slots=True)
class FileRow:
    number: int
    record: dict[str, Any] | None  # None when `error` says why the row could not be read
    cells: Any  # list[str] (CSV, XLSX) or the line's text (NDJSON)
    error: tuple[str, str] | None = None  # (code, message)


@dataclass
class Columns:
    headers: list[str]
    fields: list[str | None]  # the standard field of each column, None when ignored
    unknown: list[str] = field(default_factory=list)
    annotations: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "mapped": {h: f for h, f in zip(self.headers, self.fields, strict=True) if f},
            "unknown": self.unknown,
            "ignored": self.annotations,
        }


@dataclass
class Limits:
    xlsx_max_uncompressed_bytes: int = 1024**3
    xlsx_max_ratio: int = 200


class RowSource:
    """An opened file: its columns (CSV, XLSX), its rows, how far reading has got."""

    def __init__(self, rows: Iterator[FileRow], columns: Columns | None) -> None:
        self.rows = rows
        self.columns = columns
        self.rows_total: int | None = None
        self._position: Any = None

    def position(self) -> int:
        return int(self._position()) if self._position is not None else 0


def choose_format(
    given: str | None, media_type: str | None, filename: str | None, head: bytes
) -> str:
    if given:
        if given.lower() not in FORMATS:
            raise FileProblem("format", f"Unknown format {given!r}; use ndjson, csv or xlsx.")
        return given.lower()
    if media_type and media_type in MEDIA_TYPES:
        return MEDIA_TYPES[media_type]
    if filename:
        suffix = Path(filename).suffix.lower()
        if suffix in SUFFIXES:
            return SUFFIXES[suffix]
        if suffix in (".xls", ".et"):
            raise FileProblem(
                "format", "Old binary spreadsheets (.xls) are not read; save as .xlsx."
            )
    if head.startswith(b"PK\x03\x04"):
        return "xlsx"
    text = head.lstrip(codecs.BOM_UTF8).lstrip()
    return "ndjson" if text.startswith(b"{") else "csv"


def choose_encoding(given: str | None, fmt: str, head: bytes) -> str | None:
    if fmt == "xlsx":
        return None
    if given:
        name = ENCODINGS.get(given.strip().lower().replace("_", "-"))
        if name is None:
            raise FileProblem(
                "encoding", f"Unknown encoding {given!r}; use utf-8 or gb18030 (or omit it)."
            )
        if name == "utf-8" and head.startswith(codecs.BOM_UTF8):
            return "utf-8-sig"
        return name
    return detect_encoding(head)


def map_columns(headers: list[str], engine: RecordEngine, *, encoding_hint: str = "") -> Columns:
    headers = [str(h).strip() if h is not None else "" for h in headers]
    if not any(headers):
        raise FileProblem("no_header", "The first row (the header) is empty.", row=1)
    fields: list[str | None] = []
    unknown: list[str] = []
    annotations: list[str] = []
    seen: dict[str, str] = {}
    for header in headers:
        name = engine.aliases.get(header.casefold()) if header else None
        if header.startswith("_"):
            annotations.append(header)
        elif header and name is None:
            unknown.append(header)
        if name is not None and name in seen:
            raise FileProblem(
                "duplicate_column",
                f"Columns {seen[name]!r} and {header!r} both name the field {name!r}.",
                row=1,
            )
        if name is not None:
            seen[name] = header
        fields.append(name)
    if not seen:
        shown = ", ".join(repr(h) for h in headers[:5] if h)
        raise FileProblem(
            "no_known_columns",
            f"No column of the header row names a field of the standard (headers: {shown}). "
            "Use snake_case names, Chinese names or national codes; the header must be the "
            f"first row.{encoding_hint}",
            row=1,
        )
    return Columns(headers, fields, unknown, annotations)


def _cell_text(value: str) -> str:
    # The error file prefixes cells starting with = + - @ with an apostrophe; take it back.
    return value[1:] if _NEUTRALIZED.match(value) else value


def _record(columns: Columns, cells: list[str]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for name, cell in zip(columns.fields, cells, strict=False):
        if name is not None and cell.strip():
            record[name] = _cell_text(cell)
    return record


@contextmanager
def open_rows(
    path: Path,
    fmt: str,
    encoding: str | None,
    engine: RecordEngine,
    *,
    sheet: str | None = None,
    limits: Limits | None = None,
) -> Iterator[RowSource]:
    if fmt == "xlsx":
        with _xlsx(path, engine, sheet, limits or Limits()) as source:
            yield source
        return
    with path.open("rb") as raw:
        head = raw.read(65536)
        if not head.removeprefix(codecs.BOM_UTF8).strip():
            raise FileProblem("empty", "The file is empty.")
        detected = detect_encoding(head)
        encoding = encoding or detected
        raw.seek(0)
        text = io.TextIOWrapper(raw, encoding=encoding, errors="strict", newline="")
        hint = (
            f" The file reads as {detected}, not {encoding}: was the encoding right?"
            if detected.removesuffix("-sig") != encoding.removesuffix("-sig")
            else ""
        )
        if fmt == "ndjson":
            source = RowSource(_ndjson_rows(text), None)
        elif fmt == "csv":
            reader = csv.reader(text)
            try:
                header = next(reader)
            except StopIteration:
                raise FileProblem("empty", "The file is empty: a header row is expected.") from None
            except UnicodeDecodeError:
                raise _decode_problem(encoding, 1, hint) from None
            except csv.Error as exc:
                raise FileProblem("csv", f"The header row cannot be read: {exc}.", row=1) from None
            columns = map_columns(header, engine, encoding_hint=hint)
            source = RowSource(_csv_rows(reader, columns, encoding), columns)
        else:
            raise FileProblem("format", f"Unknown format {fmt!r}; use ndjson, csv or xlsx.")
        source._position = raw.tell
        yield source


def _decode_problem(encoding: str, row: int | None, hint: str = "") -> FileProblem:
    return FileProblem(
        "encoding",
        f"The file is not valid {encoding}"
        + (f" at row {row}" if row else "")
        + "; give the right encoding (utf-8 or gb18030)."
        + hint,
        row=row,
    )


def _ndjson_rows(text: io.TextIOWrapper) -> Iterator[FileRow]:
    number = 0
    try:
        for number, line in enumerate(text, start=1):
            stripped = line.strip()
            if not stripped:
                continue
            try:
                value = orjson.loads(stripped)
            except orjson.JSONDecodeError as exc:
                yield FileRow(number, None, stripped, ("json", f"Not valid JSON: {exc.msg}."))
                continue
            if isinstance(value, dict):
                value = {k: v for k, v in value.items() if not k.startswith("_")}
            yield FileRow(number, value, stripped)
    except UnicodeDecodeError:
        raise _decode_problem(text.encoding, number + 1) from None


def _csv_rows(reader: Any, columns: Columns, encoding: str) -> Iterator[FileRow]:
    width = len(columns.headers)
    number = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError:
            raise _decode_problem(encoding, number + 1) from None
        except csv.Error as exc:
            number = reader.line_num
            yield FileRow(number, None, [], ("csv", f"The row cannot be read: {exc}."))
            continue
        number = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != width:
            message = f"The row has {len(cells)} cells; the header has {width}."
            yield FileRow(number, None, cells, ("row_width", message))
            continue
        yield FileRow(number, _record(columns, cells), cells)


# -- XLSX -----------------------------------------------------------------------------------


def check_zip(path: Path, limits: Limits) -> None:
    """Refuse a zip bomb before opening it: declared sizes and ratios (zipfile never inflates
    an entry past its declared size)."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise FileProblem("xlsx", f"The file is not a readable XLSX (zip) file: {exc}.") from None
    if len(infos) > 10_000:
        raise FileProblem("xlsx_too_large", f"The XLSX holds {len(infos)} parts; too many.")
    total = sum(i.file_size for i in infos)
    if total > limits.xlsx_max_uncompressed_bytes:
        raise FileProblem(
            "xlsx_too_large",
            f"The XLSX would expand to {total} bytes (limit "
            f"{limits.xlsx_max_uncompressed_bytes}); split it or upload CSV.",
        )
    for info in infos:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > 1024 * 1024 and ratio > limits.xlsx_max_ratio:
            raise FileProblem(
                "xlsx_suspicious",
                f"Part {info.filename!r} expands {ratio:.0f} times (limit "
                f"{limits.xlsx_max_ratio}): refused as a possible zip bomb.",
            )


def _xlsx_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0):
            return value.date().isoformat()
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


def _merged_ranges(archive: zipfile.ZipFile, member: str) -> list[str]:
    found: list[str] = []
    tail = b""
    with archive.open(member) as stream:
        while chunk := stream.read(1024 * 1024):
            block = tail + chunk
            found.extend(m.group(1).decode() for m in _MERGE.finditer(block))
            tail = block[-200:]
            if found:
                break
    return found


@contextmanager
def _xlsx(
    path: Path, engine: RecordEngine, sheet: str | None, limits: Limits
) -> Iterator[RowSource]:
    from openpyxl import load_workbook

    check_zip(path, limits)
    stream = path.open("rb")  # a file object: openpyxl insists on an .xlsx name otherwise
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # openpyxl warns about styles and extensions it skips
        try:
            book = load_workbook(stream, read_only=True, data_only=True)
        except Exception as exc:  # openpyxl raises many kinds on a broken part
            stream.close()
            raise FileProblem("xlsx", f"The XLSX cannot be opened: {type(exc).__name__}.") from None
    try:
        names = book.sheetnames
        if sheet is not None:
            if sheet not in names:
                raise FileProblem("sheet", f"No sheet {sheet!r}; the sheets are {names}.")
            chosen = sheet
        elif len(names) != 1:
            raise FileProblem(
                "several_sheets",
                f"The workbook has {len(names)} sheets ({', '.join(names)}); name the one to "
                "read with `sheet=`.",
            )
        else:
            chosen = names[0]
        worksheet: Any = book[chosen]
        merged = _merged_ranges(book._archive, worksheet._worksheet_path)  # type: ignore[attr-defined]
        if merged:
            raise FileProblem(
                "merged_cells",
                f"The sheet has merged cells ({', '.join(merged[:5])}); unmerge them and fill "
                "every cell, with the header in the first row.",
            )
        rows = worksheet.iter_rows(values_only=True)
        try:
            header = next(rows)
        except StopIteration:
            raise FileProblem("empty", "The sheet is empty: a header row is expected.") from None
        except Exception as exc:
            raise FileProblem("xlsx", f"The sheet cannot be read: {type(exc).__name__}.") from None
        columns = map_columns([_xlsx_value(v) for v in header], engine)
        source = RowSource(_xlsx_rows(rows, columns), columns)
        max_row = worksheet.max_row
        source.rows_total = max_row - 1 if isinstance(max_row, int) and max_row > 1 else None
        yield source
    finally:
        book.close()
        stream.close()


def _xlsx_rows(rows: Iterator[tuple[Any, ...]], columns: Columns) -> Iterator[FileRow]:
    width = len(columns.headers)
    number = 1
    while True:
        try:
            values = next(rows)
        except StopIteration:
            return
        except Exception as exc:
            raise FileProblem(
                "xlsx", f"The sheet cannot be read after row {number}: {type(exc).__name__}."
            ) from None
        number += 1
        cells = [_xlsx_value(v) for v in values]
        if not any(c.strip() for c in cells):
            continue
        if any(c.strip() for c in cells[width:]):
            message = f"The row has cells beyond the header's {width} columns."
            yield FileRow(number, None, cells, ("row_width", message))
            continue
        cells = cells[:width] + [""] * (width - len(cells))
        yield FileRow(number, _record(columns, cells), cells)
