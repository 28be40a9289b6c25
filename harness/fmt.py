"""Numbers in and out of the harness: coercion of loosely typed values (JSON,
pandas cells) to floats, and their formatting in report tables. A leaf:
imports nothing from the harness."""

from __future__ import annotations

import math


def number(v) -> float:
    """A real number as float; NaN for None, NaN, bools, strings and the rest."""
    if isinstance(v, bool) or v is None:
        return math.nan
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x


def optional(v) -> float | None:
    """Like number(), but None where number() gives NaN."""
    x = number(v)
    return None if math.isnan(x) else x


def cell(v, unit: str = "") -> str:
    """A table cell: n/a for missing, fractions to 4 places when unitless,
    otherwise 4 significant digits (thousands separated from 1e5 up)."""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v}"
    x = number(v)
    if math.isnan(x):
        return "n/a"
    if unit == "" and 0 <= x <= 1:
        return f"{x:.4f}"
    return f"{x:.4g}" if abs(x) < 1e5 else f"{x:,.0f}"


def interval(value, low, high, unit: str = "x") -> str:
    """``value [low, high]``, or just the value when the interval is unknown."""
    if optional(low) is None or optional(high) is None:
        return cell(value, unit)
    return f"{cell(value, unit)} [{cell(low, unit)}, {cell(high, unit)}]"
