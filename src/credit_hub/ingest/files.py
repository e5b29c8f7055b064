"""Reading record files (JSON array, NDJSON, CSV in UTF-8 or GB18030) as a stream of rows.

Rows are numbered as a person sees them in the file: the line number for NDJSON and CSV (the
CSV header is row 1), the 1-based position for a JSON array. CSV cells arrive as text; empty
cells are left out so that an optional field may stay blank.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

FORMATS = ("json", "ndjson", "csv")


@dataclass(frozen=True, slots=True)
class Row:
    number: int
    record: Any  # the parsed record, or None when `error` says why it could not be read
    error: str | None = None


class FileFormatError(ValueError):
    """The file as a whole cannot be read (wrong encoding, not JSON, no header...)."""


def guess_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("jsonl", "ndjson"):
        return "ndjson"
    if suffix in FORMATS:
        return suffix
    raise FileFormatError(f"Cannot tell the format of {path.name!r}; give --format.")


def detect_encoding(head: bytes) -> str:
    """UTF-8 (with or without BOM) when the bytes decode as UTF-8, else GB18030."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        decoder.decode(head, final=False)  # a character cut at the end of `head` is fine
    except UnicodeDecodeError:
        return "gb18030"
    return "utf-8"


def iter_rows(path: Path, fmt: str, encoding: str | None = None) -> Iterator[Row]:
    if fmt == "json":
        yield from _json_rows(path)
        return
    with path.open("rb") as raw:
        encoding = encoding or detect_encoding(raw.read(65536))
        raw.seek(0)
        text = io.TextIOWrapper(raw, encoding=encoding, errors="strict", newline="")
        try:
            if fmt == "ndjson":
                yield from _ndjson_rows(text)
            elif fmt == "csv":
                yield from csv_rows(text)
            else:
                raise FileFormatError(f"Unknown format {fmt!r}; use one of {', '.join(FORMATS)}.")
        except UnicodeDecodeError as exc:
            raise FileFormatError(
                f"The file is not valid {encoding} (byte {exc.start} of a read block); "
                "give the right encoding."
            ) from None


def _json_rows(path: Path) -> Iterator[Row]:
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise FileFormatError(
            f"Not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
        ) from None
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        data = data["records"]
    if not isinstance(data, list):
        raise FileFormatError('A JSON file must hold an array of records (or {"records": [...]}).')
    for number, record in enumerate(data, start=1):
        yield Row(number, record)


def _ndjson_rows(text: IO[str]) -> Iterator[Row]:
    for number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            yield Row(number, orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            yield Row(number, None, f"Line {number} is not valid JSON: {exc.msg}.")


def csv_rows(text: IO[str]) -> Iterator[Row]:
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        raise FileFormatError("The CSV file is empty: a header row is expected.") from None
    header = [h.strip() for h in header]
    if not any(header):
        raise FileFormatError("The CSV header row is empty.")
    width = len(header)
    for cells in reader:
        number = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != width:
            yield Row(number, None, f"Row {number} has {len(cells)} cells; the header has {width}.")
            continue
        yield Row(number, {h: c for h, c in zip(header, cells, strict=True) if h and c.strip()})
