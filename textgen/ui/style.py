"""The visual vocabulary every screen shares: numbers people read at a glance, bars,
probability colours, attention shades.

Nothing here imports torch: the inputs are plain numbers and strings.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

from rich.text import Text

_BLOCKS = " ▏▎▍▌▋▊▉█"


def bar(fraction: float, width: int = 10) -> str:
    """A horizontal bar of `width` cells, in eighths of a cell."""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (_BLOCKS[part] if part else "")).ljust(width)


def percent(p: float) -> str:
    """0.423 -> ' 42%', 0.004 -> ' <1%'."""
    return " <1%" if 0 < p < 0.005 else f"{p:4.0%}"


def clip(text: str, width: int = 12) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# Probability bands, most likely first: (lower bound, style, legend label).
PROB_BANDS = [
    (0.5, "bold green", "≥50%"),
    (0.2, "green3", "20–50%"),
    (0.05, "yellow", "5–20%"),
    (0.01, "dark_orange", "1–5%"),
    (0.0, "bold red", "<1%"),
]

RenderToken = Callable[[int], str]


def prob_style(prob: float) -> str:
    return next(style for bound, style, _ in PROB_BANDS if prob >= bound)


def prob_legend(title: str = "model probability of each token") -> Text:
    legend = Text(f"{title}: ", style="dim")
    for _, style, label in PROB_BANDS:
        legend.append("■ ", style=style)
        legend.append(label + "  ", style="dim")
    return legend


def surprisal_legend() -> Text:
    legend = Text("surprisal, bits (−log₂ p): ", style="dim")
    for bound, style, _ in PROB_BANDS:
        label = f"<{-math.log2(bound):.1f}" if bound > 0 else f"≥{-math.log2(0.01):.1f}"
        legend.append("■ ", style=style)
        legend.append(label + "  ", style="dim")
    return legend


# C0 and C1 control characters but newline and tab, and DEL: a terminal would act on them
# (an escape sequence recolours, moves or clears; a bell rings), not show them.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible_controls(text: str) -> str:
    """Text safe to print on a terminal: control characters spelled out (`\x1b`), as
    `cat -v` would; pipes and files get the text as it is."""
    return _CONTROLS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def one_line(text: str) -> str:
    """Text on one terminal line: control characters spelled out, newlines as ↵."""
    return visible_controls(text.replace("\r\n", "\n")).replace("\n", "↵")


def coloured(pieces: Sequence[tuple[str, float]]) -> Text:
    """Text whose pieces are coloured by a probability: [(text, prob), ...]."""
    text = Text()
    for piece, prob in pieces:
        text.append(visible_controls(piece), style=prob_style(prob))
    return text


_SHADES = " ░▒▓█"


def shade(weight: float) -> tuple[str, str]:
    """A character and a background for an attention weight in [0, 1]."""
    level = min(len(_SHADES) - 1, int(math.sqrt(max(weight, 0.0)) * (len(_SHADES) - 1) + 0.5))
    grey = int(40 + 215 * math.sqrt(max(weight, 0.0)))
    return _SHADES[level] * 2, f"rgb({grey // 3},{grey // 2},{grey})"
