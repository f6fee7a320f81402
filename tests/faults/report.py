"""What one fault run did and found: figures per scenario, the violations (each with its run id),
printed as a table and written as JSON."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Violation:
    """A broken rule of the stored history or of a stream: the run, the rule, what was seen."""

    scenario: str
    run_id: str
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.scenario}] run {self.run_id}: {self.rule}: {self.detail}"


@dataclass
class Figures:
    """One scenario's counts. `refused` and `breaks` are by gRPC status code."""

    scenario: str
    replicas: int
    chaos_s: float
    submitted: int = 0
    acknowledged: int = 0
    acknowledged_by: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    restarts: int = 0
    db_restarts: int = 0
    db_pauses: int = 0
    pauses_at_run_end: int = 0
    quiet_probes: int = 0
    streams_followed: int = 0
    reattaches: int = 0
    stream_cuts: int = 0
    breaks: Counter[str] = field(default_factory=Counter)
    early_ends: int = 0
    stored_runs: int = 0
    events_checked: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    settle_s: float = 0.0
    elapsed_s: float = 0.0
    violations: list[Violation] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it rebuilds a Counter from (key, count) pairs, counting the pairs.
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data = {k: dict(v) if isinstance(v, Counter) else v for k, v in data.items()}
        data["violations"] = [dataclasses.asdict(v) for v in self.violations]
        return data


@dataclass
class Report:
    seed: int
    seconds: float
    quick: bool
    scenarios: list[Figures] = field(default_factory=list)

    @property
    def violations(self) -> list[Violation]:
        return [v for f in self.scenarios for v in f.violations]

    @property
    def errors(self) -> list[str]:
        return [f"[{f.scenario}] {e}" for f in self.scenarios for e in f.errors]

    def total(self, name: str) -> int:
        return sum(int(getattr(f, name)) for f in self.scenarios)

    def as_dict(self) -> dict[str, Any]:
        totals = {name: self.total(name) for name in SUMMED}
        return {
            "seed": self.seed,
            "seconds": self.seconds,
            "quick": self.quick,
            "totals": totals | {"violations": len(self.violations), "errors": len(self.errors)},
            "scenarios": [f.as_dict() for f in self.scenarios],
        }

    def write_json(self, path: Path) -> None:
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n")

    def render(self) -> str:
        quick = " (quick)" if self.quick else ""
        lines = [f"fault harness: seed {self.seed}, {self.seconds:g} s of faults{quick}"]
        for f in self.scenarios:
            lines += _scenario_lines(f)
        lines.append(
            "total: "
            + ", ".join(f"{name.replace('_', ' ')} {self.total(name)}" for name in SUMMED)
            + f", violations {len(self.violations)}"
        )
        lines += [f"VIOLATION {v}" for v in self.violations]
        lines += [f"HARNESS ERROR {e}" for e in self.errors]
        return "\n".join(lines)


SUMMED = (
    "submitted",
    "acknowledged",
    "kills",
    "restarts",
    "db_restarts",
    "db_pauses",
    "stream_cuts",
    "reattaches",
    "stored_runs",
    "events_checked",
)


def _counter(counts: Counter[str]) -> str:
    return ", ".join(f"{k} {n}" for k, n in sorted(counts.items())) or "none"


def _scenario_lines(f: Figures) -> list[str]:
    return [
        f"{f.scenario} ({f.replicas} server{'s' if f.replicas > 1 else ''}, {f.chaos_s:g} s of faults, "
        f"{f.elapsed_s:.1f} s in all; every run at rest {f.settle_s:.1f} s after the faults):",
        f"  runs: submitted {f.submitted}, acknowledged {f.acknowledged} ({_counter(f.acknowledged_by)}), "
        f"refused {sum(f.refused.values())} ({_counter(f.refused)}), stored {f.stored_runs}",
        f"  faults: kill -9 {f.kills} (restarts {f.restarts}), database restarts {f.db_restarts}, "
        f"database pauses {f.db_pauses} ({f.pauses_at_run_end} at a run's end)",
        f"  streams: followed {f.streams_followed}, cut {f.stream_cuts}, broken by faults "
        f"{sum(f.breaks.values())} ({_counter(f.breaks)}), ended early {f.early_ends}, "
        f"re-attached {f.reattaches}",
        f"  outcomes: {_counter(f.outcomes)}; events checked {f.events_checked}; "
        f"quiet probes {f.quiet_probes}",
        f"  violations {len(f.violations)}" + (f", harness errors {len(f.errors)}" if f.errors else ""),
    ]
