"""bench/bench.py --quick runs end to end and reports every figure (no timing assertions). The
server gets only the plain Python agents, so the ai-echo rows are skipped with a note: the bench
must not need the pydantic-ai runtime to work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
AGENTS_FILE = ROOT / "server" / "agents" / "agents.yaml"
FIGURES = {
    "baseline_p50_ms",
    "baseline_p99_ms",
    "baseline_calls_per_s",
    "baseline_stream_msgs_per_s",
    "echo_run_p50_ms",
    "echo_run_p99_ms",
    "echo_runs_per_s",
    "submit_ack_p50_ms",
    "stream_first_event_p50_ms",
    "stream_events_per_s",
    "batch_get_p50_ms",
    "batch_get_p99_ms",
    "get_run_p50_ms",
    "batch_get_scoped_p50_ms",
    # pydantic-ai alone in the bench process (the server's ai-echo is skipped, this is not)
    "bare_ai_run_p50_ms",
    "bare_ai_run_p99_ms",
    "bare_ai_runs_per_s",
    # HTTP through the gateway, and the HTTP baseline
    "baseline_gateway_p50_ms",
    "baseline_gateway_p99_ms",
    "baseline_gateway_calls_per_s",
    "baseline_gateway_sse_events_per_s",
    "gateway_run_p50_ms",
    "gateway_run_p99_ms",
    "gateway_runs_per_s",
    "gateway_submit_ack_p50_ms",
    "gateway_sse_first_event_p50_ms",
    "gateway_sse_events_per_s",
    # the same echo runs on PostgreSQL, one and two replicas, and 200 at once on SQLite and PostgreSQL
    *(f"pg{n}_echo_{kind}" for n in (1, 2) for kind in ("run_p50_ms", "run_p99_ms", "runs_per_s")),
    "echo_burst_ms",
    "pg1_echo_burst_ms",
}
TARGETS = {
    "echo_runs_per_s",
    "echo_run_p50_ms",
    "stream_events_per_s",
    "batch_get_p50_ms",
    "batch_get_scoped_p50_ms",
    "ai_echo_runs_per_s",
    "gateway_runs_per_s",
    "gateway_run_p50_ms",
    "gateway_sse_first_event_p50_ms",
    "gateway_sse_events_per_s",
    "pg1_echo_runs_per_s",
    "pg1_echo_burst_ms",
}
AI_FIGURES = {"ai_echo_run_p50_ms", "ai_echo_run_p99_ms", "ai_echo_runs_per_s"}


def plain_agents(dest: Path) -> Path:
    config = yaml.safe_load(AGENTS_FILE.read_text())
    config["agents"] = [a for a in config["agents"] if a.get("runtime") == "python"]
    dest.write_text(yaml.safe_dump(config, sort_keys=False))
    return dest


def test_quick_bench_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    agents = plain_agents(tmp_path / "agents.yaml")
    command = [sys.executable, "bench/bench.py", "--quick", "--json", str(out), "--agents-file", str(agents)]
    # Well under a minute on 2 idle cores; the margin is for a machine busy with the rest of the suite.
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    figures = report["figures"]
    assert set(figures) == FIGURES
    assert set(report["skipped"]) == AI_FIGURES  # not configured: skipped, not crashed
    for name, value in figures.items():
        assert isinstance(value, int | float) and value > 0, (name, value)
    assert set(report["targets"]) == TARGETS
    assert all(isinstance(t["pass"], bool) for k, t in report["targets"].items() if k not in AI_FIGURES)
    assert report["targets"]["ai_echo_runs_per_s"]["pass"] is None  # skipped: no verdict
    assert "echo Run(wait) p50" in done.stdout
    assert "gateway POST runs (wait) p50" in done.stdout
    assert "PostgreSQL x2 echo Run(wait) runs/s" in done.stdout
    assert "PostgreSQL x1 echo 200 Run(wait) at once" in done.stdout
