"""The `credit-hub` command: offline validation of files, standards listing."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from typer.testing import CliRunner

from credit_hub.cli import app
from credit_hub.standards.registry import Standards
from tests import factories

runner = CliRunner()


def _chinese_csv(records: list[dict[str, object]], schemas_root: Path, encoding: str) -> bytes:
    engine = Standards.load(schemas_root).resolve("administrative_penalty").engine
    names = list(records[0])
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([engine.properties[n]["title"] for n in names])
    for record in records:
        writer.writerow(
            ["；".join(v) if isinstance(v, list) else v for v in (record[n] for n in names)]
        )
    return out.getvalue().encode(encoding)


def test_validate_csv_with_chinese_headers_names_the_bad_row(
    tmp_path: Path, schemas_root: Path
) -> None:
    records = [factories.penalty(1), factories.penalty(2), factories.penalty(3)]
    records[1]["counterpart_uscc"] = "914403001922038217"
    for encoding in ("utf-8-sig", "gb18030"):
        path = tmp_path / f"penalties-{encoding}.csv"
        path.write_bytes(_chinese_csv(records, schemas_root, encoding))
        result = runner.invoke(
            app, ["standards", "validate", str(path), "--standard", "administrative_penalty"]
        )
        assert result.exit_code == 1, result.output
        lines = [line for line in result.output.splitlines() if line.startswith("row ")]
        assert len(lines) == 1
        assert lines[0].startswith("row 3: /counterpart_uscc [format.uscc]")


def test_validate_clean_ndjson_exits_zero(tmp_path: Path) -> None:
    path = tmp_path / "ok.ndjson"
    path.write_text(
        "\n".join(json.dumps(factories.penalty(i), ensure_ascii=False) for i in range(3)),
        encoding="utf-8",
    )
    result = runner.invoke(
        app, ["standards", "validate", str(path), "--standard", "administrative_penalty"]
    )
    assert result.exit_code == 0, result.output
    assert "3 record(s), 3 valid, 0 invalid" in result.output


def test_validate_json_array_reports_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([factories.penalty(1), "not a record"]), encoding="utf-8")
    result = runner.invoke(
        app, ["standards", "validate", str(path), "--standard", "administrative_penalty"]
    )
    assert result.exit_code == 1
    assert "row 2: / [type]" in result.output


def test_validate_wrong_encoding_and_unknown_standard_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "x.ndjson"
    path.write_bytes(json.dumps({"行政相对人名称": "示例"}, ensure_ascii=False).encode("gb18030"))
    result = runner.invoke(
        app,
        [
            "standards",
            "validate",
            str(path),
            "--standard",
            "administrative_penalty",
            "--encoding",
            "utf-8",
        ],
    )
    assert result.exit_code == 2
    result = runner.invoke(app, ["standards", "validate", str(path), "--standard", "nope"])
    assert result.exit_code == 2


def test_standards_list() -> None:
    result = runner.invoke(app, ["standards", "list"])
    assert result.exit_code == 0
    assert "administrative_penalty\t1.0\tcurrent" in result.output
