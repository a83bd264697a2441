"""The report: one content model rendered twice, as self-contained HTML (plots as base64
PNG, inline CSS, no network) and as Markdown (plots as PNG files beside it).

Order, for a manager reading top-down: the recommendation in one paragraph, SLO
attainment, cost, node shapes and MIG layouts, the plots, the Pareto front, quota advice
(the splits simulated and the chosen one), right-sizing, then the
inputs and assumptions that reproduce the run.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sim.plan.candidates import HOURS_PER_MONTH
from sim.plan.slo import Slo, shown

__all__ = ["Report", "build_report"]

Table = tuple[tuple[str, ...], list[tuple[str, ...]]]


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    images: list[tuple[str, str]] = field(default_factory=list)
    """(figure name, caption)"""
    bullets: list[str] = field(default_factory=list)


@dataclass
class Report:
    title: str
    summary: str
    sections: list[Section]
    pngs: dict[str, bytes]

    def markdown(self, image_dir: str = "plots") -> str:
        lines = [f"# {self.title}", "", self.summary, ""]
        for s in self.sections:
            lines += [f"## {s.title}", ""]
            for p in s.paragraphs:
                lines += [p, ""]
            for b in s.bullets:
                lines.append(f"- {b}")
            if s.bullets:
                lines.append("")
            for head, rows in s.tables:
                lines.append("| " + " | ".join(head) + " |")
                lines.append("|" + "---|" * len(head))
                lines += ["| " + " | ".join(r) + " |" for r in rows]
                lines.append("")
            for name, caption in s.images:
                if name in self.pngs:
                    lines += [f"![{caption}]({image_dir}/{name}.png)", ""]
        return "\n".join(lines)

    def html(self) -> str:
        e = html.escape
        body = [
            f"<h1>{e(self.title)}</h1>",
            f'<p class="summary" id="recommendation">{e(self.summary)}</p>',
        ]
        for s in self.sections:
            body.append(f'<section id="{e(_slug(s.title))}"><h2>{e(s.title)}</h2>')
            body += [f"<p>{e(p)}</p>" for p in s.paragraphs]
            if s.bullets:
                body.append("<ul>" + "".join(f"<li>{e(b)}</li>" for b in s.bullets) + "</ul>")
            for head, rows in s.tables:
                body.append(
                    "<table><thead><tr>"
                    + "".join(f"<th>{e(h)}</th>" for h in head)
                    + "</tr></thead><tbody>"
                )
                for r in rows:
                    cls = ' class="miss"' if any(c.startswith("✗") for c in r) else ""
                    body.append(f"<tr{cls}>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>")
                body.append("</tbody></table>")
            for name, caption in s.images:
                if name in self.pngs:
                    data = base64.b64encode(self.pngs[name]).decode()
                    body.append(
                        f'<figure><img alt="{e(caption)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{e(caption)}</figcaption></figure>"
                    )
            body.append("</section>")
        return _PAGE.format(title=e(self.title), body="\n".join(body))


def _slug(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: #1d2433;
       max-width: 980px; margin: 2em auto; padding: 0 1.5em; line-height: 1.45; }}
h1 {{ font-size: 1.7em; border-bottom: 3px solid #2a9d8f; padding-bottom: .3em; }}
h2 {{ font-size: 1.25em; margin-top: 1.8em; color: #264653; }}
p.summary {{ font-size: 1.12em; background: #eef7f5; border-left: 5px solid #2a9d8f;
             padding: .8em 1em; }}
table {{ border-collapse: collapse; margin: .6em 0 1em; font-size: .92em; }}
th, td {{ border-bottom: 1px solid #d8dde6; padding: .35em .8em; text-align: left; }}
th {{ background: #f3f5f9; }}
tr.miss td {{ color: #a4161a; }}
figure {{ margin: 1em 0; }} img {{ max-width: 100%; border: 1px solid #e3e7ee; }}
figcaption {{ font-size: .85em; color: #5c6577; }}
</style></head><body>
{body}
</body></html>
"""


def _money(x: float) -> str:
    return f"${x:,.0f}"


