"""`textgen explore --html`: one self-contained HTML page to explore a text through the
model. The text's tokens are shaded by the probability the model gave them; hovering a
token shows the model's top candidates for that position; clicking it shows where every
head of every layer attends from it; below, the logit lens grid.

No network at view time and no server: the data is JSON inside the page, the script and
the styles are inline. Token texts reach the page only through `textContent`, never as
markup. Inputs are plain records; imports no torch.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from typing import Any

from textgen.records import Lens
from textgen.ui.style import PROB_BANDS

TokenText = Callable[[int], str]

# The terminal's probability bands (`textgen.ui.style.PROB_BANDS`) as light backgrounds.
_BAND_COLOURS = ["#9be39b", "#cdeeb0", "#fff1a8", "#ffd1a1", "#ffb3b3"]


def page_data(
    model: str,
    lens: Lens,
    attention: list,
    token_text: TokenText,
    render: TokenText,
    generated_from: int | None,
) -> dict[str, Any]:
    """What the page shows, as plain JSON: per token its text, the probability the model
    gave it and the model's top candidates there; per query the attention of every layer
    and head; the lens's top prediction per depth and position."""
    tokens = []
    for n, token_id in enumerate(lens.token_ids):
        before = n - 1  # the position whose prediction this token answered
        if before >= 0:
            top = [[render(c.token_id), round(c.prob, 4)] for c in lens.top[-1][before]]
            prob = lens.next_prob[-1][before]
        else:
            top, prob = [], None
        tokens.append(
            {
                "text": token_text(token_id),
                "shown": render(token_id),
                "prob": None if prob is None else round(prob, 4),
                "top": top,
            }
        )
    return {
        "model": model,
        "first": lens.first_position,
        "dropped": lens.dropped_tokens,
        "generated_from": generated_from,
        "layers": len(lens.depths) - 1,
        "heads": len(attention[0][0]) if attention else 0,
        "tokens": tokens,
        "attention": attention,
        "bands": [
            [bound, colour, label]
            for (bound, _, label), colour in zip(PROB_BANDS, _BAND_COLOURS, strict=True)
        ],
        "lens": {
            "depths": lens.depths,
            "cells": [
                [[render(cell[0].token_id), round(cell[0].prob, 4)] for cell in row]
                for row in lens.top
            ],
        },
    }


def _script_json(data: dict[str, Any]) -> str:
    """JSON that cannot end the <script> element it sits in, whatever the tokens say."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def page(data: dict[str, Any], title: str) -> str:
    """The whole HTML document."""
    return (
        _TEMPLATE.replace("%TITLE%", html.escape(title))
        .replace("%STYLE%", _STYLE)
        .replace("%SCRIPT%", _SCRIPT)
        .replace("%DATA%", _script_json(data))
    )


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%TITLE%</title>
<style>%STYLE%</style>
</head>
<body>
<header>
  <h1>%TITLE%</h1>
  <p id="summary"></p>
  <p id="legend"></p>
</header>
<main>
  <section>
    <h2>The text, as the model read it</h2>
    <p class="hint">Each token is shaded by the probability the model gave it. Hover a token
    for the model's top candidates there; click it to see where each head attends from it.</p>
    <div id="text"></div>
  </section>
  <section>
    <h2>Attention <span id="attention-for"></span></h2>
    <div id="attention"><p class="hint">Click a token above.</p></div>
  </section>
  <section>
    <h2>Logit lens</h2>
    <p class="hint">The token each depth would predict next, if the model stopped there
    (the last row is the model's real prediction); darker is more probable.</p>
    <div id="lens"></div>
  </section>
</main>
<div id="tip" role="tooltip" hidden></div>
<script id="data" type="application/json">%DATA%</script>
<script>%SCRIPT%</script>
</body>
</html>
"""

_STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 2em auto; max-width: 72em;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
.hint, #summary { color: #666; font-size: 0.9em; }
#text { font-family: ui-monospace, monospace; white-space: pre-wrap; word-break: break-word;
        line-height: 1.9; border: 1px solid #ddd; border-radius: 6px; padding: 0.8em; }
