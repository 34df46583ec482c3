"""The run's PNG (matplotlib, Agg backend): intake throughput and latency next to the
baselines, the rate-limited delivery's Engage calls over time, and delivery capacity per
worker process next to the emulator alone."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first
from matplotlib.axes import Axes  # noqa: E402

from bench.delivery import ENGAGE_LIMIT  # noqa: E402
from bench.report import Results, bare_rate  # noqa: E402

COLOURS = {"baseline": "#9e9e9e", "relay": "#1f77b4", "p99": "#d62728", "limit": "#d62728"}


def _label(name: str, backend: str, mode: str) -> str:
    short = name.split(" (")[0].replace("naive relay, Engage inline", "naive relay,")
    where = "" if backend == "-" else f"\n{backend}"
    return f"{short}{where}" + ("\nopen loop" if mode.startswith("open") else "")


def _throughput(ax: Axes, results: Results) -> None:
    rows = [r for r in results.intake if r.mode.startswith("closed")]
    labels = [_label(r.name, r.backend, r.mode) for r in rows]
    rates = [r.result.rate for r in rows]
    colours = [COLOURS["baseline" if "baseline" in r.name else "relay"] for r in rows]
    bars = ax.barh(labels, rates, color=colours)
    bare = bare_rate(results) or 1.0
    for bar, rate in zip(bars, rates, strict=True):
        middle = bar.get_y() + bar.get_height() / 2
        text = f" {rate:.0f}/s, {rate / bare:.0%}"
        ax.text(bar.get_width(), middle, text, va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(right=max([*rates, 1.0]) * 5)  # room for the labels
    ax.invert_yaxis()
    ax.set_xlabel("requests/s (closed loop, log scale); % of bare Flask")
    ax.set_title("Intake throughput")


def _latency(ax: Axes, results: Results) -> None:
    rows = results.intake
    labels = [_label(r.name, r.backend, r.mode) for r in rows]
    positions = range(len(rows))
    p50 = [r.result.percentile_ms(50) for r in rows]
    p99 = [r.result.percentile_ms(99) for r in rows]
    ax.barh([p - 0.2 for p in positions], p50, height=0.4, label="p50", color=COLOURS["relay"])
    ax.barh([p + 0.2 for p in positions], p99, height=0.4, label="p99", color=COLOURS["p99"])
    ax.set_yticks(list(positions), labels)
    ax.axvline(50, color="black", linestyle=":", linewidth=1, label="50 ms target")
    ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("latency ms (log scale)")
    ax.set_title("Intake latency")
    ax.legend(fontsize=8)


def _paced(ax: Axes, results: Results) -> None:
    limited = [d for d in results.delivered if "rate limited" in d.spec.name]
    if not limited:
        ax.set_visible(False)
        return
    d = limited[0]
    ax.plot(
        d.call_times,
        range(1, len(d.call_times) + 1),
        color=COLOURS["relay"],
        label=f"Engage calls ({d.call_rate:.2f}/s)",
    )
    end = d.call_times[-1] if d.call_times else 1.0
    ax.plot(
        [0, end],
        [0, end * ENGAGE_LIMIT],
        color=COLOURS["limit"],
        linestyle="--",
        label=f"Engage limit {ENGAGE_LIMIT}/s",
    )
    ax.set_xlabel("seconds since the first call")
    ax.set_ylabel("calls")
    ax.set_title(f"Rate-limited delivery: {d.spec.decisions} decisions, {d.spec.contacts} contacts")
    ax.legend(fontsize=8)


def _capacity(ax: Axes, results: Results) -> None:
    runs = [d for d in results.delivered if "no rate limit" in d.spec.name]
    alone = {c.clients: c.result.rate for c in results.capacity}
    labels = [f"{d.spec.concurrency} process(es)" for d in runs]
    positions = range(len(runs))
    relay = [d.call_rate / d.spec.concurrency for d in runs]
    emulator = [alone.get(d.spec.concurrency, 0.0) / d.spec.concurrency for d in runs]
    ax.bar(
        [p - 0.2 for p in positions],
        relay,
        width=0.4,
        color=COLOURS["relay"],
        label="relay worker: calls/s per process",
    )
    ax.bar(
        [p + 0.2 for p in positions],
        emulator,
        width=0.4,
        color=COLOURS["baseline"],
        label="emulator alone: calls/s per client",
    )
    ax.set_xticks(list(positions), labels)
    ax.set_ylim(0, max([*relay, *emulator, 1.0]) * 1.3)  # room for the legend
    ax.set_ylabel("Engage calls/s (50 ms each)")
    ax.set_title("Delivery without a rate limit")
    ax.legend(fontsize=8)


def write(results: Results, path: Path) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(15, 10))
    _throughput(axes[0][0], results)
    _latency(axes[0][1], results)
    _paced(axes[1][0], results)
    _capacity(axes[1][1], results)
    m = results.meta
    fig.suptitle(
        f"Consent Relay bench ({m.mode}), {m.started:%Y-%m-%d %H:%M} UTC, {m.commit}\n{m.machine}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90, format="png")
    plt.close(fig)
