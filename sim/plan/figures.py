"""The report's plots as PNG bytes (matplotlib, Agg): embedded in the HTML as base64 and
written beside the Markdown."""

from __future__ import annotations

import io
from typing import Any

__all__ = ["figures"]


def _pyplot() -> Any:
    """matplotlib's pyplot on Agg, imported when a report is drawn, not when this module is:
    `apportion plan` registers with every command, and pyplot made each one, --help too,
    a third of a second slower."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90, metadata={"Software": None})
    _pyplot().close(fig)
    return buffer.getvalue()


def _queue_lines(ax: Any, ev: dict[str, Any], key: str, scale: float) -> None:
    step = ev["queues"]["_bin_s"]
    for q, v in sorted(ev["queues"].items()):
        if q.startswith("_"):
            continue
        ys = [None if y is None else y * scale for y in v[key]]
        xs = [i * step / 3600 for i in range(len(ys))]
        ax.plot(xs, [float("nan") if y is None else y for y in ys], label=q, linewidth=1.3)
    ax.set_xlabel("simulated time (hours)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=3)


def figures(
    record: dict[str, Any],
    verdict: dict[str, Any],
    chosen: dict[str, Any] | None,
    current: dict[str, Any] | None,
) -> dict[str, bytes]:
    """name → PNG: waits and GPUs per queue (chosen cluster), utilization and fairness
    (chosen vs current), and the Pareto front."""
    plt = _pyplot()
    out: dict[str, bytes] = {}
    if chosen is not None:
        ev = chosen["evaluation"]
        fig, ax = plt.subplots(figsize=(7.5, 3.4))
        _queue_lines(ax, ev, "wait_p95_by_arrival", 1 / 60)
        ax.set_ylabel("p95 wait (min)")
        ax.set_title("Wait by arrival time, per queue (p95, recommended cluster)")
        out["waits"] = _png(fig)
        fig, ax = plt.subplots(figsize=(7.5, 3.4))
        _queue_lines(ax, ev, "gpus_held", 1.0)
        ax.set_ylabel("GPUs held")
        ax.set_title("GPUs held per queue (recommended cluster)")
        out["usage"] = _png(fig)
        for key, title, name in (
            ("utilization", "GPU utilization (allocated / healthy)", "utilization"),
            ("jain", "Fairness: Jain's index over allocation / fair share", "fairness"),
        ):
            fig, ax = plt.subplots(figsize=(7.5, 3.0))
            for row, label in ((chosen, "recommended"), (current, "current cluster")):
                if row is None or row["evaluation"] is None:
                    continue
                c = row["evaluation"]["curves"]
                ax.plot([t / 3600 for t in c["t"]], c[key], label=label, linewidth=1.3)
            ax.set_xlabel("simulated time (hours)")
            ax.set_ylim(0, 1.05)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            ax.set_title(title)
            out[name] = _png(fig)
    points = [r for r in record["candidates"] if r["evaluation"] is not None]
    if points:
        fig, ax = plt.subplots(figsize=(7.5, 3.6))
        ratio = verdict["worst_ratio"]
        front = set(verdict["pareto"])
        for r in points:
            y = ratio[r["key"]]
            y = 10.0 if y is None else min(y, 10.0)
            met = all(r["evaluation"]["slo_met"])
            ax.scatter(
                r["cost_per_hour"],
                y,
                s=40 if r["key"] in front else 18,
                color="#2a9d8f" if met else "#e76f51",
                edgecolor="black" if r["key"] in front else "none",
                zorder=3,
            )
        fr = sorted((r for r in points if r["key"] in front), key=lambda r: r["cost_per_hour"])
        ax.step(
            [r["cost_per_hour"] for r in fr],
            [min(ratio[r["key"]] or 10.0, 10.0) for r in fr],
            where="post",
            color="grey",
            linewidth=1,
            zorder=2,
        )
        ax.axhline(1.0, color="black", linestyle=":", linewidth=0.8)
        ax.set_xlabel("cluster cost ($ per hour)")
        ax.set_ylabel("worst goal: value / target")
        ax.set_yscale("log")
        ax.set_title("Cost vs SLOs (green: meets every goal; outlined: Pareto front)")
        ax.grid(alpha=0.3)
        out["pareto"] = _png(fig)
    return out