def _gpus(row: dict[str, Any]) -> str:
    return ", ".join(f"{n} {m}" for m, n in sorted(row["gpus"].items()) if n)


def _shapes(row: dict[str, Any]) -> str:
    """Node shapes and MIG layouts that differ from today's, for people ('' if none)."""
    return "; ".join(f"{m} as {a}" for m, a in sorted(row.get("shapes", {}).items()))


def _shapes_untried(record: dict[str, Any]) -> str:
    """Why "no candidate meets every goal" may not be the last word: the simulations ran
    out before any other node shape or MIG layout was tried (the demo plan's first 4 do;
    with 8 it finds an A100 MIG layout that meets every goal)."""
    variants = any(p["today"] == 0 for p in record.get("pools", []))
    if not variants or any(r.get("shapes") for r in record["candidates"]):
        return ""
    return (
        f" The {record['simulations']} simulations ran out before any other node shape or "
        "MIG layout was tried; a larger --max-simulations may find a cluster that meets "
        "every goal."
    )


def _pools_section(
    current: dict[str, Any] | None,
    chosen: dict[str, Any] | None,
    other: str,
    record: dict[str, Any],
) -> Section:
    """Nodes per pool (shape and MIG layout), today and in the answer."""
    sec = Section(
        "Node shapes and MIG layouts",
        [
            "Nodes per pool: GPUs per node, and how each GPU is partitioned (MIG) or shared "
            "(time-sliced). Pools the cluster lacks today are other node shapes or MIG "
            "layouts the planner tried."
        ],
    )
    names = {p["name"]: p["describe"] for p in record.get("pools", [])}
    counts: dict[str, list[int]] = {}
    for i, row in enumerate((current, chosen)):
        for name, describe, n in (row or {}).get("nodes", []):
            names.setdefault(name, describe)
            counts.setdefault(name, [0, 0])[i] = n
    rows: list[tuple[str, ...]] = [
        (name, str(names[name]), str(n[0]) if current else "—", str(n[1]) if chosen else "—")
        for name, n in counts.items()
    ]
    sec.tables.append((("pool", "node", "current cluster", other), rows))
    if chosen is not None and chosen.get("shapes"):
        sec.paragraphs.append("Changed from today: " + _shapes(chosen) + ".")
    return sec


