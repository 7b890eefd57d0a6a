"""Pictures of what the terminal views show, for a page or a post (`--save FILE.png|svg`):
attention patterns, the logit lens, a map of the embedding space and the loss curves.

Drawn with matplotlib's object API (no pyplot, so no window and no global state), every
picture at one size, SIZE_INCHES at DPI (1200 x 750 pixels as PNG). matplotlib is the
optional `plot` extra. Inputs are plain numbers and strings; imports no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from textgen.errors import SettingError, TextgenError, install_hint
from textgen.files import atomic_write
from textgen.store.guard import check_new_file

SIZE_INCHES = (8.0, 5.0)
DPI = 150
FORMATS = ("png", "svg")
INSTALL = f"pictures need matplotlib: {install_hint('plot')}"


def check_picture_path(path: Path, overwrite: bool) -> str:
    """The format of a --save path (from its suffix); refuses to replace a file unasked."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise SettingError(f"--save {path}: name a .png or .svg file")
    check_new_file(path, "--save", "a .png or .svg file", overwrite)
    _figure_class()  # say now, before any work, if matplotlib is missing
    return suffix


def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise TextgenError(INSTALL) from None
    return Figure


def _new_figure(**layout: Any) -> Any:
    figure = _figure_class()(figsize=SIZE_INCHES, dpi=DPI, layout="constrained", **layout)
    figure.set_facecolor("white")
    return figure


def save_figure(figure: Any, path: Path) -> None:
    """Write the figure atomically, in the format its suffix names."""
    fmt = path.suffix.lower().lstrip(".")
    atomic_write(path, lambda tmp: figure.savefig(tmp, format=fmt, dpi=DPI))


def _token_axis(axis: Any, which: str, labels: Sequence[str], first: int) -> None:
    """Tick every token (every few, when many), labelled with its text and position."""
    step = max(1, math.ceil(len(labels) / 32))
    ticks = list(range(0, len(labels), step))
    texts = [f"{labels[i]} {first + i}" if which == "y" else labels[i] for i in ticks]
    size = 8 if len(labels) <= 24 else 6
    if which == "x":
        axis.set_xticks(ticks, texts, rotation=90, fontsize=size)
    else:
        axis.set_yticks(ticks, texts, fontsize=size)


