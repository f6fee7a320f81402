"""agentrun benchmark: starts the real server (and minimal baseline servers) as subprocesses and
measures them over gRPC with grpc.aio clients, and over HTTP through the gateway with an aiohttp
client. Prints a table of figures, each with its ratio to the baseline, and the targets (PASS/MISS).

    python bench/bench.py [--quick] [--json PATH] [--duration S] [--samples N] [--prefill N]
                          [--agents-file PATH]
    python bench/bench.py --streams N[,N...] [...]   # only streams at scale (bench/streams_bench.py)

Modules: measure (plan, load generation), processes (server subprocesses), report (figures,
targets, table, JSON), gateway_bench (the HTTP rows); this one has the gRPC rows and main.
See bench/README.md for what each figure means."""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python bench/bench.py`: import the sibling modules through the `bench` package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import dataclasses
import tempfile
import time
from collections.abc import AsyncIterator, Sequence

import grpc
from agentrun.v1 import run_pb2, run_service_pb2_grpc
from agentrun.v1 import run_service_pb2 as pb

from bench import ai_bench, gateway_bench, pg_bench, store_bench, streams_bench
from bench.measure import FULL, IN_FLIGHT, QUICK, Opener, Plan, series, stream_rate, throughput, timed
from bench.processes import Agentrun, baseline_argv, server_process
from bench.report import AI_FIGURES, Results, machine, report, write_json

MESSAGE = gateway_bench.MESSAGE
COMPLETED = run_pb2.RUN_STATE_COMPLETED
STOP_EVENT = run_pb2.EVENT_TYPE_STOP

Stub = run_service_pb2_grpc.RunServiceStub


# ---- the baseline -----------------------------------------------------------------------------


async def bench_baseline(plan: Plan, work: Path, results: Results) -> None:
    payload = run_request("echo").SerializeToString()
    async with (
        server_process("baseline", baseline_argv(work / "baseline.db"), work) as listening,
        grpc.aio.insecure_channel(listening.grpc) as channel,
    ):
        # No (de)serialisers: raw bytes, as the baseline server sees them.
        method = channel.unary_unary(
            "/bench.Baseline/Insert", request_serializer=None, response_deserializer=None
        )

        async def call() -> object:
            return await method(payload)

        results.latency("baseline", await series(timed(call), plan))
        results.rate("baseline_calls_per_s", *await throughput(call, plan))
        stream = channel.unary_stream(
            "/bench.Baseline/Stream", request_serializer=None, response_deserializer=None
        )
        results.rate(
            "baseline_stream_msgs_per_s", *await stream_rate(lambda n: stream(n.to_bytes(4, "little")), plan)
        )


# ---- the agentrun server: runs and streams ----------------------------------------------------


def run_request(agent_id: str, message: str = MESSAGE, *, wait: bool = True) -> pb.RunRequest:
    return pb.RunRequest(agent_id=agent_id, input=run_pb2.RunInput(message=message), wait=wait)


async def check_run(stub: Stub, agent_id: str) -> str | None:
    """None when one Run(wait) of the agent completes, otherwise why not."""
    try:
        run = (await stub.Run(run_request(agent_id))).run
    except grpc.aio.AioRpcError as exc:
        return f"{exc.code().name}: {exc.details()}"
    if run.state != COMPLETED:
        return f"run ended {run_pb2.RunState.Name(run.state)}: {run.error.reason} {run.error.message}".strip()
    return None


async def bench_sync(stub: Stub, agent_id: str, plan: Plan, results: Results) -> None:
    request = run_request(agent_id)
    prefix = agent_id.replace("-", "_") + "_run"

    async def call() -> object:
        return await stub.Run(request)

    results.latency(prefix, await series(timed(call), plan))
    results.rate(f"{prefix}s_per_s", *await throughput(call, plan))


async def bench_ack(stub: Stub, plan: Plan, results: Results) -> None:
    request = run_request("echo", wait=False)

    async def call() -> object:
        return await stub.Run(request)

    results.latency("submit_ack", await series(timed(call), plan), p99=False)
    await drained(stub)


async def drained(stub: Stub, timeout_s: float = 120.0) -> None:
    """Wait until the background runs submitted so far have finished."""
    busy = pb.ListRunsRequest(states=[run_pb2.RUN_STATE_QUEUED, run_pb2.RUN_STATE_RUNNING], page_size=1)
    async with asyncio.timeout(timeout_s):
        while (await stub.ListRuns(busy)).total_size:  # noqa: ASYNC110 - the state is in another process
            await asyncio.sleep(0.05)


async def bench_first_event(stub: Stub, plan: Plan, results: Results) -> None:
    request = pb.StreamRunRequest(run=run_request("echo", wait=False))

    async def measure() -> float:
        start = time.perf_counter()
        first = 0.0
        async for _ in stub.StreamRun(request):  # read to the end: the run finishes before the next
            first = first or time.perf_counter() - start
        return first

    results.latency("stream_first_event", await series(measure, plan, plan.stream_samples), p99=False)


def slow_stream(stub: Stub) -> Opener:
    """Opens a StreamRun of the slow agent with `count` events (START, the tokens, STOP), no delay."""

    async def events(count: int) -> AsyncIterator[object]:
        tokens = count - 2
        request = pb.StreamRunRequest(run=run_request("slow", f"tokens={tokens} delay_ms=0", wait=False))
        seen, last = 0, run_pb2.EVENT_TYPE_UNSPECIFIED
        async for response in stub.StreamRun(request):
            seen, last = seen + 1, response.event.type
            yield response
        if last != STOP_EVENT or seen != count:
            raise RuntimeError(f"slow stream ended after {seen} events with {run_pb2.EventType.Name(last)}")

    return events


async def bench_agentrun(plan: Plan, servers: Agentrun, results: Results) -> None:
    """The gRPC rows, then the gateway rows through the same server's HTTP gateway."""
    async with (
        servers.serve("agentrun", servers.work / "bench.db", gateway=True) as listening,
        grpc.aio.insecure_channel(listening.grpc) as channel,
    ):
        stub = Stub(channel)
        await bench_sync(stub, "echo", plan, results)
        why_not = await ai_echo_unavailable(stub)
        if why_not:
            results.skipped |= dict.fromkeys(AI_FIGURES, why_not)
            results.notes.append(f"ai-echo rows skipped: {why_not}")
        else:
            await bench_sync(stub, "ai-echo", plan, results)
        # In this process, right after ai-echo (the load of the machine changes): the server idles.
        await ai_bench.bench_bare(plan, results)
        await bench_ack(stub, plan, results)
        await bench_first_event(stub, plan, results)
        results.rate("stream_events_per_s", *await stream_rate(slow_stream(stub), plan))
        await gateway_bench.bench_gateway(plan, f"http://{listening.http}", lambda: drained(stub), results)


async def ai_echo_unavailable(stub: Stub) -> str | None:
    agents = (await stub.ListAgents(pb.ListAgentsRequest())).agents
    if "ai-echo" not in {a.id for a in agents}:
        return "agent ai-echo is not configured in the server's agents file"
    return await check_run(stub, "ai-echo")


# ---- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark agentrun against a minimal gRPC+SQLite baseline.")
    parser.add_argument("--quick", action="store_true", help="small counts (< 40 s), for the smoke test")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--duration", type=float, help=f"seconds per {IN_FLIGHT}-in-flight series")
    parser.add_argument("--samples", type=int, help="calls per 1-in-flight latency series")
    parser.add_argument("--prefill", type=int, help="runs stored before the BatchGetRuns series")
    parser.add_argument("--agents-file", type=Path, help="agents.yaml for the server (default: its own)")
    parser.add_argument("--streams", help="instead: N SSE streams at once, e.g. 1000,5000 (streams_bench)")
    streams_bench.add_arguments(parser)
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    plan = QUICK if args.quick else FULL
    overrides = {"duration_s": args.duration, "samples": args.samples, "prefill": args.prefill}
    return dataclasses.replace(plan, **{k: v for k, v in overrides.items() if v is not None})


async def bench(plan: Plan, agents_file: Path | None) -> Results:
    results = Results()
    with tempfile.TemporaryDirectory(prefix="agentrun-bench-") as tmp:
        work = Path(tmp)
        await bench_baseline(plan, work, results)
        await gateway_bench.bench_baseline_gateway(plan, work, results)
        servers = Agentrun(work, agents_file, results)
        await bench_agentrun(plan, servers, results)
        await store_bench.bench_store(plan, servers, results)
        await pg_bench.bench_postgres(plan, work, agents_file, run_request("echo"), results)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.streams:
        streams_bench.run(streams_bench.options_from(args, args.streams), args.json)
        return
    plan = make_plan(args)
    started = time.perf_counter()
    results = asyncio.run(bench(plan, args.agents_file))
    info = machine()
    report(results, info, plan, args.quick)
    print(f"\ntotal bench time {time.perf_counter() - started:.0f} s")
    if args.json:
        write_json(args.json, results, info, plan, args.quick)


if __name__ == "__main__":
    main()