def _quota_sections(
    record: dict[str, Any], verdict: dict[str, Any], slos: Sequence[Slo]
) -> list[Section]:
    """The quota splits simulated on the answer, and the chosen one per queue."""
    where = "recommended cluster" if verdict.get("recommended") else "closest option"
    sec = Section("Quota advice")
    found = record.get("quota_search")
    advice = verdict.get("quota_advice") or []
    if not found:
        sec.paragraphs.append(
            f"Per queue on the {where}, with today's nominals scaled to it: GPU-hours used, "
            "borrowed above the nominal and left unused for others in the replay. "
            + (
                "No quota splits were simulated: "
                + (
                    "shards do not simulate them, and 'plan merge' could not re-read "
                    "the trace and cluster (" + record["quota_search_skipped"] + ")."
                    if record.get("quota_search_skipped")
                    else "--quota-simulations 0."
                )
            )
        )
        sec.tables.append(
            (
                ("queue", "nominal GPUs", "GPU-h used", "borrowed GPU-h", "unused quota GPU-h"),
                [
                    (
                        a["queue"],
                        str(a["nominal_gpus"]),
                        f"{a['gpu_hours']:,.0f}",
                        f"{a['borrowed_gpu_hours']:,.0f}",
                        f"{a['unused_quota_gpu_hours']:,.0f}",
                    )
                    for a in advice
                ],
            )
        )
        return [sec]
    tried = found["strategies"]
    chosen = next(s for s in tried if s["strategy"] == found["chosen"])
    met = all(chosen["slo_met"])
    missed = [
        f"{s.text} (reaches {shown(s, chosen, i)})"
        for i, (s, ok) in enumerate(zip(slos, chosen["slo_met"], strict=True))
        if not ok
    ]
    sec.paragraphs.append(
        f"Nominal quotas split each GPU flavor of the {where} between the queues; each split "
        f"below was simulated on it. Chosen: {chosen['strategy']} ({chosen['describe']}), "
        + (
            "which meets every goal with the fewest GPU-hours borrowed."
            if met
            else "the closest to meeting every goal; it misses " + "; ".join(missed) + "."
        )
    )
    sec.tables.append(
        (
            ("split", "how", "meets all", "worst goal ratio", "borrowed GPU-h"),
            [
                (
                    s["strategy"],
                    s["describe"],
                    "yes" if all(s["slo_met"]) else "✗ no",
                    "∞" if s["worst_ratio"] is None else f"{s['worst_ratio']:.2f}",
                    f"{s['borrowed_gpu_hours']:,.0f}",
                )
                for s in tried
            ],
        )
    )
    scaled = next(s for s in tried if s["strategy"] == "scaled")
    per_queue = Section("Quota split per queue")
    per_queue.paragraphs.append(
        f"Per queue with the {chosen['strategy']} split: nominal GPUs (whole GPUs of every "
        "model; MIG instances are in plan.json), GPU-hours used, borrowed above the nominal "
        "from the cohort, and nominal left unused (lent to the cohort when others borrow)."
    )
    per_queue.tables.append(
        (
            (
                "queue",
                "today's split, scaled",
                "nominal GPUs",
                "GPU-h used",
                "borrowed GPU-h",
                "unused quota GPU-h",
            ),
            [
                (
                    q,
                    str(scaled["queues"].get(q, {}).get("nominal_gpus", 0)),
                    str(v["nominal_gpus"]),
                    f"{v['gpu_hours']:,.0f}",
                    f"{v['borrowed_gpu_hours']:,.0f}",
                    f"{v['unused_quota_gpu_hours']:,.0f}",
                )
                for q, v in chosen["queues"].items()
            ],
        )
    )
    return [sec, per_queue]


def _missing_shards(record: dict[str, Any]) -> str:
    """A merge of some shards only: the report says so, not only stderr (``--quiet``)."""
    missing = record.get("missing_shards") or []
    if not missing:
        return ""
    which = ", ".join(str(i) for i in missing)
    return (
        f"; shard{'s' if len(missing) > 1 else ''} {which} of {record['shards']} missing: "
        f"{'their' if len(missing) > 1 else 'its'} candidates were not simulated"
    )


def _monotonicity(record: dict[str, Any]) -> str:
    m = record.get("monotonicity") or {}
    checked = m.get("spot_checked", [])
    broken = m.get("violations", [])
    text = (
        f"{len(checked)} such inferred candidates were simulated to check it"
        if checked
        else "no inferred candidate was cheaper than the best and left to check"
    )
    if broken:
        pairs = ", ".join(f"{a} misses where the smaller {b} meets" for a, b in broken[:3])
        return f"{text}; more nodes did hurt in {len(broken)} simulated pair(s): {pairs}"
    return f"{text}; no simulated pair had more nodes miss where fewer met"