.tok { border-radius: 3px; cursor: pointer; padding: 0.1em 0; }
.tok:hover { outline: 2px solid #555; }
.tok.selected { outline: 2px solid #c0003c; }
.tok.generated { text-decoration: underline dotted #555; }
.swatch { display: inline-block; padding: 0 0.5em; margin-right: 0.3em; border-radius: 3px;
          font-size: 0.85em; }
#tip { position: fixed; z-index: 10; background: #fff; border: 1px solid #999;
       border-radius: 6px; padding: 0.5em 0.7em; box-shadow: 0 2px 8px rgba(0,0,0,.2);
       font-size: 0.85em; pointer-events: none; min-width: 14em; }
#tip table { border-collapse: collapse; width: 100%; }
#tip td { padding: 0.05em 0.4em; font-family: ui-monospace, monospace; white-space: pre; }
#tip .bar { background: #4a6fa5; height: 0.7em; display: inline-block; }
#tip tr.actual td { font-weight: bold; color: #c0003c; }
#attention .grid { display: grid; gap: 0.6em; }
.head { border: 1px solid #ddd; border-radius: 6px; padding: 0.4em; font-size: 0.75em; }
.head h3 { margin: 0 0 0.3em; font-size: 1em; }
.head .keys { font-family: ui-monospace, monospace; white-space: pre-wrap;
              word-break: break-word; max-height: 9em; overflow-y: auto; }
.head .best { color: #555; margin-top: 0.3em; }
#lens { overflow-x: auto; }
#lens table { border-collapse: collapse; font-family: ui-monospace, monospace;
              font-size: 0.8em; }
#lens th { font-weight: normal; color: #555; padding: 0.2em 0.4em; white-space: pre; }
#lens td { padding: 0.2em 0.4em; white-space: pre; text-align: center; }
"""

_SCRIPT = r"""
"use strict";
const data = JSON.parse(document.getElementById("data").textContent);
const tip = document.getElementById("tip");

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}
function band(p) {
  for (const [bound, colour] of data.bands) if (p >= bound) return colour;
  return data.bands[data.bands.length - 1][1];
}
function pct(p) { return p < 0.005 && p > 0 ? "<1%" : Math.round(p * 100) + "%"; }

function summary() {
  const n = data.tokens.length;
  let s = `${data.model} · ${n} tokens · ${data.layers} layers × ${data.heads} heads`;
  if (data.first > 0) s += ` · the last ${n} positions of ${data.first + n}`;
  if (data.dropped) s += ` · ${data.dropped} earlier tokens left out for the context window`;
  if (data.generated_from !== null) s += " · dotted: generated by the model";
  document.getElementById("summary").textContent = s;
  const legend = document.getElementById("legend");
  legend.append(el("span", {}, "probability of each token: "));
  for (const [, colour, label] of data.bands) {
    const sw = el("span", {class: "swatch"}, label);
    sw.style.background = colour;
    legend.append(sw);
  }
}

function showTip(i, event) {
  const t = data.tokens[i];
  tip.replaceChildren();
  const head = t.prob === null
    ? "the first token: nothing before it to predict it"
    : `${t.shown}: ${pct(t.prob)}; the model's top candidates here:`;
  tip.append(el("div", {}, head));
  if (t.top.length) {
    const table = el("table", {class: "candidates"});
    for (const [text, p] of t.top) {
      const row = el("tr", text === t.shown ? {class: "actual"} : {});
      row.append(el("td", {}, text), el("td", {}, pct(p)));
      const cell = el("td");
      const bar = el("span", {class: "bar"});
      bar.style.width = Math.max(1, Math.round(p * 80)) + "px";
      cell.append(bar);
      row.append(cell);
      table.append(row);
    }
    tip.append(table);
  }
  tip.hidden = false;
  moveTip(event);
}
function moveTip(event) {
  const x = Math.min(event.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
  const y = Math.min(event.clientY + 14, window.innerHeight - tip.offsetHeight - 8);
  tip.style.left = Math.max(0, x) + "px";
  tip.style.top = Math.max(0, y) + "px";
}

function showAttention(i) {
  document.querySelectorAll(".tok.selected").forEach(n => n.classList.remove("selected"));
  document.querySelector(`.tok[data-i="${i}"]`).classList.add("selected");
  document.getElementById("attention-for").textContent =
    `from ${data.tokens[i].shown} (position ${data.first + i})`;
  const grid = el("div", {class: "grid"});
  grid.style.gridTemplateColumns = `repeat(${data.heads}, minmax(0, 1fr))`;
  data.attention[i].forEach((heads, layer) => heads.forEach((weights, h) => {
    const box = el("div", {class: "head", "data-layer": layer, "data-head": h});
    box.append(el("h3", {}, `layer ${layer}, head ${h}`));
    const keys = el("div", {class: "keys"});
    weights.forEach((w, k) => {
      const span = el("span", {title: `${data.tokens[k].shown}: ${pct(w)}`},
                      data.tokens[k].text);
      span.style.background = `rgba(192, 0, 60, ${Math.sqrt(w).toFixed(3)})`;
      keys.append(span);
    });
    box.append(keys);
    const order = weights.map((w, k) => [w, k]).sort((a, b) => b[0] - a[0]).slice(0, 3);
    box.append(el("div", {class: "best"},
      order.map(([w, k]) => `${data.tokens[k].shown} ${pct(w)}`).join(" · ")));
    grid.append(box);
  }));
  document.getElementById("attention").replaceChildren(grid);
}

function text() {
  const box = document.getElementById("text");
  data.tokens.forEach((t, i) => {
    const span = el("span", {class: "tok", "data-i": i}, t.text);
    if (t.prob !== null) span.style.background = band(t.prob);
    if (data.generated_from !== null && i >= data.generated_from) span.classList.add("generated");
    span.addEventListener("mouseenter", e => showTip(i, e));
    span.addEventListener("mousemove", moveTip);
    span.addEventListener("mouseleave", () => { tip.hidden = true; });
    span.addEventListener("click", () => showAttention(i));
    box.append(span);
  });
}

function lens() {
  const table = el("table");
  const header = el("tr");
  header.append(el("th", {}, "depth \\ reads"));
  data.tokens.forEach(t => header.append(el("th", {}, t.shown)));
  table.append(header);
  data.lens.cells.forEach((row, d) => {
    const tr = el("tr");
    const last = d === data.lens.cells.length - 1;
    tr.append(el("th", {}, data.lens.depths[d] + (last ? " = output" : "")));
    row.forEach(([text, p], i) => {
      const td = el("td", {title: `${pct(p)}`}, text);
      const light = Math.round(100 - 55 * p);
      td.style.background = `hsl(215, 60%, ${light}%)`;
      td.style.color = light < 60 ? "#fff" : "#222";
      const next = data.tokens[i + 1];
      if (next && next.shown === text) td.style.fontWeight = "bold";
      tr.append(td);
    });
    table.append(tr);
  });
  document.getElementById("lens").append(table);
}

summary();
text();
lens();
"""
