"""Units people write and read: durations like `90s` or `1h30m`, counts like `4k`.

Plain functions on strings and numbers; every parse error is a `SettingError` that shows
an example of what would have been understood.
"""

from __future__ import annotations

import re

from textgen.errors import SettingError


def count(n: float) -> str:
    """A count as people read it at a glance, in the units `parse_count` reads (k = 1,000):
    1234 -> '1.2k', 2_500_000 -> '2.5M', 999 -> '999'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}"


def plural(n: int, word: str) -> str:
    """1 word, 2 words, 1,000 words; 2 processes."""
    if n == 1:
        return f"{n:,} {word}"
    return f"{n:,} {word}" + ("es" if word.endswith(("s", "sh", "ch", "x")) else "s")


_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
_SIZE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}


def parse_duration(text: str) -> float:
    """'90s' -> 90.0, '5m' -> 300.0, '1.5h' -> 5400.0, '1h30m' -> 5400.0, '45' -> 45.0."""
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text.strip().lower())
    joined = "".join(f"{n}{u}" for n, u in parts)
    if not parts or joined != re.sub(r"\s+", "", text.strip().lower()):
        raise SettingError(f"cannot read {text!r} as a duration; try 90s, 5m, 1h30m")
    total = 0.0
    for number, unit in parts:
        if unit not in _DURATION_UNITS:
            raise SettingError(f"unknown time unit {unit!r} in {text!r}; use s, m, h or d")
        total += float(number) * _DURATION_UNITS[unit]
    if total <= 0:
        raise SettingError(f"duration {text!r} must be positive")
    return total


def parse_count(text: str) -> int:
    """'4k' -> 4000, '2M' -> 2000000, '512' -> 512: k, M and G are powers of ten, as for
    every count textgen reads and writes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)", text.strip().lower())
    if not match:
        raise SettingError(f"cannot read {text!r} as a count; try 512, 4k or 2M")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])


def format_duration(seconds: float) -> str:
    """90 -> '1m30s', 3725 -> '1h02m', 12.3 -> '12.3s'."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
