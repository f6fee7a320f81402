"""What the bench reports: every figure's label and unit, its baseline, the targets, and the table
and JSON made from the results."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.measure import IN_FLIGHT, Plan, percentile

BATCH = 100
# BatchGetRuns rows at these store sizes (bench/store_bench.py), when --prefill reaches them.
SIZED_BATCH = {10_000: "batch_get_10k", 100_000: "batch_get_100k", 1_000_000: "batch_get_1m"}
SMALLEST = SIZED_BATCH[10_000]
BURST = 200  # Run(wait) calls sent at once in a burst


@dataclass(frozen=True)
class Spec:
    """How one figure is shown: label, unit, and whether it is a latency (compared with the
    baseline p50) or a throughput (compared with the baseline calls/s at 16 in flight). `base` is
    the baseline's figure prefix: the gRPC baseline, or the gateway baseline for HTTP rows."""

    label: str
    unit: str
    latency: bool
    base: str = "baseline"
    # Figures compared with (p50, rate) when not the baseline's: the PostgreSQL rows use SQLite's.
    # Empty: compared with nothing (a figure that is itself the reference of others).
    against: tuple[str, ...] | None = None


GATEWAY = "baseline_gateway"
SPECS: dict[str, Spec] = {
    "baseline_p50_ms": Spec("baseline INSERT+COMMIT p50, 1 in flight", "ms", True),
    "baseline_p99_ms": Spec("baseline INSERT+COMMIT p99, 1 in flight", "ms", True),
    "baseline_calls_per_s": Spec(f"baseline calls/s, {IN_FLIGHT} in flight", "/s", False),
    "baseline_stream_msgs_per_s": Spec("baseline msgs/s on one stream (no work)", "/s", False),
    "echo_run_p50_ms": Spec("echo Run(wait) p50, 1 in flight", "ms", True),
    "echo_run_p99_ms": Spec("echo Run(wait) p99, 1 in flight", "ms", True),
    "echo_runs_per_s": Spec(f"echo Run(wait) runs/s, {IN_FLIGHT} in flight", "/s", False),
    "ai_echo_run_p50_ms": Spec("ai-echo Run(wait) p50, 1 in flight", "ms", True),
    "ai_echo_run_p99_ms": Spec("ai-echo Run(wait) p99, 1 in flight", "ms", True),
    "ai_echo_runs_per_s": Spec(f"ai-echo Run(wait) runs/s, {IN_FLIGHT} in flight", "/s", False),
    # The same agent and model run by pydantic-ai alone in the bench process (bench/ai_bench.py);
    # "vs baseline" is against the ai-echo rows: what is left when agentrun is taken away.
    **{
        key: Spec(label, unit, unit == "ms", against=("ai_echo_run_p50_ms", "ai_echo_runs_per_s"))
        for key, label, unit in (
            ("bare_ai_run_p50_ms", "bare pydantic-ai Agent.run p50, in-process", "ms"),
            ("bare_ai_run_p99_ms", "bare pydantic-ai Agent.run p99, in-process", "ms"),
            ("bare_ai_runs_per_s", f"bare pydantic-ai runs/s, {IN_FLIGHT} concurrent", "/s"),
        )
    },
    "submit_ack_p50_ms": Spec("background Run(wait=false) ack p50", "ms", True),
    "stream_first_event_p50_ms": Spec("StreamRun time to first event p50", "ms", True),
    "stream_events_per_s": Spec("events/s on one stream (slow, delay 0)", "/s", False),
    "batch_get_p50_ms": Spec(f"BatchGetRuns({BATCH}) p50, prefilled store", "ms", True),
    "batch_get_p99_ms": Spec(f"BatchGetRuns({BATCH}) p99, prefilled store", "ms", True),
    # The same at the sizes passed on the way to --prefill; "vs baseline" is against the 10k p50.
    **{
        f"{key}_p50_ms": Spec(
            f"BatchGetRuns({BATCH}) p50, {size:,} stored", "ms", True, against=(f"{SMALLEST}_p50_ms", "")
        )
        for size, key in SIZED_BATCH.items()
    },
    "get_run_p50_ms": Spec("GetRun p50, prefilled store", "ms", True),
    "batch_get_scoped_p50_ms": Spec(f"BatchGetRuns({BATCH}) p50, org-scoped API key", "ms", True),
    # HTTP through the gateway; "vs baseline" is against the gateway baseline (aiohttp -> Insert).
    "baseline_gateway_p50_ms": Spec("HTTP baseline POST->Insert p50, 1 conn", "ms", True, GATEWAY),
    "baseline_gateway_p99_ms": Spec("HTTP baseline POST->Insert p99, 1 conn", "ms", True, GATEWAY),
    "baseline_gateway_calls_per_s": Spec(f"HTTP baseline calls/s, {IN_FLIGHT} conns", "/s", False, GATEWAY),
    "baseline_gateway_sse_events_per_s": Spec("HTTP baseline SSE events/s, one stream", "/s", False, GATEWAY),
    "gateway_run_p50_ms": Spec("gateway POST runs (wait) p50, 1 conn", "ms", True, GATEWAY),
    "gateway_run_p99_ms": Spec("gateway POST runs (wait) p99, 1 conn", "ms", True, GATEWAY),
    "gateway_runs_per_s": Spec(f"gateway POST runs (wait) runs/s, {IN_FLIGHT} conns", "/s", False, GATEWAY),
    "gateway_submit_ack_p50_ms": Spec("gateway POST runs (wait=false) ack p50", "ms", True, GATEWAY),
    "gateway_sse_first_event_p50_ms": Spec("gateway runs:stream first SSE event p50", "ms", True, GATEWAY),
    "gateway_sse_events_per_s": Spec("gateway SSE events/s, one stream (slow)", "/s", False, GATEWAY),
    # BURST echo Run(wait) sent at once, until the last returned: the reference of the PostgreSQL one.
    "echo_burst_ms": Spec(f"echo {BURST} Run(wait) at once, until all done", "ms", True, against=()),
    # The same echo Run(wait) on PostgreSQL; "vs baseline" is against the SQLite echo rows above.
    "pg1_echo_burst_ms": Spec(
        f"PostgreSQL x1 echo {BURST} Run(wait) at once", "ms", True, against=("echo_burst_ms", "")
    ),
    **{
        f"pg{n}_echo_{kind}": Spec(
            f"PostgreSQL x{n} echo Run(wait) {label}",
            unit,
            unit == "ms",
            against=("echo_run_p50_ms", "echo_runs_per_s"),
        )
        for n in (1, 2)
        for kind, label, unit in (
            ("run_p50_ms", "p50, 1 in flight", "ms"),
            ("run_p99_ms", "p99, 1 in flight", "ms"),
            ("runs_per_s", f"runs/s, {IN_FLIGHT} in flight", "/s"),
        )
    },
}
PG_FIGURES = tuple(k for k in SPECS if k.startswith("pg"))
AI_FIGURES = ("ai_echo_run_p50_ms", "ai_echo_run_p99_ms", "ai_echo_runs_per_s")
BARE_AI_FIGURES = ("bare_ai_run_p50_ms", "bare_ai_run_p99_ms", "bare_ai_runs_per_s")


