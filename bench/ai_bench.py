"""A bare pydantic-ai run of the demo model, in the bench's own process with nothing of agentrun
around it: `Agent(demo model).run(message)`, p50 at 1 in flight and runs/s at 16 concurrent. The
figures bound what ai-echo (the same agent and model served by agentrun) can reach, and the notes
say what agentrun adds per run.

    python -m bench.ai_bench [--quick]   # these rows, with echo and ai-echo on a server, alone
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.measure import FULL, IN_FLIGHT, QUICK, Plan, series, throughput, timed
from bench.processes import Agentrun
from bench.report import BARE_AI_FIGURES, Results, print_measured

MESSAGE = "hello from the benchmark"  # the message every Run(wait) row sends
INSTRUCTIONS = "Repeat the user's message."  # ai-echo's, from server/agents/agents.yaml


def bare_agent() -> Any:
    from pydantic_ai import Agent

    from server.agents.demo_model import build_demo_model

    return Agent(build_demo_model(), instructions=INSTRUCTIONS)


async def bench_bare(plan: Plan, results: Results) -> None:
    try:
        agent = bare_agent()
    except ImportError as exc:
        results.skipped |= dict.fromkeys(BARE_AI_FIGURES, f"pydantic-ai does not load: {exc}")
        return

    async def call() -> object:
        result = await agent.run(MESSAGE)
        if result.output != MESSAGE:
            raise RuntimeError(f"the bare demo agent answered {result.output!r}")
        return result

    results.latency("bare_ai_run", await series(timed(call), plan))
    results.rate("bare_ai_runs_per_s", *await throughput(call, plan))
    results.notes.extend(extra_cost(results.figures))


def extra_cost(figures: dict[str, float]) -> list[str]:
    """What agentrun adds to a pydantic-ai run: ai-echo against the bare run of the same agent."""
    names = ("ai_echo_run_p50_ms", "bare_ai_run_p50_ms", "ai_echo_runs_per_s", "bare_ai_runs_per_s")
    if not all(name in figures for name in names):
        return []
    served, bare, served_rate, bare_rate = (figures[name] for name in names)
    return [
        f"ai-echo Run(wait) p50 is {served - bare:.2f} ms over a bare pydantic-ai run of the same agent "
        f"({served:.2f} vs {bare:.2f} ms, {served / bare:.1f}x): gRPC, the client, the queue, storing "
        "the run and its events, and pydantic-ai streaming the answer",
        f"at {IN_FLIGHT} in flight ai-echo makes {served_rate:,.0f} runs/s ({1000 / served_rate:.2f} ms "
        f"a run), the bare run {bare_rate:,.0f}/s ({1000 / bare_rate:.2f} ms a run, in one process: one "
        "core at most)",
        *ceiling(figures),
    ]


def ceiling(figures: dict[str, float]) -> list[str]:
    """The most ai-echo can make if it cost what an echo run costs plus what pydantic-ai costs alone,
    both on the server's one core (its event loop and the writer share the GIL): the time of an
    echo run plus that of a bare run."""
    if "echo_runs_per_s" not in figures:
        return []
    echo, bare = figures["echo_runs_per_s"], figures["bare_ai_runs_per_s"]
    best = 1 / (1 / echo + 1 / bare)
    return [
        f"ceiling: an echo run's time plus a bare pydantic-ai run's is {1000 / best:.2f} ms, at most "
        f"{best:,.0f} ai-echo runs/s, {100 * best / echo:.0f} % of echo's {echo:,.0f}/s"
    ]


async def standalone(plan: Plan) -> Results:
    from bench.bench import Stub, ai_echo_unavailable, bench_sync

    results = Results()
    with tempfile.TemporaryDirectory(prefix="agentrun-ai-bench-") as tmp:
        servers = Agentrun(Path(tmp), None, results)
        async with servers.serve("agentrun", servers.work / "ai.db") as listening:
            import grpc

            async with grpc.aio.insecure_channel(listening.grpc) as channel:
                stub = Stub(channel)
                await bench_sync(stub, "echo", plan, results)
                why_not = await ai_echo_unavailable(stub)
                if why_not:
                    raise RuntimeError(why_not)
                await bench_sync(stub, "ai-echo", plan, results)
    await bench_bare(plan, results)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="echo, ai-echo and a bare pydantic-ai run of the demo model."
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--duration", type=float, help="seconds per 16-in-flight series")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.duration:
        plan = dataclasses.replace(plan, duration_s=args.duration)
    results = asyncio.run(standalone(plan))
    print_measured(results)


if __name__ == "__main__":
    main()
