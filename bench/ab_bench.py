"""Two `agentrun serve` processes side by side, A and B, started with different flags: the echo
Run(wait) rows over gRPC and the gateway rows (bench/gateway_bench.py), each measured on both in
turns, `--rounds` times, so both see the same load; the table gives the median of the rounds and
B's figure as a multiple of A's. By default A's gateway calls the server in process and B's over
loopback gRPC (`--gateway-loopback`):

    python -m bench.ab_bench [--quick] [--rounds 3] [--json out.json]
    python -m bench.ab_bench --b=--event-loop=uvloop     # asyncio's own loop vs uvloop"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import statistics
import tempfile
from pathlib import Path

import grpc
from agentrun.v1 import run_service_pb2_grpc

from bench import gateway_bench
from bench.bench import bench_sync, drained
from bench.measure import FULL, QUICK, Plan
from bench.processes import Listening, agentrun_argv, server_process
from bench.report import Results

Figures = dict[str, dict[str, float]]  # mode -> row -> figure
ROWS = {
    "echo_run_p50_ms": "gRPC echo Run(wait) p50 (ms)",
    "echo_runs_per_s": "gRPC echo runs/s, 16 in flight",
    "gateway_run_p50_ms": "sync run p50, 1 connection (ms)",
    "gateway_run_p99_ms": "sync run p99, 1 connection (ms)",
    "gateway_runs_per_s": "sync runs/s, 16 connections",
    "gateway_submit_ack_p50_ms": "submit ack p50 (ms)",
    "gateway_sse_first_event_p50_ms": "first SSE frame p50 (ms)",
    "gateway_sse_events_per_s": "SSE events/s, one stream",
}


async def one_round(plan: Plan, servers: dict[str, Listening]) -> Figures:
    figures = {}
    for mode, listening in servers.items():
        results = Results()
        async with grpc.aio.insecure_channel(listening.grpc) as channel:
            stub = run_service_pb2_grpc.RunServiceStub(channel)
            await bench_sync(stub, "echo", plan, results)
            wait = functools.partial(drained, stub)
            await gateway_bench.bench_gateway(plan, f"http://{listening.http}", wait, results)
        figures[mode] = results.figures
    return figures


async def main_async(plan: Plan, rounds: int, modes: dict[str, list[str]]) -> Figures:
    with tempfile.TemporaryDirectory(prefix="agentrun-ab-") as tmp:
        work = Path(tmp)
        async with contextlib.AsyncExitStack() as stack:
            servers = {}
            for i, (mode, flags) in enumerate(modes.items()):
                argv = agentrun_argv(work / f"bench-{i}.db", None, gateway=True) + flags
                servers[mode] = await stack.enter_async_context(
                    server_process(f"agentrun-{i}", argv, work, ("gRPC", "HTTP"))
                )
            measured = [await one_round(plan, servers) for _ in range(rounds)]
    return {mode: {row: statistics.median(r[mode][row] for r in measured) for row in ROWS} for mode in modes}


def report(medians: Figures, rounds: int) -> str:
    (a_name, a), (b_name, b) = medians.items()
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [f"median of {rounds} rounds; {os.cpu_count()} cores, load {load}"]
    lines += [f"A: {a_name}", f"B: {b_name}", f"{'':36} {'A':>10} {'B':>10} {'B/A':>7}"]
    for row, label in ROWS.items():
        ratio = b[row] / a[row] if a[row] else float("nan")
        lines.append(f"{label:36} {a[row]:10.2f} {b[row]:10.2f} {ratio:6.2f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--a", default="", help="A's extra `agentrun serve` flags (default: none)")
    parser.add_argument("--b", default="--gateway-loopback", help="B's (default: --gateway-loopback)")
    args = parser.parse_args()
    modes = {f"serve {args.a}".strip(): args.a.split(), f"serve {args.b}".strip(): args.b.split()}
    if len(modes) != 2:
        parser.error("--a and --b must differ")
    medians = asyncio.run(main_async(QUICK if args.quick else FULL, args.rounds, modes))
    print(report(medians, args.rounds))
    if args.json:
        args.json.write_text(json.dumps(medians, indent=2))


if __name__ == "__main__":
    main()
