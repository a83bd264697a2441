"""Service-level objectives as the user writes them, e.g. ``team-a:p95_wait<=30m``.

Grammar: ``[SELECTOR:]METRIC OP VALUE``. SELECTOR is a queue name (``scheduler.names``)
or ``priority>=N`` (also ``>``, ``<=``, ``<``, ``=``; N a Kubernetes priority); none means
every job. METRIC is ``p50|p90|p95|p99|mean``
followed by ``_wait`` (queueing delay) or ``_jct`` (completion time), or ``utilization``
(whole cluster, no selector). VALUE is a duration (``90s``, ``30m``, ``2h``, ``1d``; a
bare number is seconds) or, for utilization, ``70%`` or ``0.7``. A malformed expression
raises ``SloError`` whose message repeats the text with a caret under the bad part.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scheduler.fieldpaths import show
from scheduler.model import MAX_PRIORITY, MIN_PRIORITY
from scheduler.names import queue_name
from sim.rows import MAX_SECONDS

__all__ = [
    "Slo",
    "SloError",
    "check_queues",
    "format_duration",
    "goal_ratios",
    "nearest_rank",
    "parse_slo",
    "percentile",
    "shown",
]

_STATS = ("p50", "p90", "p95", "p99", "mean")
_QUANTITIES = ("wait", "jct")
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
# ASCII digits: Python's \d and int() take any script's ('٣m' was 3 minutes).
_SELECTOR = re.compile(r"priority\s*(>=|<=|==|=|>|<)\s*(-?[0-9]+)")
_BODY = re.compile(r"\s*([A-Za-z0-9_]+)\s*(<=|>=|<|>|=)?\s*(.*?)\s*")
_VALUE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([a-z%]*)")


class SloError(ValueError):
    """A malformed SLO; the message shows the expression and points at the bad part."""


def _fail(text: str, start: int, end: int, why: str) -> SloError:
    end = max(end, start + 1)
    return SloError(f'--slo "{text}": {why}\n  {text}\n  {" " * start}{"^" * (end - start)}')


@dataclass(frozen=True, slots=True)
class Slo:
    text: str
    metric: str
    """``p95_wait``, ``mean_jct``, ``utilization``, …"""
    op: str
    target: float
    """Seconds for wait/jct, a ratio 0..1 for utilization."""
    queue: str | None = None
    priority: tuple[str, int] | None = None

    @property
    def upper(self) -> bool:
        """True when the value must stay at or below the target (waits, JCTs)."""
        return self.op in ("<=", "<")

    @property
    def scope(self) -> str:
        if self.queue is not None:
            return self.queue
        if self.priority is not None:
            return f"priority{self.priority[0]}{self.priority[1]}"
        return "all jobs" if self.metric != "utilization" else "cluster"

    def selects(self, queue: str, priority: int) -> bool:
        if self.queue is not None:
            return queue == self.queue
        if self.priority is not None:
            op, bound = self.priority
            return {
                ">=": priority >= bound,
                ">": priority > bound,
                "<=": priority <= bound,
                "<": priority < bound,
            }.get(op, priority == bound)
        return True

    def met(self, value: float | None) -> bool:
        if value is None:
            return True  # no job in scope: nothing to miss
        if self.op == "<=":
            return value <= self.target + 1e-9
        if self.op == "<":
            return value < self.target
        if self.op == ">=":
            return value >= self.target - 1e-9
        return value > self.target

    def ratio(self, value: float | None) -> float:
        """How far from the target: ≤ 1 met, 2 = twice as bad (for 'closest option')."""
        if value is None:
            return 0.0
        if self.upper:
            # Durations: one second added to both, so a goal of 0 s still ranks options.
            return (value + 1) / (self.target + 1)
        return self.target / value if value > 0 else math.inf

    def show(self, value: float | None) -> str:
        if value is None:
            return "—"
        if self.metric == "utilization":
            return f"{value:.0%}"
        return format_duration(value)

    def show_target(self) -> str:
        return f"{self.op} {self.show(self.target)}"


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def parse_slo(text: str) -> Slo:
    """One SLO expression; raises SloError pointing at the offending text."""
    selector_text, colon, body = text.rpartition(":")
    offset = len(selector_text) + len(colon)
    queue = None
    priority = None
    if colon:
        sel = selector_text.strip()
        lead = len(selector_text) - len(selector_text.lstrip())
        if not sel:
            raise _fail(text, 0, offset, "empty selector before ':' (a queue or priority>=N)")
        m = _SELECTOR.fullmatch(sel)
        if m:
            op = "=" if m[1] == "==" else m[1]
            digits = m[2].lstrip("-").lstrip("0")  # int() of 4,301 digits is a ValueError
            if (
                len(digits) > len(str(MAX_PRIORITY))
                or not MIN_PRIORITY <= int(m[2]) <= MAX_PRIORITY
            ):
                start = lead + m.start(2)
                raise _fail(
                    text,
                    start,
                    start + len(m[2]),
                    f"{show(m[2])} is not a Kubernetes priority (a 32-bit integer, "
                    f"{MIN_PRIORITY} to {MAX_PRIORITY}): it would select no job, and the goal "
                    "be met whatever the cluster",
                )
            priority = (op, int(m[2]))
        elif sel.startswith("priority"):
            raise _fail(
                text, lead, lead + len(sel), "a priority selector is priority>=N (or >, <=, <, =)"
            )
        elif queue_name(sel) is None:
            queue = sel
        else:
            raise _fail(text, lead, lead + len(sel), f"{sel!r} is not a queue name or priority>=N")
    m = _BODY.fullmatch(body)
    if not m or not m[1]:
        raise _fail(text, offset, len(text), "expected METRIC OP VALUE, e.g. p95_wait<=30m")
    metric, op, value = m[1], m[2], m[3]
    m_start = offset + m.start(1)
    stats = [f"{s}_{q}" for s in _STATS for q in _QUANTITIES]
    if metric != "utilization" and metric not in stats:
        raise _fail(
            text,
            m_start,
            m_start + len(metric),
            f"unknown metric {metric!r} (known: {', '.join(stats)}, utilization)",
        )
    op_start = offset + (m.start(2) if op else m.end(1))
    if not op or op == "=":
        raise _fail(text, op_start, op_start + len(op or " "), "expected <=, <, >= or >")
    if metric == "utilization":
        if queue is not None or priority is not None:
            raise _fail(text, 0, offset - 1, "utilization is for the whole cluster: no selector")
        if op not in (">=", ">"):
            raise _fail(text, op_start, op_start + len(op), "utilization goals are >= or >")
    elif op not in ("<=", "<"):
        raise _fail(text, op_start, op_start + len(op), f"{metric} goals are <= or <")
    v_start = offset + m.start(3)
    vm = _VALUE.fullmatch(value)
    if not vm:
        raise _fail(text, v_start, len(text), f"{value!r} is not a number with a unit")
    number, unit = float(vm[1]), vm[2]
    u_start = v_start + vm.start(2)
    if metric == "utilization":
        if unit == "%":
            number /= 100
        elif unit:
            raise _fail(text, u_start, u_start + len(unit), "utilization is a % or a fraction")
        if not unit and 1 < number <= 100:
            # A bare number is a fraction: 'utilization>=70' said "must be between 0 and
            # 100 %" of a value that is.
            raise _fail(
                text,
                v_start,
                len(text),
                f"a bare number is a fraction of 1: did you mean {value}% (or {number / 100:g})?",
            )
        if not 0 < number <= 1:
            raise _fail(text, v_start, len(text), "utilization must be between 0 and 100 %")
    else:
        if unit and unit not in _UNITS:
            raise _fail(text, u_start, u_start + len(unit), f"unknown unit {unit!r} (s, m, h, d)")
        number *= _UNITS.get(unit, 1)
        if number > MAX_SECONDS:  # 1e400 is infinite: a goal any cluster meets
            raise _fail(
                text,
                v_start,
                len(text),
                f"{show(value)} is more than 10^12 s (31,700 years): the goal would be met "
                "whatever the cluster",
            )
    return Slo(text, metric, op, number, queue, priority)


def check_queues(slos: Iterable[Slo], queues: Sequence[str]) -> None:
    """Every queue an SLO names exists in the demand (else a typo would always be 'met')."""
    for slo in slos:
        if slo.queue is not None and slo.queue not in queues:
            start = slo.text.index(slo.queue)
            raise _fail(
                slo.text,
                start,
                start + len(slo.queue),
                f"no queue {slo.queue!r} in the demand (queues: {', '.join(queues)})",
            )


def percentile(values: Sequence[float], stat: str) -> float | None:
    """Nearest-rank percentile (``p95``) or ``mean``, as ``sim.metrics`` computes them."""
    if not values:
        return None
    if stat == "mean":
        return sum(values) / len(values)
    return float(sorted(values)[nearest_rank(len(values), stat)])


def nearest_rank(count: int, stat: str) -> int:
    """Where percentile ``stat`` (``p95``) lies among ``count`` sorted values (0-based)."""
    return max(0, math.ceil(int(stat[1:]) / 100 * count) - 1)


def goal_ratios(slos: Sequence[Slo], evaluation: Mapping[str, Any]) -> list[float]:
    """Each goal's ``Slo.ratio`` on one evaluation; infinite for a goal whose value rests on
    jobs that never started: that cluster never runs them (``evaluate``), however short the
    wait they had when the replay ended."""
    return [
        math.inf if _never_started(evaluation, i) else s.ratio(v)
        for i, (s, v) in enumerate(zip(slos, evaluation["slo_values"], strict=True))
    ]


def shown(slo: Slo, evaluation: Mapping[str, Any], i: int) -> str:
    """Goal ``i``'s measured value as a report shows it, with the jobs that never started."""
    never = _never_started(evaluation, i)
    value = slo.show(evaluation["slo_values"][i])
    if not never:
        return value
    return f"{value}, {never:,} job{'s' if never > 1 else ''} never started"


def _never_started(evaluation: Mapping[str, Any], i: int) -> int:
    """The jobs that never started goal ``i``'s value rests on; 0 in a ``plan.json`` written
    before they were recorded (``plan merge`` renders such a record again)."""
    never = evaluation.get("slo_never_started")
    return int(never[i]) if never else 0
