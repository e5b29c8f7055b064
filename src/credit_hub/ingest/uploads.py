"""Receiving an upload: the request body (raw, or one file of a multipart form) streamed to the
spool folder, hashed on the way, never held whole in memory."""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fastapi import Request
from python_multipart.multipart import MultipartParser, parse_options_header

from credit_hub.errors import PROBLEM_BASE, BadRequest, Problem, RequestInvalid

FORM_FIELDS = ("standard", "version", "mode", "format", "encoding", "sheet", "filename")
HEAD_BYTES = 65536


class FileUnreadable(RequestInvalid):
    type = PROBLEM_BASE + "file-unreadable"  # published: never rename
    title = "The uploaded file cannot be read"


class MalformedUpload(BadRequest):
    type = PROBLEM_BASE + "malformed-upload"
    title = "The multipart form is not well formed"


@dataclass
class Upload:
    path: Path
    size: int = 0
    sha256: str = ""
    filename: str | None = None
    media_type: str | None = None
    head: bytes = b""
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class _Sink:
    """A spool file being written: size, digest and the first bytes (to sniff the format)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: IO[bytes] = path.open("wb")
        self.digest = hashlib.sha256()
        self.size = 0
        self.head = bytearray()

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.digest.update(data)
        self.size += len(data)
        if len(self.head) < HEAD_BYTES:
            self.head += data[: HEAD_BYTES - len(self.head)]

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())  # the job is queued only once the bytes are on disk
        self.file.close()


async def receive(request: Request, spool: Path) -> Upload:
    """The request body in a new spool file (`<spool>/<uuid>.part`); the caller renames or
    discards it."""
    spool.mkdir(parents=True, exist_ok=True)
    path = spool / f"{uuid.uuid4().hex}.part"
    content_type = request.headers.get("content-type", "application/octet-stream")
    media_type = content_type.split(";", 1)[0].strip().lower()
    sink = _Sink(path)
    upload = Upload(path, media_type=media_type)
    try:
        if media_type == "multipart/form-data":
            await _multipart(request, content_type, sink, upload)
        else:
            async for chunk in request.stream():
                sink.write(chunk)
    except BaseException:
        sink.file.close()
        path.unlink(missing_ok=True)
        raise
    sink.close()
    upload.size, upload.sha256, upload.head = sink.size, sink.digest.hexdigest(), bytes(sink.head)
    return upload


async def _multipart(request: Request, content_type: str, sink: _Sink, upload: Upload) -> None:
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise MalformedUpload("The multipart content type names no boundary.")
    part: dict[str, Any] = {}
    files = 0
    header_field = bytearray()
    header_value = bytearray()

    def on_part_begin() -> None:
        part.clear()
        part["headers"] = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        part["headers"][bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        nonlocal files
        disposition = part["headers"].get(b"content-disposition", b"")
        _, params = parse_options_header(disposition)
        name = params.get(b"name", b"").decode("utf-8", "replace")
        filename = params.get(b"filename")
        if filename is not None or name == "file":
            files += 1
            if files > 1:
                raise MalformedUpload("Send one file per submission.")
            part["file"] = True
            if filename:
                upload.filename = Path(filename.decode("utf-8", "replace")).name[:255]
            kind = part["headers"].get(b"content-type", b"").decode("latin-1")
            upload.media_type = kind.split(";", 1)[0].strip().lower() or None
        else:
            part["name"], part["value"] = name, bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.get("file"):
            sink.write(data[start:end])
            return
        value: bytearray = part["value"]
        value.extend(data[start:end])
        if len(value) > 1000:
            raise MalformedUpload(f"The form field {part['name']!r} is too long.")

    def on_part_end() -> None:
        if not part.get("file") and part.get("name") in FORM_FIELDS:
            upload.fields[part["name"]] = part["value"].decode("utf-8", "replace").strip()

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except Problem:  # a malformed form, or the body passing its size limit
        raise
    except Exception as exc:  # python-multipart raises its own errors on broken forms
        raise MalformedUpload(f"The multipart form cannot be parsed: {exc}.") from None
    if files == 0:
        raise MalformedUpload("The form has no file part (name it `file`).")
