"""The staff dashboard's load chart: an SVG drawn on the server, no script, no external files.

One row per member: a grey bar for the hours they held in the four weeks before the rolling
window, a blue one for the window itself (this week and the three after it); a bar beyond
their capacity is red and marked "over"; a dashed line marks four weeks of their weekly
capacity. Every bar carries its number as text, so nothing is told by colour alone; the
`<title>` and `<desc>` say it all in words for screen readers, and the page puts the same
numbers in a table next to it.

Colours are fixed (the SVG sits on white in both light and dark page themes) and contrast at
least 4.5:1 with white: #0b5394 (7.8:1), #595959 (7:1), #a4161a (7.7:1); the grid lines are
decoration (every value is written out).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from plugin.services.dashboard import MemberLoad

__all__ = ["hours_text", "load_chart_svg"]

WIDTH = 680
LABEL_WIDTH = 150
VALUE_ROOM = 110  # right of the longest bar: its number and "over"
TOP = 44  # legend
ROW = 58
BAR = 16
INK = "#111111"
PAST = "#595959"
COMING = "#0b5394"
OVER = "#a4161a"

_WORDS = {
    "da": {
        "title": "Belastning mod kapacitet",
        "past": "4 uger før",
        "coming": "Denne og 3 næste uger",
        "capacity": "Kapacitet (4 uger)",
        "over": "over",
        "unit": "t",
        "none": "ingen kapacitet angivet",
        "desc": "{name}: {coming} i denne og de tre næste uger, {past} i de fire uger før; {cap}.",
        "cap": "kapacitet {hours}",
        "hours": "{n} timer",
        "hour": "{n} time",
    },
    "en": {
        "title": "Load against capacity",
        "past": "4 weeks before",
        "coming": "This and next 3 weeks",
        "capacity": "Capacity (4 weeks)",
        "over": "over",
        "unit": "h",
        "none": "no capacity given",
        "desc": "{name}: {coming} this week and the next three, {past} in the four weeks "
        "before; {cap}.",
        "cap": "capacity {hours}",
        "hours": "{n} hours",
        "hour": "{n} hour",
    },
}


def hours_text(hours: float, language: str) -> str:
    """`hours_text(1.5, "da")` is "1,5"; whole hours have no decimals."""
    text = f"{hours:.0f}" if float(hours).is_integer() else f"{hours:.1f}"
    return text.replace(".", ",") if language == "da" else text


def _step(top: float) -> float:
    """A round tick step giving about four ticks up to `top`."""
    raw = top / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    return float(next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw))


def load_chart_svg(loads: Sequence[MemberLoad], language: str) -> str:
    words = _WORDS[language]
    unit = words["unit"]
    peak = max(
        [1.0]
        + [max(x.previous.hours, x.current.hours) for x in loads]
        + [x.capacity_hours for x in loads if x.capacity_hours is not None]
    )
    step = _step(peak)
    top = math.ceil(peak / step) * step
    scale = (WIDTH - LABEL_WIDTH - VALUE_ROOM) / top
    height = TOP + ROW * max(1, len(loads)) + 28

    def x(hours: float) -> float:
        return LABEL_WIDTH + hours * scale

    def hours(n: float) -> str:
        return words["hour" if n == 1 else "hours"].format(n=hours_text(n, language))

    desc = " ".join(
        words["desc"].format(
            name=load.member.name,
            past=hours(load.previous.hours),
            coming=hours(load.current.hours),
            cap=(
                words["none"]
                if load.capacity_hours is None
                else words["cap"].format(hours=hours(load.capacity_hours))
            ),
        )
        for load in loads
    )
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" focusable="false" '
        f'aria-labelledby="load-title load-desc" viewBox="0 0 {WIDTH} {height}" '
        f'width="100%" font-family="system-ui, sans-serif" font-size="14">',
        f'<title id="load-title">{escape(words["title"])}</title>',
        f'<desc id="load-desc">{escape(desc)}</desc>',
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
    ]
    # legend: at fixed places wide enough for the longer (Danish) labels
    out += [
        f'<rect x="10" y="10" width="14" height="14" fill="{PAST}"/>',
        f'<text x="30" y="22" fill="{INK}">{escape(words["past"])}</text>',
        f'<rect x="160" y="10" width="14" height="14" fill="{COMING}"/>',
        f'<text x="180" y="22" fill="{INK}">{escape(words["coming"])}</text>',
        f'<line x1="370" y1="8" x2="370" y2="26" stroke="{INK}" stroke-width="2" '
        'stroke-dasharray="4 3"/>',
        f'<text x="378" y="22" fill="{INK}">{escape(words["capacity"])}</text>',
    ]
    # grid and ticks
    bottom = TOP + ROW * max(1, len(loads))
    tick = 0.0
    while tick <= top + 1e-9:
        out.append(
            f'<line x1="{x(tick):.1f}" y1="{TOP - 4}" x2="{x(tick):.1f}" y2="{bottom}" '
            f'stroke="#d0d0d0" stroke-width="1"/>'
            f'<text x="{x(tick):.1f}" y="{bottom + 18}" fill="{INK}" text-anchor="middle">'
            f"{hours_text(tick, language)} {unit}</text>"
        )
        tick += step
    for row, load in enumerate(loads):
        y = TOP + row * ROW
        out.append(
            f'<text x="{LABEL_WIDTH - 10}" y="{y + BAR + 6}" fill="{INK}" text-anchor="end" '
            f'font-weight="600">{escape(_short(load.member.name))}</text>'
        )
        cap = load.capacity_hours
        for offset, value, colour, over in (
            (4, load.previous.hours, PAST, load.previous_over),
            (4 + BAR + 4, load.current.hours, COMING, load.over),
        ):
            fill = OVER if over else colour
            width = max(value * scale, 1.0 if value else 0.0)
            label = f"{hours_text(value, language)} {unit}" + (f" {words['over']}" if over else "")
            weight = ' font-weight="700"' if over else ""
            out.append(
                f'<rect x="{LABEL_WIDTH}" y="{y + offset}" width="{width:.1f}" height="{BAR}" '
                f'fill="{fill}"/>'
                f'<text x="{x(value) + 6:.1f}" y="{y + offset + BAR - 3}" fill="{INK}"{weight}>'
                f"{escape(label)}</text>"
            )
        if cap is not None:
            out.append(
                f'<line x1="{x(cap):.1f}" y1="{y}" x2="{x(cap):.1f}" y2="{y + 2 * BAR + 12}" '
                f'stroke="{INK}" stroke-width="2" stroke-dasharray="4 3"/>'
            )
    out.append("</svg>")
    return "\n".join(out)


def _short(name: str, limit: int = 18) -> str:
    name = " ".join(name.split())
    return name if len(name) <= limit else name[: limit - 1] + "\N{HORIZONTAL ELLIPSIS}"
