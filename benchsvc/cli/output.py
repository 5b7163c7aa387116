"""Rendering of rows for the terminal: a table, CSV or JSON (``--format``).

Every command prints through :func:`render`, so the three formats follow one set of rules
(docs/formats.md, "Command output"):

* **table** (for people): numbers by significant digits and units. A column of durations picks one unit
  (s, ms, µs or ns) for all its cells and names it in the header; ratios and intervals have 3 significant
  digits; counters are integers with thousands separators. Every string is stripped of terminal control
  characters (C0 but tab and newline, DEL, C1, whole ESC sequences) and printed as plain text, never as
  markup: a hostile hostname or note cannot retitle or clear the terminal.
* **json** (for programs): RFC 8259 — a missing or undefined number is ``null``, never ``NaN`` or
  ``Infinity``; timestamps are ISO 8601 with their zone (the store keeps UTC).
* **csv** (for spreadsheets): a text cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
  return is prefixed with ``'`` so that no spreadsheet runs it as a formula (numbers stay numbers).
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from benchsvc.safe_text import clean, neutralise_formula

__all__ = ["clean"]  # re-exported: the commands strip stored strings through this module


class Format(enum.StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


class Kind(enum.StrEnum):
    """How a table column's numbers read (``kinds`` of :func:`render`)."""

    #: a duration in seconds: one unit per column (s/ms/µs/ns), named in the header
    seconds = "seconds"
    #: a duration in nanoseconds (the modelled cost): shown like ``seconds``
    nanoseconds = "nanoseconds"
    #: a ratio: 3 significant digits (1.04, 0.946, 12.3)
    ratio = "ratio"
    #: a count: an integer with thousands separators
    integer = "integer"
    #: a share: a percentage with 3 significant digits
    percent = "percent"


@dataclass(frozen=True)
class Spread:
    """A value ± a spread (mean ± standard deviation), in the unit of its column."""

    value: Any
    spread: Any


@dataclass(frozen=True)
class Interval:
    """A closed interval [low, high], in the unit of its column (a ratio interval by default)."""

    low: Any
    high: Any


#: significant digits of every formatted number
DIGITS = 3

_UNITS = (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9))


def render(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    fmt: Format,
    title: str | None = None,
    kinds: Mapping[str, Kind] | None = None,
) -> None:
    """Print ``rows`` (dicts keyed by ``columns``) to stdout in the chosen format.

    ``kinds`` says how a column's numbers read in a table (durations, ratios, counts); a column without one
    is read from its values (an integer is a count, a float gets 3 significant digits)."""
    if fmt is Format.json:
        data = [{c: json_value(r.get(c)) for c in columns} for r in rows]
        write_json(data)
        return
    if fmt is Format.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([csv_cell(c) for c in columns])
        for r in rows:
            writer.writerow([csv_cell(r.get(c)) for c in columns])
        return
    _print_table(rows, columns, title, kinds or {})


def write_json(data: Any) -> None:
    """The one place JSON reaches stdout: strict RFC 8259 (``allow_nan=False``: a NaN left in ``data`` is a
    bug that fails loudly instead of printing what a JSON parser rejects)."""
    sys.stdout.write(json.dumps(json_value(data), indent=2, allow_nan=False) + "\n")


