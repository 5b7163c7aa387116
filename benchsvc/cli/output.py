"""Rendering of rows for the terminal: a table, CSV or JSON (``--format``)."""

from __future__ import annotations

import csv
import enum
import json
import sys
from collections.abc import Sequence
from typing import Any


class Format(enum.StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


def render(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: Format, title: str | None = None
) -> None:
    """Print ``rows`` (dicts keyed by ``columns``) to stdout in the chosen format."""
    if fmt is Format.json:
        sys.stdout.write(json.dumps([{c: r.get(c) for c in columns} for r in rows], indent=2) + "\n")
        return
    if fmt is Format.csv:
        writer = csv.DictWriter(
            sys.stdout, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n"
        )
        writer.writeheader()
        for r in rows:
            writer.writerow(
                {c: " ".join(map(str, v)) if isinstance(v, list | tuple) else v for c, v in r.items()}
            )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for c in columns:
        numeric = bool(rows) and all(isinstance(r.get(c), int | float) for r in rows)
        table.add_column(c, justify="right" if numeric else "left", overflow="fold")
    for r in rows:
        table.add_row(*[_cell(r.get(c)) for c in columns])
    console = Console(soft_wrap=False)
    if not console.is_terminal:  # logs and pipes: do not squeeze the table into 80 columns
        console = Console(soft_wrap=False, width=max(console.width, 200))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)