@dataclass(frozen=True)
class Target:
    figure: str
    text: str
    met: Callable[[dict[str, float]], bool]
    needs: tuple[str, ...] = ("baseline_calls_per_s",)  # other figures the check reads


TARGETS = (
    Target(
        "echo_runs_per_s",
        ">= 50% of baseline",
        lambda f: f["echo_runs_per_s"] >= f["baseline_calls_per_s"] / 2,
    ),
    Target("echo_run_p50_ms", "<= 2 ms", lambda f: f["echo_run_p50_ms"] <= 2.0),
    Target(
        "ai_echo_runs_per_s",
        ">= 50% of echo",
        lambda f: f["ai_echo_runs_per_s"] >= f["echo_runs_per_s"] / 2,
        ("echo_runs_per_s",),
    ),
    Target("stream_events_per_s", ">= 20,000/s", lambda f: f["stream_events_per_s"] >= 20_000),
    Target("batch_get_p50_ms", "<= 5 ms", lambda f: f["batch_get_p50_ms"] <= 5.0),
    Target("batch_get_scoped_p50_ms", "<= 5 ms", lambda f: f["batch_get_scoped_p50_ms"] <= 5.0, ()),
    Target(
        "gateway_runs_per_s",
        ">= 50% of baseline",
        lambda f: f["gateway_runs_per_s"] >= f["baseline_gateway_calls_per_s"] / 2,
        ("baseline_gateway_calls_per_s",),
    ),
    Target("gateway_run_p50_ms", "<= 3 ms", lambda f: f["gateway_run_p50_ms"] <= 3.0, ()),
    Target(
        "gateway_sse_first_event_p50_ms",
        "<= 5 ms",
        lambda f: f["gateway_sse_first_event_p50_ms"] <= 5.0,
        (),
    ),
    Target("gateway_sse_events_per_s", ">= 20,000/s", lambda f: f["gateway_sse_events_per_s"] >= 20_000, ()),
    # PostgreSQL, one replica, against SQLite in the same run.
    Target(
        "pg1_echo_runs_per_s",
        ">= 80% of SQLite",
        lambda f: f["pg1_echo_runs_per_s"] >= 0.8 * f["echo_runs_per_s"],
        ("echo_runs_per_s",),
    ),
    Target(
        "pg1_echo_burst_ms",
        "<= 1.5x SQLite",
        lambda f: f["pg1_echo_burst_ms"] <= 1.5 * f["echo_burst_ms"],
        ("echo_burst_ms",),
    ),
)


