"""Stored strings made safe for where they are shown: a terminal and a spreadsheet.

Hostnames, triggers, commits, pyperf warnings and notes come from imported files and from users; printed as
they are, ``ESC ] 0 ;`` retitles a terminal and ``ESC [ 2 J`` clears it, and a CSV cell ``=HYPERLINK(...)``
is a formula to a spreadsheet (OWASP "CSV injection"). docs/formats.md, "Command output".
"""

from __future__ import annotations

import re
from typing import Any

#: what a spreadsheet reads as the start of a formula (OWASP CSV injection)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

# ESC sequences first (CSI ``ESC [ ... final``, OSC ``ESC ] ... BEL|ST``, DCS/SOS/PM/APC strings, other
# two-byte ``ESC x``), the 8-bit CSI and OSC introducers likewise, then the remaining C0 (but tab and
# newline), DEL and C1 characters
_CONTROLS = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"
    r"|\x1b\][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[PX^_][^\x1b\x9c]*(?:\x1b\\|\x9c)?"
    r"|\x1b[ -~]?"
    r"|\x9b[0-?]*[ -/]*[@-~]?"
    r"|\x9d[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)


def clean(text: Any) -> str:
    """``text`` without terminal control characters (C0 but tab and newline, DEL, C1, whole ESC sequences):
    what a table, a header line or a note may print of a stored string."""
    return _CONTROLS.sub("", str(text))


def neutralise_formula(text: str) -> str:
    """A CSV text cell a spreadsheet does not run: one that begins like a formula gets a leading ``'``."""
    return "'" + text if text.startswith(FORMULA_START) else text