def build_report(
    record: dict[str, Any],
    verdict: dict[str, Any],
    slos: Sequence[Slo],
    pngs: dict[str, bytes],
    rightsizing: Sequence[dict[str, Any]] = (),
) -> Report:
    by_key = {r["key"]: r for r in record["candidates"]}
    current = next((r for r in record["candidates"] if r["current"]), None)
    chosen_key = verdict.get("recommended") or verdict.get("closest")
    chosen = by_key.get(chosen_key) if chosen_key else None
    inputs = record["inputs"]
    pruned = sum(1 for r in record["candidates"] if r["status"] == "pruned")
    goals = "; ".join(s.text for s in slos) or "no goals"
    if verdict.get("recommended") and chosen is not None:
        delta = chosen["cost_per_hour"] - (current["cost_per_hour"] if current else 0.0)
        shaped = _shapes(chosen)
        summary = (
            f"Run {_gpus(chosen)}"
            + (f", with {shaped}" if shaped else "")
            + f" ({_money(chosen['cost_per_hour'])}/h, "
            f"{_money(chosen['cost_per_hour'] * HOURS_PER_MONTH)}/month"
            + (
                f", {'+' if delta >= 0 else '−'}{_money(abs(delta) * HOURS_PER_MONTH)}/month "
                "against the current cluster"
                if current
                else ""
            )
            + f"): the cheapest of {len(record['candidates']):,} candidate clusters that meets "
            f"every goal ({goals}) for the {inputs['demand']}."
        )
        if verdict.get("cheaper_not_simulated"):
            summary += (
                f" {verdict['cheaper_not_simulated']} cheaper candidates were neither "
                "simulated nor ruled out; a larger --max-simulations may find a cheaper answer."
            )
    elif chosen is not None:
        b = verdict.get("binding", {})
        summary = (
            f"No candidate meets every goal ({goals})"
            + (
                f" within the budget of {_money(inputs['budget_per_hour'])}/h"
                if inputs.get("budget_per_hour")
                else ""
            )
            + f". The closest is {_gpus(chosen)}"
            + (f", with {_shapes(chosen)}" if _shapes(chosen) else "")
            + f" ({_money(chosen['cost_per_hour'])}/h); "
            f"the goal that binds is {b.get('slo', '?')}"
            + (f" (reaches {b['shown']})" if b.get("value") is not None else "")
            + "."
        )
        if verdict.get("cheapest_meeting_all"):
            r = by_key[verdict["cheapest_meeting_all"]]
            summary += f" Meeting every goal takes {_gpus(r)} at {_money(r['cost_per_hour'])}/h."
        summary += _shapes_untried(record)
    else:
        summary = "No candidate was simulated."
    missing = record.get("missing_shards") or []
    if missing:  # first: an answer from part of the sweep reads complete otherwise
        which = ", ".join(str(i) for i in missing)
        summary = (
            f"Partial sweep: shard{'s' if len(missing) > 1 else ''} {which} of "
            f"{record['shards']} missing, {'their' if len(missing) > 1 else 'its'} candidates "
            f"not simulated (a cheaper cluster may meet every goal). {summary}"
        )
    sections: list[Section] = []

    slo_rows = []
    for i, slo in enumerate(slos):
        cells = [slo.scope, slo.metric, slo.show_target()]
        for row in (current, chosen):
            if row is None or row["evaluation"] is None:
                cells.append("—")
                continue
            met = row["evaluation"]["slo_met"][i]
            cells.append(("✓ " if met else "✗ ") + shown(slo, row["evaluation"], i))
        slo_rows.append(tuple(cells))
    sec = Section("SLO attainment")
    other = "recommended" if verdict.get("recommended") else "closest option"
    sec.tables.append((("scope", "metric", "goal", "current cluster", other), slo_rows))
    sec.bullets += verdict.get("nothing_changes", [])
    if verdict.get("nothing_changes"):
        sec.paragraphs.append("If nothing changes (the current cluster, the planned demand):")
    sections.append(sec)

    cost_rows = []
    models = sorted({m for r in (current, chosen) if r for m in r["gpus"]})
    for m in models:
        cost_rows.append((m, *(str(r["gpus"].get(m, 0)) if r else "—" for r in (current, chosen))))
    for label, scale in (("$ per hour", 1), ("$ per month (730 h)", HOURS_PER_MONTH)):
        cost_rows.append(
            (label, *(_money(r["cost_per_hour"] * scale) if r else "—" for r in (current, chosen)))
        )
    sec = Section(
        "Cost",
        [
            "GPUs per model and the price of running them (list prices per GPU-hour, "
            "no capital cost; MIG and shared GPUs cost a whole GPU)."
        ],
    )
    sec.tables.append((("", "current cluster", other), cost_rows))
    sections.append(sec)
    sections.append(_pools_section(current, chosen, other, record))

    if chosen is not None and chosen["evaluation"] is not None:
        s = chosen["evaluation"]["summary"]
        sec = Section("Over time")
        sec.images += [
            ("waits", "p95 wait of the jobs arriving in each interval, per queue"),
            ("usage", "GPUs each queue holds over time"),
            ("utilization", "Allocated share of the GPUs"),
            ("fairness", "Jain's index over allocation / weighted fair share (1 = fair)"),
        ]
        gh = s["gpu_hours"]
        sec.paragraphs.append(
            f"On the recommended cluster: mean utilization {s['utilization_mean']:.0%}, mean "
            f"Jain's index {s['fairness']['jain_mean']:.2f}, {s['preemptions']} preemptions, "
            f"{gh['idle_reserved_while_waiting']:,.1f} idle-but-reserved GPU-hours while work "
            f"waited (from the trace's utilization data; 0 when the trace has none), "
            f"{gh['free_while_waiting']:,.1f} GPU-hours free while work waited."
        )
        sections.append(sec)

    sec = Section(
        "Pareto front",
        [
            "Every simulated candidate: its cost and its worst goal as value ÷ target "
            "(≤ 1 meets it; for waits and JCTs (value + 1 s) ÷ (target + 1 s), so a 0 s goal "
            "still ranks candidates by how long they wait). The front is the candidates no "
            "cheaper one beats."
        ],
    )
    sec.images.append(("pareto", "cost vs worst goal ratio"))
    sec.tables.append(
        (
            ("candidate", "GPUs", "shapes and layouts", "$/h", "worst goal ratio", "meets all"),
            [
                (
                    k,
                    _gpus(by_key[k]),
                    _shapes(by_key[k]) or "as today",
                    _money(by_key[k]["cost_per_hour"]),
                    f"{verdict['worst_ratio'][k]:.2f}"
                    if verdict["worst_ratio"][k] is not None
                    else "∞",
                    "yes" if all(by_key[k]["evaluation"]["slo_met"]) else "✗ no",
                )
                for k in verdict["pareto"]
            ],
        )
    )
    sections.append(sec)

    sections += _quota_sections(record, verdict, slos)

    sec = Section("Right-sizing")
    if rightsizing:
        sec.paragraphs.append(
            "From the DCGM metrics export: per queue and GPU flavor, memory "
            "offered against the peak used, and a MIG slice that would hold it."
        )
        sec.tables.append(
            (
                (
                    "queue",
                    "flavor",
                    "workloads",
                    "offered MiB",
                    "peak MiB",
                    "busy",
                    "would fit",
                    "per GPU",
                ),
                [
                    (
                        r["queue"],
                        r["flavor"],
                        str(r["workloads"]),
                        f"{r['requested_mib']:,}",
                        f"{r['used_peak_mib']:,}",
                        r["busy"],
                        r["fits"] or "—",
                        r["per_gpu"],
                    )
                    for r in rightsizing
                ],
            )
        )
    else:
        sec.paragraphs.append(
            "No metrics given (--metrics FILE --metrics-snapshot FILE: a "
            "Prometheus export and the cluster's running workloads)."
        )
    sections.append(sec)

    sec = Section("Inputs and assumptions")
    sec.bullets += [
        f"command: {inputs['command']}",
        f"demand: {inputs['demand']}",
        f"cluster: {inputs['cluster']}; node pools scaled per GPU model by {inputs['levels']}",
        f"policy: {inputs['policy']} (seed {inputs['seed']})",
        f"candidates: {len(record['candidates'])}, {pruned} pruned by the fluid bound, "
        f"{record['simulations']} simulated"
        + (f" over {record['shards']} shards" if record.get("shards", 1) > 1 else "")
        + _missing_shards(record),
        "node shapes and MIG layouts: "
        + (
            "today's pools, plus 4-/8-GPU nodes and MIG layouts chosen from the demand's MIG "
            "and memory-sized requests, tried one GPU model at a time around the best cluster"
            if inputs.get("shapes")
            else "today's only (--no-shapes)"
        ),
        "candidates inferred to miss (dominated by a simulated candidate that misses) assume more "
        "nodes never hurt a goal; costlier candidates than the best are not simulated except "
        "for the Pareto front",
        _monotonicity(record),
        "waits of jobs that never started count as the time they waited until the replay ended",
    ]
    sections.append(sec)
    return Report("Capacity plan", summary, sections, pngs)