@dataclass
class Results:
    figures: dict[str, float] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def latency(self, prefix: str, seconds: Sequence[float], *, p99: bool = True) -> None:
        self._add(f"{prefix}_p50_ms", percentile(seconds, 50) * 1000, len(seconds))
        if p99:
            self._add(f"{prefix}_p99_ms", percentile(seconds, 99) * 1000, len(seconds))

    def rate(self, key: str, per_second: float, count: int) -> None:
        self._add(key, per_second, count)

    def _add(self, key: str, value: float, count: int) -> None:
        assert key in SPECS, key
        self.figures[key] = value
        self.samples[key] = count


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count() or 0,
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "grpc": grpc.__version__,
    }


def reference(key: str) -> str | None:
    """The baseline figure `key` is compared with: its baseline's p50 or calls/s (None: none)."""
    spec = SPECS[key]
    if spec.against == ():
        return None
    if spec.against is not None:
        return spec.against[0] if spec.latency else spec.against[1]
    return f"{spec.base}_p50_ms" if spec.latency else f"{spec.base}_calls_per_s"


def ratios(figures: dict[str, float]) -> dict[str, float]:
    """A latency as a multiple of its baseline p50; a throughput as a share of its baseline calls/s."""
    out = {}
    for key, value in figures.items():
        base = reference(key)
        if base is not None and base in figures:
            out[key] = value / figures[base]
    return out


def verdicts(figures: dict[str, float]) -> dict[str, tuple[str, bool | None]]:
    """Target text and PASS (True) / MISS (False) / not measured (None) per figure with a target."""
    out: dict[str, tuple[str, bool | None]] = {}
    for target in TARGETS:
        needed = (*target.needs, target.figure)
        out[target.figure] = (target.text, target.met(figures) if all(k in figures for k in needed) else None)
    return out


