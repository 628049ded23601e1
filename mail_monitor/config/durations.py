"""Durations as the configuration writes them ("90s", "5m", "1h") and as people read them."""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"^\s*(\d{1,15}(?:\.\d{1,20})?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds from "90s", "5m", "1h", "1.5d", "250ms" or a plain number.

    Raises ValueError for anything else, including negative, infinite and NaN values
    and integers too large for a float; bounds per key are the schema's business.
    """
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        if not 0 <= value < 10**15:
            raise ValueError
        return float(value)
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0:
            raise ValueError
        return value
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError


def format_duration(seconds: float) -> str:
    """The shortest spelling the parser reads back: "3m", "1d", "250ms", "1.5s"."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    seconds = float(seconds)
    if seconds.is_integer():
        return f"{int(seconds)}s"
    millis = seconds * 1000
    if seconds < 1 and millis.is_integer() and parse_duration(f"{int(millis)}ms") == seconds:
        return f"{int(millis)}ms"
    text = repr(seconds)
    if "e" in text:  # below 1e-4 s: never a valid setting, but still no exponent the parser refuses
        text = f"{seconds:.20f}"
    return f"{text}s"


def human_duration(seconds: float) -> str:
    """For people: "1d 2h 5m", "12m", "40s" (whole minutes once past the first one)."""
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    text = " ".join(p for p in parts if p)
    return text or f"{secs}s"
