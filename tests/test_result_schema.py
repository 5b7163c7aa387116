"""docs/formats.md against the one schema of ``benchsvc-result/1`` (benchsvc/store/result_schema.py): every
field of the schema is documented, every documented field is in the schema, with the same required-ness and
the same string length limits."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, StringConstraints

from benchsvc.store.result_schema import object_models, schema_fields

DOC = Path(__file__).resolve().parent.parent / "docs" / "formats.md"


def _documented() -> dict[str, dict[str, tuple[bool, int | None]]]:
    """The field tables of the JSON Lines section: object label ("" for the line) -> field -> (required,
    documented length limit)."""
    text = DOC.read_text()
    section = text[text.index("### Fields") : text.index("### Example")]
    tables: dict[str, dict[str, tuple[bool, int | None]]] = {}
    label = ""
    for line in section.splitlines():
        heading = re.match(r"^`([a-z_]+(?:\[i\])?)`[ ,:]", line)
        if heading and not line.startswith("|"):
            label = heading.group(1)
            continue
        row = re.match(r"^\| (`[^|]+`) \| ([^|]+) \| ([^|]+) \|", line)
        if not row:
            continue
        names = re.findall(r"`([a-z_]+)`", row.group(1))
        required = row.group(3).strip().startswith("yes")
        limit = re.search(r"≤ (\d+)\)", row.group(2))
        for name in names:
            tables.setdefault(label, {})[name] = (required, int(limit.group(1)) if limit else None)
    return tables


def _max_length(model: type[BaseModel], name: str) -> int | None:
    for meta in model.model_fields[name].metadata:
        if isinstance(meta, StringConstraints):
            return meta.max_length
    annotation = model.model_fields[name].annotation
    for arg in getattr(
        annotation, "__args__", ()
    ):  # an optional string: its constraints sit on the union arm
        for meta in getattr(arg, "__metadata__", ()):
            if isinstance(meta, StringConstraints):
                return meta.max_length
    return None


def test_formats_md_documents_exactly_the_schema() -> None:
    documented = _documented()
    schema = schema_fields()
    assert sorted(documented) == sorted(schema)  # one table per object of the line
    for label, fields in schema.items():
        doc = documented[label]
        assert sorted(doc) == sorted(fields), f"{label or 'the line'}: documented {sorted(doc)}"
        for name, required in fields.items():
            assert doc[name][0] == required, f"{label}.{name}: documented required={doc[name][0]}"
            limit = doc[name][1]
            if limit is not None:
                assert _max_length(object_models()[label], name) == limit, (
                    f"{label}.{name}: documented ≤ {limit}"
                )


def test_every_string_limit_is_a_column_length() -> None:
    """The limits the tables document are the database's: a line that passes fits the store."""
    from benchsvc.store.result_schema import LIMITS

    documented = _documented()
    for key, limit in LIMITS.items():
        label, _, name = key.rpartition(".")
        if name in documented.get(label, {}) and documented[label][name][1] is not None:
            assert documented[label][name][1] == limit, key
