"""How the size of a recorded finding reads, the same in the terminal, the report and the feed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def signed_count(x: Any) -> str:
    """``+1,024`` for whole numbers, ``+3.5`` otherwise."""
    x = float(x)
    return f"{int(x):+,}" if x.is_integer() else f"{x:+,.1f}"


def finding_size(
    details: Mapping[str, Any] | None, effect: float, ci_low: float | None, ci_high: float | None
) -> str:
    """Exact findings (counters, cost): the signed difference. Timings: the relative change and its interval."""
    d = details or {}
    if d.get("kind") == "machine":
        return machine_event_text(effect, d)
    if d.get("kind") == "creep":
        return creep_text(effect, d)
    if d.get("kind") in ("exact", "counter"):
        return signed_count(d.get("delta", 0))
    if ci_low is not None and ci_low == ci_low and ci_high is not None:
        return f"{effect - 1:+.1%} [{ci_low - 1:+.1%}, {ci_high - 1:+.1%}]"
    return f"{effect - 1:+.1%}"


def creep_text(effect: float, details: Mapping[str, Any]) -> str:
    """``creep +0.30% a night since 2026-01-21, +21.0% so far (55 nights)``."""
    rate = details.get("rate")
    text = "creep"
    if rate is not None and _number(rate):
        text += f" {float(rate):+.2%} a night"
    if details.get("night_start"):
        text += f" since {str(details['night_start'])[:10]}"
    text += f", {effect - 1:+.1%} so far"
    if details.get("nights"):
        text += f" ({details['nights']} nights)"
    return text


def machine_event_text(effect: float, details: Mapping[str, Any]) -> str:
    """``machine event: every series 8.0% slower tonight, 4.1× this machine's usual wander of ±1.9% (97 of
    100 series moved, canary +7.6%)``; the wander part only when the event recorded one."""
    word = "slower" if effect > 1 else "faster"
    text = f"machine event: every series {abs(effect - 1):.1%} {word} tonight"
    wander, sigmas = details.get("wander"), details.get("sigmas")
    if wander is not None and _number(wander):
        if sigmas is not None and _number(sigmas):
            text += f", {float(sigmas):.1f}× this machine's usual wander of ±{float(wander):.1%}"
        else:
            text += f", this machine's usual wander ±{float(wander):.1%}"
    extra = []
    if details.get("series_total"):
        extra.append(f"{details.get('series_moved')} of {details['series_total']} series moved")
    if details.get("canary_ratio") is not None:
        extra.append(f"canary {float(details['canary_ratio']) - 1:+.1%}")
    return f"{text} ({', '.join(extra)})" if extra else text


def _number(x: Any) -> bool:
    """A finite number (not None, not NaN)."""
    try:
        return (
            x is not None
            and not isinstance(x, bool)
            and float(x) == float(x)
            and abs(float(x)) != float("inf")
        )
    except (TypeError, ValueError):
        return False