def json_value(value: Any) -> Any:
    """``value`` as plain JSON: NaN and infinities become None, numpy/pandas scalars Python numbers,
    timestamps ISO 8601 strings with their zone (a naive one is UTC, as the store keeps it)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if _is_missing(value):  # NaN of numpy, pandas NA and NaT (a datetime)
        return None
    if isinstance(value, dt.datetime):
        return iso_time(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Spread):
        return {"value": json_value(value.value), "spread": json_value(value.spread)}
    if isinstance(value, Interval):
        return [json_value(value.low), json_value(value.high)]
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_value(v) for v in value]
    item = getattr(value, "item", None)  # numpy / pandas scalars
    if callable(item):
        return json_value(item())
    to_pydatetime = getattr(value, "to_pydatetime", None)  # pandas.Timestamp
    if callable(to_pydatetime):
        return json_value(to_pydatetime())
    return str(value)


def iso_time(value: dt.datetime) -> str:
    """ISO 8601 with the zone; a naive timestamp is UTC (the store keeps every timestamp in UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat()


def csv_cell(value: Any) -> Any:
    """One CSV cell: numbers as they are (a negative number stays a number), missing as empty, timestamps ISO
    8601, lists space-separated, and text that a spreadsheet would run as a formula prefixed with ``'``."""
    value = json_value(value)
    if value is None:
        return ""
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, list):
        text = " ".join("" if v is None else str(v) for v in value)
    elif isinstance(value, dict):
        text = json.dumps(value, allow_nan=False)
    else:
        text = str(value)
    return neutralise_formula(text)


def echo(text: str, *, err: bool = False) -> None:
    """Print one line of text that may hold stored strings, stripped of terminal control characters."""
    print(clean(text), file=sys.stderr if err else sys.stdout, flush=err)


def significant(value: float, digits: int = DIGITS) -> str:
    """``value`` to ``digits`` significant digits (never fewer decimals than that needs, never an exponent,
    thousands separated): 1.04 → "1.04", 0.0597 → "0.0597", 1234.5 → "1,234"."""
    if not math.isfinite(value):
        return "inf" if value > 0 else "-inf" if value < 0 else ""
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:,.{decimals}f}"


def count(value: Any) -> str:
    """A counter: an integer with thousands separators (an integral float prints without ``.0``)."""
    if _is_missing(value):
        return ""
    number = float(value)
    if not math.isfinite(number):
        return significant(number)
    if number == int(number):
        return f"{int(number):,}"
    return significant(number)


def time_unit(seconds: Sequence[Any]) -> tuple[str, float]:
    """The unit (name, seconds per unit) a column of durations in seconds reads best in: the largest unit in
    which the column's typical (median) magnitude is at least 1."""
    sizes = sorted(abs(float(v)) for v in seconds if not _is_missing(v) and math.isfinite(float(v)) and v)
    if not sizes:
        return _UNITS[1]
    typical = sizes[len(sizes) // 2]
    for unit in _UNITS:
        if typical >= unit[1]:
            return unit
    return _UNITS[-1]


def duration(seconds: Any) -> str:
    """One duration in seconds with its own unit: 5.97e-05 → "59.7 µs"."""
    if _is_missing(seconds):
        return ""
    name, scale = time_unit([seconds])
    return f"{significant(float(seconds) / scale)} {name}"


def quantity(value: Any, metric: str) -> str:
    """A value of ``metric`` with its unit: a time (seconds) or modelled cost (ns) as a duration, a counter
    as an integer."""
    if _is_missing(value):
        return ""
    if metric == "time":
        return duration(value)
    if metric == "modeled_ns":
        return duration(float(value) * 1e-9)
    return count(value)


def signed_quantity(value: Any, metric: str) -> str:
    """A difference of ``metric`` with its sign: "+1,023", "-2.05 µs"."""
    if _is_missing(value):
        return ""
    text = quantity(abs(float(value)), metric)
    return ("-" if float(value) < 0 else "+" if float(value) > 0 else "") + text


def ratio(value: Any) -> str:
    if _is_missing(value):
        return ""
    return significant(float(value))


def interval(low: Any, high: Any) -> str:
    """A ratio interval, both ends to the decimals the narrower-magnitude end needs: [0.946, 0.990]."""
    if _is_missing(low) or _is_missing(high):
        return ""
    lo, hi = float(low), float(high)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"[{significant(lo)}, {significant(hi)}]"
    decimals = max(_decimals(lo), _decimals(hi))
    return f"[{lo:,.{decimals}f}, {hi:,.{decimals}f}]"


def _decimals(value: float, digits: int = DIGITS) -> int:
    if value == 0:
        return digits - 1
    return max(0, digits - 1 - math.floor(math.log10(abs(value))))


def _is_missing(value: Any) -> bool:
    if value is None or type(value).__name__ == "NAType":  # pandas.NA
        return True
    try:
        return bool(value != value)  # NaN, pandas NA/NaT
    except (TypeError, ValueError):
        return False


def _print_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], title: str | None, kinds: Mapping[str, Kind]
) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=None if title is None else Text(clean(title)), show_lines=False)
    formatters = [_column_formatter(c, [r.get(c) for r in rows], kinds.get(c)) for c in columns]
    for header, _, numeric in formatters:
        table.add_column(Text(clean(header)), justify="right" if numeric else "left", overflow="fold")
    for r in rows:
        # Text, not str: a stored string is never read as rich markup ("[red]", "[/]")
        table.add_row(
            *[Text(clean(fmt(r.get(c)))) for c, (_, fmt, _) in zip(columns, formatters, strict=True)]
        )
    console = Console(soft_wrap=False)
    if not console.is_terminal:  # logs and pipes: do not squeeze the table into 80 columns
        console = Console(soft_wrap=False, width=max(console.width, 200))
    console.print(table)