def attention_picture(
    patterns: Sequence[Sequence[Sequence[float]]],
    heads: Sequence[int],
    labels: Sequence[str],
    first: int,
    layer: int,
) -> Any:
    """Each head's pattern as a heatmap, queries down and keys across, future keys blank;
    one shared colour bar of the attention weight."""
    import numpy as np

    figure = _new_figure()
    columns = math.ceil(math.sqrt(len(heads)))
    rows = math.ceil(len(heads) / columns)
    axes = figure.subplots(rows, columns, squeeze=False)
    image = None
    for n, axis in enumerate(axes.flat):
        if n >= len(heads):
            axis.set_axis_off()
            continue
        matrix = np.array(patterns[n], dtype=float)
        matrix[np.triu_indices_from(matrix, k=1)] = np.nan  # the future: masked
        image = axis.imshow(matrix, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
        axis.set_title(f"head {heads[n]}", fontsize=10)
        if len(heads) == 1 or len(labels) <= 16:
            _token_axis(axis, "x", labels, first)
            _token_axis(axis, "y", labels, first)
        axis.set_xlabel("key (attended to)", fontsize=8)
        axis.set_ylabel("query (attending)", fontsize=8)
    figure.suptitle(f"Attention, layer {layer}: where each token looks")
    figure.colorbar(image, ax=axes, label="attention weight", shrink=0.8)
    return figure


def lens_picture(
    probs: Sequence[Sequence[float]],
    predicted: Sequence[Sequence[str]],
    depths: Sequence[str],
    labels: Sequence[str],
    first: int,
) -> Any:
    """Depths down (the model's output at the bottom), positions across; each cell the
    token predicted there, on a colour of its probability."""
    import numpy as np

    figure = _new_figure()
    axis = figure.subplots()
    image = axis.imshow(np.array(probs), cmap="magma", vmin=0.0, vmax=1.0, aspect="auto")
    size = 8 if len(labels) <= 12 else 6 if len(labels) <= 20 else 5
    for d, row in enumerate(predicted):
        for p, text in enumerate(row):
            colour = "black" if probs[d][p] > 0.6 else "white"
            axis.text(p, d, text, ha="center", va="center", fontsize=size, color=colour)
    axis.set_xticks(range(len(labels)), [f"{t}\n{first + i}" for i, t in enumerate(labels)])
    axis.tick_params(axis="x", labelsize=size + 1)
    axis.set_yticks(range(len(depths)), list(depths[:-1]) + [f"{depths[-1]} (output)"])
    axis.set_xlabel("position: the token read there")
    axis.set_ylabel("depth of the residual stream")
    axis.set_title("Logit lens: the next token each depth would predict")
    figure.colorbar(image, ax=axis, label="probability of the top prediction")
    return figure


def embedding_picture(
    background: Sequence[Sequence[float]],
    labelled: Sequence[tuple[Sequence[float], str, str]],
    explained: float,
    title: str,
) -> Any:
    """Every token's embedding as a grey point on the first two principal components;
    `labelled` ((x, y), text, kind) points named, kind "query", "neighbour" or "frequent"."""
    figure = _new_figure()
    axis = figure.subplots()
    xs, ys = zip(*background, strict=True) if background else ((), ())
    axis.scatter(xs, ys, s=4, color="#c8c8c8", label="every token", linewidths=0)
    styles = {
        "frequent": ("#4a6fa5", 7, "frequent tokens"),
        "neighbour": ("#e07b00", 9, "nearest neighbours"),
        "query": ("#c0003c", 10, "the query"),
    }
    for kind, (colour, size, name) in styles.items():
        points = [(xy, text) for xy, text, k in labelled if k == kind]
        if not points:
            continue
        axis.scatter(
            [p[0][0] for p in points],
            [p[0][1] for p in points],
            s=size * 3,
            color=colour,
            label=name,
            zorder=3,
        )
        for (x, y), text in points:
            axis.annotate(
                text,
                (x, y),
                xytext=(3, 3),
                textcoords="offset points",
                fontsize=size - 1,
                color=colour,
                zorder=4,
            )
    axis.set_xlabel("first principal component")
    axis.set_ylabel("second principal component")
    axis.set_title(f"{title} ({explained:.0%} of the variance in these two directions)")
    axis.legend(loc="best", fontsize=8, markerscale=1.5)
    return figure


def loss_picture(metrics: Sequence[dict[str, Any]], name: str) -> Any:
    """Training and validation loss against the step, and validation bits per byte on a
    second axis."""
    figure = _new_figure()
    axis = figure.subplots()
    steps = [m["step"] for m in metrics]
    axis.plot(steps, [m["train_loss"] for m in metrics], marker=".", label="training loss")
    axis.plot(steps, [m["val_loss"] for m in metrics], marker=".", label="validation loss")
    axis.set_xlabel("step")
    axis.set_ylabel("loss (nats per token)")
    bpb = [m.get("val_bpb") for m in metrics]
    if all(b is not None for b in bpb) and metrics:
        right = axis.twinx()
        right.plot(steps, bpb, color="none")  # the same curve on the bits-per-byte scale
        low, high = axis.get_ylim()
        ratio = bpb[-1] / metrics[-1]["val_loss"] if metrics[-1]["val_loss"] else 1.0
        right.set_ylim(low * ratio, high * ratio)
        right.set_ylabel("validation bits per byte")
    kept = [m for m in metrics if m.get("kept")]
    if kept:
        best = kept[-1]
        axis.scatter(
            [best["step"]],
            [best["val_loss"]],
            s=60,
            color="gold",
            edgecolor="black",
            zorder=3,
            label="the weights kept",
        )
    axis.grid(alpha=0.3)
    axis.legend()
    axis.set_title(f"Training of {name}")
    return figure
