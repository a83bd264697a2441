"""Plots of an experiment's curves (matplotlib, Agg backend: no display needed).

One figure per quantity, one line per policy (the mean over seeds), written as PNG or
SVG. Only ``results.json`` is the record; the plots are for people.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from sim.outfiles import write_whole

__all__ = ["plot_results"]

_REPLAY = (
    ("utilization", "GPU utilization (allocated / healthy)", "replay-utilization"),
    ("jain", "Jain's index over allocation / fair share", "replay-jain"),
    (
        "share_deviation",
        "Deviation from weighted fair share (Σ|a−f| / capacity)",
        "replay-share-deviation",
    ),
    ("fragmentation", "Fragmented share of free GPU capacity", "replay-fragmentation"),
    ("waiting", "Jobs waiting", "replay-waiting"),
)


def _mean_curves(runs: Sequence[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    curves = [r[key] for r in runs]
    width = min(len(c) for c in curves)
    return np.arange(width), np.mean([c[:width] for c in curves], axis=0)


def _save(fig: Any, out: Path, name: str, fmt: str) -> Path:
    """Written whole (rendered in memory, then a rename), as results.json is: a stopped run
    leaves the previous plot or the new one."""
    path = out / f"{name}.{fmt}"
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, metadata={"Date": None} if fmt == "svg" else None)
    plt.close(fig)
    write_whole(path, buffer.getvalue())
    return path


def plot_results(result: dict[str, Any], out: Path, fmt: str = "png") -> list[Path]:
    """Write the experiment's plots into ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    policies = list(dict.fromkeys(r["policy"] for r in result["runs"]))
    written = []
    if result["experiment"] == "replay":
        for key, title, name in _REPLAY:
            fig, ax = plt.subplots(figsize=(7, 3.6))
            for policy in policies:
                runs = [r["summary"]["curves"] for r in result["runs"] if r["policy"] == policy]
                hours = np.array(runs[0]["t"], dtype=float) / 3600.0
                _, mean = _mean_curves(runs, key)
                ax.plot(hours[: len(mean)], mean, label=policy, linewidth=1.2)
            ax.set_xlabel("simulated time (hours)")
            ax.set_title(title)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, ncol=3)
            written.append(_save(fig, out, name, fmt))
        return written
    for key, title, name in (
        ("allocated_pct", "Allocated GPU % vs arrived GPU request %", "fill-allocated"),
        ("fragmentation_pct", "Fragmented % of free GPU capacity", "fill-fragmentation"),
    ):
        fig, ax = plt.subplots(figsize=(7, 3.6))
        for policy in policies:
            runs = [r["curves"] for r in result["runs"] if r["policy"] == policy]
            _, mean = _mean_curves(runs, key)
            ax.plot(runs[0]["arrived_pct"][: len(mean)], mean, label=policy, linewidth=1.2)
        if key == "allocated_pct":
            ax.plot([0, 100, 130], [0, 100, 100], color="grey", linestyle=":", linewidth=0.8)
        ax.set_xlabel("arrived GPU request (% of capacity)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        written.append(_save(fig, out, name, fmt))
    return written