def table(results: Results, rows: Collection[str] | None = None) -> Iterator[str]:
    """The table of every figure, or of `rows` only."""
    figures, checks, vs = results.figures, verdicts(results.figures), ratios(results.figures)
    yield f"{'figure':<46} {'value':>12} {'unit':<4} {'vs baseline':>11} {'n':>7}  {'target':<19} result"
    yield "-" * 112
    for key, spec in SPECS.items():
        if rows is not None and key not in rows:
            continue
        text, met = checks.get(key, ("", None))
        verdict = "" if key not in checks else {True: "PASS", False: "MISS", None: "-"}[met]
        value, unit, base, count = "skipped", "", "", ""
        if key in figures:
            value = f"{figures[key]:,.3f}" if spec.latency else f"{figures[key]:,.0f}"
            unit, count = spec.unit, f"{results.samples[key]:,}"
            base = "-" if key not in vs else f"{vs[key]:.2f}x" if spec.latency else f"{vs[key]:.0%}"
        line = f"{spec.label:<46} {value:>12} {unit:<4} {base:>11} {count:>7}  {text:<19} {verdict}"
        yield line.rstrip()


def report(
    results: Results, info: dict[str, Any], plan: Plan, quick: bool, rows: Collection[str] | None = None
) -> None:
    cores = f"{info['cores']} cores ({info['cores_usable']} usable)"
    print(f"\nmachine: {info['cpu']}, {cores}, Python {info['python']}, grpcio {info['grpc']}")
    print(f"platform: {info['platform']}")
    mode = "quick (counts too small for real figures)" if quick else "full"
    series_text = f"up to {plan.samples} samples per 1-in-flight series"
    print(f"mode: {mode}; {series_text}, {plan.duration_s:g} s per {IN_FLIGHT}-in-flight series")
    print("note: the Python client runs on the same machine and shares its cores with the server under test;")
    print("      its own per-call CPU is part of every figure, the baseline's included.\n")
    for line in table(results, rows):
        print(line)
    print("\nvs baseline: latencies as a multiple of the baseline p50; throughputs as a share of the")
    print(f"baseline calls/s at {IN_FLIGHT} in flight (one aiosqlite INSERT + COMMIT per gRPC call).")
    print("HTTP rows: of the HTTP baseline's (an aiohttp JSON handler calling that Insert over one channel,")
    print(f"in one process like `agentrun serve`), with {IN_FLIGHT} keep-alive connections for calls/s.")
    print("PostgreSQL xN rows: of the SQLite echo rows above (N servers on one database, calls alternating);")
    print(
        f"the burst ({BURST} Run(wait) at once, the median of the bursts after a warm-up one): of SQLite's."
    )
    for note in all_notes(results):
        print(f"note: {note}")


def all_notes(results: Results) -> list[str]:
    return [*results.notes, *stream_note(results.figures)]


def stream_note(figures: dict[str, float]) -> list[str]:
    notes = []
    if "stream_events_per_s" in figures and "baseline_stream_msgs_per_s" in figures:
        share = figures["stream_events_per_s"] / figures["baseline_stream_msgs_per_s"]
        notes.append(
            f"events/s on one stream are {share:.0%} of what this client reads from a server that only "
            f"writes prepared messages ({figures['baseline_stream_msgs_per_s']:,.0f}/s)"
        )
    if "gateway_sse_events_per_s" in figures and "baseline_gateway_sse_events_per_s" in figures:
        share = figures["gateway_sse_events_per_s"] / figures["baseline_gateway_sse_events_per_s"]
        notes.append(
            f"gateway SSE events/s on one stream are {share:.0%} of the HTTP baseline's minimal relay "
            f"of prepared gRPC messages ({figures['baseline_gateway_sse_events_per_s']:,.0f}/s)"
        )
    return notes


def write_json(path: Path, results: Results, info: dict[str, Any], plan: Plan, quick: bool) -> None:
    checks = verdicts(results.figures)
    document = {
        "mode": "quick" if quick else "full",
        "machine": info,
        "plan": dataclasses.asdict(plan),
        "figures": results.figures,
        "vs_baseline": ratios(results.figures),
        "samples": results.samples,
        "skipped": results.skipped,
        "targets": {k: {"target": text, "pass": met} for k, (text, met) in checks.items()},
        "notes": all_notes(results),
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def print_measured(results: Results) -> None:
    """The table of the figures measured (a bench that runs some rows leaves the rest skipped), and
    the notes."""
    for line in table(results):
        if "skipped" not in line:
            print(line)
    for note in results.notes:
        print(f"note: {note}")
