"""A small flame graph renderer (SVG, no dependencies): root at the bottom, width ∝ count.

Our own layout after flamegraph.pl's conventions: one row per stack depth, frames sorted by
name within their parent, a <title> on every box giving `name (N samples, P%)` for tooltips.
"""

from __future__ import annotations

from collections import Counter
from html import escape

from kvmsim.trace.stacks import Stack

WIDTH, ROW, PAD, FONT = 1200, 16, 10, 12


def _tree(hist: Counter[Stack]) -> dict:
    root: dict = {"n": 0, "kids": {}}
    for stack, count in hist.items():
        node = root
        node["n"] += count
        for frame in reversed(stack):            # root first
            node = node["kids"].setdefault(frame, {"n": 0, "kids": {}})
            node["n"] += count
    return root


def render_svg(hist: Counter[Stack], title: str = "Flame Graph") -> str:
    root = _tree(hist)
    total = root["n"] or 1
    depth = max((len(s) for s in hist), default=0)
    height = (depth + 1) * ROW + 3 * PAD + FONT
    scale = (WIDTH - 2 * PAD) / total
    boxes: list[str] = []

    def walk(node: dict, name: str, x: float, level: int) -> None:
        w = node["n"] * scale
        y = height - PAD - (level + 1) * ROW
        hue = 20 + (sum(map(ord, name)) * 7) % 40       # flamegraph.pl's warm palette, stable per name
        label = escape(name) if w > 7 * len(name) * 0.6 else ""
        boxes.append(f'<g><title>{escape(name)} ({node["n"]} samples, {100 * node["n"] / total:.2f}%)</title>'
                     f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{ROW - 1}" fill="hsl({hue},90%,60%)"/>'
                     f'<text x="{x + 3:.2f}" y="{y + ROW - 4}">{label}</text></g>')
        cx = x
        for kid_name in sorted(node["kids"]):
            kid = node["kids"][kid_name]
            walk(kid, kid_name, cx, level + 1)
            cx += kid["n"] * scale

    x = float(PAD)
    for name in sorted(root["kids"]):
        walk(root["kids"][name], name, x, 0)
        x += root["kids"][name]["n"] * scale
    return (f'<?xml version="1.0" standalone="no"?>\n'
            f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{WIDTH}" height="{height}" '
            f'font-family="monospace" font-size="{FONT}">\n'
            f'<text x="{WIDTH // 2}" y="{PAD + FONT}" text-anchor="middle">{escape(title)}</text>\n'
            + "\n".join(boxes) + "\n</svg>\n")
