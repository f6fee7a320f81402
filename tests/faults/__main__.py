"""`python -m tests.faults [--quick] [--seconds N] [--seed N] [--scenarios sqlite,pg1,pg2]
[--json out.json] [--work DIR]`: run the fault harness, print its figures and every violation, exit
1 on any violation, 2 when the harness itself could not run."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from tests.faults.harness import SCENARIOS, Config, new_seed, run
from tests.faults.report import Report


def parse(argv: list[str]) -> tuple[Config, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the short CI form (9 s of faults)")
    parser.add_argument("--seconds", type=float, help="seconds of faults in all (default 60; quick 9)")
    parser.add_argument("--seed", type=int, help="seed of the faults and the load (default: random)")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--submitters", type=int, help="concurrent clients (default 3; quick 2)")
    parser.add_argument("--json", type=Path, help="also write the figures and violations here")
    parser.add_argument("--work", type=Path, help="keep server logs and SQLite files here")
    args = parser.parse_args(argv)
    overrides: dict[str, object] = {"scenarios": tuple(s for s in args.scenarios.split(",") if s)}
    for name in ("seconds", "submitters", "work"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    seed = args.seed if args.seed is not None else new_seed()
    config = Config.quick_run(seed, **overrides) if args.quick else Config(seed=seed, **overrides)  # type: ignore[arg-type]
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
    return config, args.json


async def _main(config: Config) -> Report:
    # SIGTERM ends the run like Ctrl-C: the servers and PostgreSQL are stopped on the way out.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run(config)


def main(argv: list[str]) -> int:
    config, json_path = parse(argv)
    print(f"fault harness: seed {config.seed} (replay with --seed {config.seed})", flush=True)
    try:
        report = asyncio.run(_main(config))
    except asyncio.CancelledError:
        print("fault harness: stopped by SIGTERM (servers and PostgreSQL stopped)", file=sys.stderr)
        return 2
    print(report.render())
    if json_path is not None:
        report.write_json(json_path)
    if report.errors:
        return 2
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