def _column_formatter(name: str, values: list[Any], kind: Kind | None) -> tuple[str, Any, bool]:
    """(header, cell formatter, right-aligned) of one table column."""
    present = [v for v in values if not _is_missing(v)]
    if kind in (Kind.seconds, Kind.nanoseconds):
        to_s = 1e-9 if kind is Kind.nanoseconds else 1.0
        flat = [x * to_s for v in present for x in _numbers(v)]
        unit, scale = time_unit(flat)
        return f"{name} ({unit})", lambda v: _scaled(v, to_s / scale), True
    if kind is Kind.ratio:
        return name, lambda v: _scaled(v, 1.0), True
    if kind is Kind.integer:
        return name, count, True
    if kind is Kind.percent:
        return name, lambda v: "" if _is_missing(v) else f"{significant(float(v) * 100)}%", True
    numeric = bool(present) and all(
        (isinstance(v, int | float) and not isinstance(v, bool)) or _numpy_number(v) for v in present
    )
    return name, _cell, numeric


def _numbers(value: Any) -> list[float]:
    if isinstance(value, Spread):
        return [] if _is_missing(value.value) else [float(value.value)]
    if isinstance(value, Interval):
        return [float(x) for x in (value.low, value.high) if not _is_missing(x)]
    try:
        return [float(value)]
    except (TypeError, ValueError):
        return []


def _scaled(value: Any, factor: float) -> str:
    if isinstance(value, Spread):
        if _is_missing(value.value):
            return ""
        spread = "" if _is_missing(value.spread) else f" ± {significant(float(value.spread) * factor)}"
        return significant(float(value.value) * factor) + spread
    if isinstance(value, Interval):
        low = None if _is_missing(value.low) else float(value.low) * factor
        high = None if _is_missing(value.high) else float(value.high) * factor
        return interval(low, high)
    if _is_missing(value):
        return ""
    if isinstance(value, str):
        return value
    return significant(float(value) * factor)


def _numpy_number(value: Any) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "dtype") and value.dtype.kind in "iuf"


def _cell(value: Any) -> str:
    if _is_missing(value):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if _numpy_number(value):
        value = value.item()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return count(value) if value == int(value) and abs(value) < 2**53 else significant(value)
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo is None else value.astimezone(dt.UTC)).strftime("%Y-%m-%d %H:%M")
    if isinstance(value, Spread | Interval):
        return _scaled(value, 1.0)
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value)
    if hasattr(value, "to_pydatetime"):
        return _cell(value.to_pydatetime())
    return str(value)
