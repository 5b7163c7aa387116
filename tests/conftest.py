"""Shared helpers for the engine and workload tests."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchsvc.workload import WorkloadSpec, parse_workload, shipped_workloads_dir

WORKLOADS = shipped_workloads_dir()


def load_variant(stem: str, *, size: str | None = None, va_offset: str | None = None) -> WorkloadSpec:
    """A shipped workload, optionally with another ``layout.size`` / ``layout.va_offset``, parsed from TOML."""
    text = (WORKLOADS / f"{stem}.toml").read_text()
    name = stem
    if size is not None:
        text, k = re.subn(r'(?m)^size = "[^"]*"$', f'size = "{size}"', text)
        assert k == 1, f"{stem}: no unique layout.size line"
        name += f"-{size}"
    if va_offset is not None:
        text, k = re.subn(r'(?m)^va_offset = "[^"]*"$', f'va_offset = "{va_offset}"', text)
        assert k == 1, f"{stem}: no unique layout.va_offset line"
        name += f"-off{va_offset}"
    return parse_workload(text.encode(), name=name)


@pytest.fixture(scope="session")
def shipped_workloads() -> list[Path]:
    return sorted(WORKLOADS.glob("*.toml"))
