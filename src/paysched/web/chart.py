"""The overview's chart of the last hour, as inline SVG rendered here (no script, no library:
the dashboard's CSP allows no inline script, and inline SVG markup needs none).

Two panels, one column per minute:
- start lateness (started_at - due_at) of the occurrences that started in that minute: p50,
  p99 and max, on a log scale (a healthy deployment is milliseconds, a stuck one minutes);
- outcomes: the occurrences that succeeded and failed in that minute, stacked.
Every number is also in a <title> (the browser shows it on hover) and in the summary line.
Every text put in the markup is escaped, though all of it is made here from numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta

from markupsafe import Markup, escape

from paysched.db.store.reads import Activity
from paysched.domain import OccurrenceState
from paysched.views import duration_text

S = OccurrenceState
WIDTH, LEFT, RIGHT = 720, 60, 8
LATENESS_H, OUTCOMES_H, TOP, BOTTOM = 150, 80, 8, 18
SERIES = (("p50", "#1e88e5"), ("p99", "#fb8c00"), ("max", "#c62828"))
SUCCEEDED, FAILED = "#2e7d32", "#c62828"
GRID, INK = "#c8c8c8", "#555"


def _ms_text(ms: float) -> str:
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.3g} s"
    return duration_text(round(ms))


def _rank(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank percentile of an ordered, non-empty sequence."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _minute(at: datetime, start: datetime, minutes: int) -> int | None:
    i = math.floor((at - start).total_seconds() // 60)
    return i if 0 <= i < minutes else None


def _hhmm(at: datetime) -> str:
    return at.strftime("%H:%M")


class _Svg:
    def __init__(self, height: int, label: str) -> None:
        self.parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" '
            f'width="100%" role="img" aria-label="{escape(label)}" class="chart">'
            f"<title>{escape(label)}</title>"
        ]

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def text(self, x: float, y: float, text: str, anchor: str = "end") -> None:
        self.parts.append(
            f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="10" '
            f'fill="{INK}">{escape(text)}</text>'
        )

    def done(self) -> str:
        return "".join(self.parts) + "</svg>"


def _x_axis(svg: _Svg, start: datetime, minutes: int, y: float) -> None:
    plot = WIDTH - LEFT - RIGHT
    for i, anchor in ((0, "start"), (minutes // 2, "middle"), (minutes, "end")):
        at = start + timedelta(minutes=i)
        svg.text(LEFT + plot * i / minutes, y, f"{_hhmm(at)} UTC" if i else _hhmm(at), anchor)


def _lateness(per_minute: list[list[float]], start: datetime) -> str:
    minutes = len(per_minute)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, LATENESS_H - TOP - BOTTOM
    highest = max((max(v) for v in per_minute if v), default=1.0)
    top = max(3, math.ceil(math.log10(max(highest, 1.0)) + 1e-9))  # at least 1 s
    svg = _Svg(LATENESS_H, "Start lateness per minute over the last hour: p50, p99 and max")

    def y_of(ms: float) -> float:  # log scale from 1 ms (bottom) to 10^top ms
        return TOP + plot_h * (1 - min(math.log10(max(ms, 1.0)), top) / top)

    for power in range(top + 1):
        y = y_of(10.0**power)
        svg.add(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{GRID}" stroke-width="0.5"/>'
        )
        svg.text(LEFT - 4, y + 3, _ms_text(10.0**power))
    step = plot_w / minutes
    for name, colour in SERIES:
        q = {"p50": 0.5, "p99": 0.99, "max": 1.0}[name]
        path, points = [], []
        gap = True
        for i, values in enumerate(per_minute):
            if not values:
                gap = True
                continue
            ordered = sorted(values)
            x, y = LEFT + step * (i + 0.5), y_of(_rank(ordered, q))
            path.append(f"{'M' if gap else 'L'}{x:.1f} {y:.1f}")
            gap = False
            at = _hhmm(start + timedelta(minutes=i))
            tip = f"{at} UTC, {name}: {_ms_text(_rank(ordered, q))} ({len(values)} started)"
            points.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="1.8" fill="{colour}">'
                f"<title>{escape(tip)}</title></circle>"
            )
        if path:
            svg.add(
                f'<path d="{" ".join(path)}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
            )
        svg.add("".join(points))
    for n, (name, colour) in enumerate(SERIES):
        x = LEFT + 8 + n * 48
        svg.add(f'<rect x="{x}" y="{TOP + 2}" width="8" height="8" fill="{colour}"/>')
        svg.text(x + 11, TOP + 10, name, "start")
    _x_axis(svg, start, minutes, LATENESS_H - 4)
    return svg.done()


def _outcomes(per_minute: list[tuple[int, int]], start: datetime) -> str:
    minutes = len(per_minute)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, OUTCOMES_H - TOP - BOTTOM
    highest = max((ok + bad for ok, bad in per_minute), default=0) or 1
    svg = _Svg(OUTCOMES_H, "Occurrences succeeded and failed per minute over the last hour")
    base = TOP + plot_h
    svg.add(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{base}" y2="{base}" stroke="{GRID}"/>')
    svg.text(LEFT - 4, TOP + 8, f"{highest}/min")
    svg.text(LEFT - 4, base, "0")
    step = plot_w / minutes
    for i, (ok, bad) in enumerate(per_minute):
        if not ok + bad:
            continue
        x, w = LEFT + step * i + 0.5, max(step - 1, 1)
        at = _hhmm(start + timedelta(minutes=i))
        tip = escape(f"{at} UTC: {ok} succeeded, {bad} failed")
        h_ok, h_bad = plot_h * ok / highest, plot_h * bad / highest
        svg.add(
            f"<g><title>{tip}</title>"
            f'<rect x="{x:.1f}" y="{base - h_ok:.1f}" width="{w:.1f}" height="{h_ok:.1f}" '
            f'fill="{SUCCEEDED}"/>'
            f'<rect x="{x:.1f}" y="{base - h_ok - h_bad:.1f}" width="{w:.1f}" '
            f'height="{h_bad:.1f}" fill="{FAILED}"/></g>'
        )
    _x_axis(svg, start, minutes, OUTCOMES_H - 4)
    return svg.done()


def activity_svg(found: Sequence[Activity], now: datetime, window: timedelta) -> Markup:
    """The two panels and a summary line; a sentence instead when nothing started or finished
    within `window` before `now`."""
    minutes = max(1, round(window.total_seconds() / 60))
    start = now - timedelta(minutes=minutes)
    lateness: list[list[float]] = [[] for _ in range(minutes)]
    outcomes = [[0, 0] for _ in range(minutes)]
    for a in found:
        if a.started_at is not None and (i := _minute(a.started_at, start, minutes)) is not None:
            lateness[i].append((a.started_at - a.due_at).total_seconds() * 1000)
        final = a.finished_at is not None and a.state in (S.SUCCEEDED, S.FAILED)
        if final and a.finished_at and (i := _minute(a.finished_at, start, minutes)) is not None:
            outcomes[i][0 if a.state == S.SUCCEEDED else 1] += 1
    started = sorted(v for values in lateness for v in values)
    ok, bad = sum(o[0] for o in outcomes), sum(o[1] for o in outcomes)
    if not started and not ok + bad:
        return Markup('<p class="quiet">Nothing started or finished in the last hour.</p>')
    summary = f"{ok} succeeded, {bad} failed"
    if started:
        summary = (
            f"{len(started)} started, start lateness p50 {_ms_text(_rank(started, 0.5))}, "
            f"p99 {_ms_text(_rank(started, 0.99))}, max {_ms_text(started[-1])}; " + summary
        )
    return Markup(
        f'<p class="quiet">Last hour: {escape(summary)}.</p>'
        + _lateness(lateness, start)
        + _outcomes([(o[0], o[1]) for o in outcomes], start)
    )
