"""The registry of patch versions: one module per version in this package, found automatically.

A version module defines one :class:`~benchsvc.engine.model.ZapEngine` subclass with ``id``, ``parent``,
``title``, ``source`` and ``date``. :func:`all_versions` lists them parents first (the lineage order).
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from benchsvc.engine.model import ZapEngine
from benchsvc.errors import UnknownVersionError


@cache
def registry() -> dict[str, type[ZapEngine]]:
    found: dict[str, type[ZapEngine]] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, ZapEngine)
                and obj.__module__ == module.__name__
                and obj.id
            ):
                if obj.id in found:
                    raise RuntimeError(f"version id {obj.id!r} defined twice")
                found[obj.id] = obj
    for cls in found.values():
        if cls.parent is not None and cls.parent not in found:
            raise RuntimeError(f"version {cls.id!r} has unknown parent {cls.parent!r}")
    ordered: list[str] = []

    def visit(vid: str) -> None:
        if vid in ordered:
            return
        parent = found[vid].parent
        if parent is not None:
            visit(parent)
        ordered.append(vid)

    for vid in sorted(found, key=lambda v: (found[v].date, v)):
        visit(vid)
    return {vid: found[vid] for vid in ordered}


def all_versions() -> list[type[ZapEngine]]:
    return list(registry().values())


def version_ids() -> list[str]:
    return list(registry())


def get_version(vid: str) -> type[ZapEngine]:
    try:
        return registry()[vid]
    except KeyError:
        known = ", ".join(registry())
        raise UnknownVersionError(
            f"unknown version {vid!r} (known: {known}; see benchsvc versions)"
        ) from None


def resolve_versions(requested: list[str] | None) -> list[str]:
    """Version ids from ``--version`` values: repeated ids, comma lists, or ``all``; lineage order kept."""
    if not requested or "all" in requested:
        return version_ids()
    out: list[str] = []
    for item in requested:
        for vid in item.split(","):
            vid = vid.strip()
            if vid:
                get_version(vid)
                if vid not in out:
                    out.append(vid)
    return out
