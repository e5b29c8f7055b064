"""Loading the published standards: a broken one stops the boot, versions carry their status."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pytest

from credit_hub.app import create_app
from credit_hub.config import Settings
from credit_hub.errors import StandardNotFound
from credit_hub.standards.registry import Standards, StandardsError


@pytest.fixture
def copy_root(tmp_path: Path, schemas_root: Path) -> Path:
    root = tmp_path / "schemas"
    shutil.copytree(schemas_root, root)
    return root


def test_published_standards_load(schemas_root: Path) -> None:
    standards = Standards.load(schemas_root)
    assert {s.id for s in standards} == {"administrative_penalty", "administrative_licensing"}
    for standard in standards:
        assert standard.current.schema_id.endswith(
            f"/{standard.id}/{standard.current.version}.json"
        )


def test_malformed_schema_file_is_named(copy_root: Path) -> None:
    broken = copy_root / "administrative_penalty" / "1.0.json"
    broken.write_text('{"$schema": ', encoding="utf-8")
    with pytest.raises(StandardsError) as info:
        Standards.load(copy_root)
    assert info.value.path == broken


def test_invalid_2020_12_schema_stops_loading(copy_root: Path) -> None:
    path = copy_root / "administrative_licensing" / "1.0.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    schema["properties"]["counterpart_name"]["maxLength"] = "two hundred"
    path.write_text(json.dumps(schema, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(StandardsError, match="counterpart_name"):
        Standards.load(copy_root)


def test_x_keyword_naming_an_unknown_field_stops_loading(copy_root: Path) -> None:
    path = copy_root / "administrative_penalty" / "1.0.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    schema["x-decision-date"] = "no_such_field"
    path.write_text(json.dumps(schema, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(StandardsError, match="no_such_field"):
        Standards.load(copy_root)


def test_broken_standard_stops_the_app_boot(copy_root: Path, tmp_path: Path) -> None:
    (copy_root / "administrative_penalty" / "1.0.json").write_text("[]", encoding="utf-8")
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'boot.db'}",
        schemas_dir=copy_root,
        secrets_file=tmp_path / "s.json",
    )
    with pytest.raises(StandardsError):
        create_app(settings)


def test_unlisted_schema_file_is_refused(copy_root: Path) -> None:
    shutil.copy(
        copy_root / "administrative_penalty" / "1.0.json",
        copy_root / "administrative_penalty" / "1.1.json",
    )
    with pytest.raises(StandardsError, match=r"1\.1\.json"):
        Standards.load(copy_root)


def _publish_second_version(root: Path, *, sunset: str) -> None:
    folder = root / "administrative_penalty"
    schema = json.loads((folder / "1.0.json").read_text(encoding="utf-8"))
    schema["$id"] = schema["$id"].replace("1.0.json", "1.1.json")
    schema["x-version"] = "1.1"
    (folder / "1.1.json").write_text(json.dumps(schema, ensure_ascii=False), encoding="utf-8")
    index = json.loads((folder / "versions.json").read_text(encoding="utf-8"))
    index["versions"][0] |= {"status": "deprecated", "sunset_on": sunset}
    index["versions"].append(
        {
            "version": "1.1",
            "status": "current",
            "published_on": "2026-10-01",
            "sunset_on": None,
            "file": "1.1.json",
        }
    )
    (folder / "versions.json").write_text(json.dumps(index), encoding="utf-8")


def test_deprecated_version_is_accepted_with_a_warning_until_sunset(copy_root: Path) -> None:
    _publish_second_version(copy_root, sunset="2027-01-01")
    standard = Standards.load(copy_root).get("administrative_penalty")
    assert standard.current.version == "1.1"
    old = standard.version("1.0", date(2026, 12, 31))
    assert old.warnings(date(2026, 12, 31))
    assert "deprecated" in old.warnings(date(2026, 12, 31))[0]
    assert standard.current.warnings(date(2026, 12, 31)) == []
    with pytest.raises(StandardNotFound):
        standard.version("1.0", date(2027, 1, 1))


def test_unknown_standard_and_version(schemas_root: Path) -> None:
    standards = Standards.load(schemas_root)
    with pytest.raises(StandardNotFound):
        standards.get("tax_rating")
    with pytest.raises(StandardNotFound):
        standards.resolve("administrative_penalty", "9.9")
