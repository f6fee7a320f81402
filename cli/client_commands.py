"""The client commands of `agentrun`: run, stream, follow, get, list, approve, reject, cancel, events
and agents, on agentrun_client against a running server (--server, $AGENTRUN_SERVER).

Exit codes: 0 the run is COMPLETED (or the command did what it was asked, for lists, cancel and
`run --background`), 1 FAILED or CANCELLED, 2 a usage error, 3 PAUSED (waiting for approve or
reject), 4 the server answered with an error or could not be reached, 5 the run is still QUEUED or
RUNNING (`get`), 130 interrupted (the run goes on)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any, Literal, cast

from agentrun.v1 import run_pb2
from rich.text import Text

from agentrun_client import DEFAULT_TARGET, AgentrunError, Client, RetryPolicy, RunEvent
from cli import render
from cli.errors import UsageError

S = run_pb2.RunState
EXIT_CODES = {
    S.RUN_STATE_COMPLETED: 0,
    S.RUN_STATE_FAILED: 1,
    S.RUN_STATE_CANCELLED: 1,
    S.RUN_STATE_PAUSED: 3,
}
NOT_FINISHED, SERVER_ERROR, INTERRUPTED, BROKEN_PIPE = 5, 4, 130, 141
STATES = [v.name.removeprefix("RUN_STATE_").lower() for v in S.DESCRIPTOR.values if v.number]
Decision = Literal["approve", "reject"]
# A command line waits about a second for an unreachable server, not the library's 15 s.
RETRY = RetryPolicy(max_attempts=4, max_backoff=1.0)
EPILOG = (
    "exit codes: 0 COMPLETED (or done), 1 FAILED or CANCELLED, 2 usage error, 3 PAUSED, "
    "4 server error or unreachable, 5 still QUEUED or RUNNING"
)


class Output:
    """Where a command writes: stdout for results (ProtoJSON with --json), stderr for prompts under
    --json and for failures; and which run a stream was at, for the hint after Ctrl-C."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json
        self.out = render.console(sys.stdout)
        self.err = render.console(sys.stderr)
        self.view = render.LiveView(self.out)
        self.run_id, self.seq = "", 0

    def ask(self, question: Text) -> str | None:
        """The answer typed to a question; None at the end of input."""
        try:
            return (self.err if self.json else self.out).input(question)
        except EOFError:
            return None

    def run(self, run: run_pb2.Run) -> None:
        if self.json:
            render.print_json(run)
        else:
            render.print_run(self.out, run)

    def event(self, event: RunEvent) -> None:
        self.run_id, self.seq = event.run_id, event.seq
        if self.json:
            render.print_json(event.proto, lines=True)
        else:
            self.view.feed(event)

    def fail(self, message: str) -> None:
        self.view.end_line()
        render.error_line(message)

    def interrupted(self) -> None:
        self.view.end_line()
        hint = f"; the run goes on: agentrun follow {self.run_id} --after {self.seq}"
        render.error_line("interrupted" + (hint if self.run_id else ""))


def describe(error: AgentrunError, target: str) -> str:
    """One line for a failed call: `NOT_FOUND RUN_NOT_FOUND: run 'x' not found`."""
    if error.code.name == "UNAVAILABLE":
        return f"cannot reach the agentrun server at {target} (is `agentrun serve` running?)"
    reason = "" if error.reason == error.code.name else f" {error.reason}"
    return f"{error.code.name}{reason}: {' '.join(error.message.split())}"


def exit_code(run: run_pb2.Run) -> int:
    return EXIT_CODES.get(run.state, NOT_FINISHED)


Action = Callable[[Client, argparse.Namespace, Output], int]


def handler(action: Action) -> Callable[[argparse.Namespace], int]:
    """The argparse handler of a command: a client for --server/--api-key, the command, and its
    failures as one line and an exit code."""

    def handle(args: argparse.Namespace) -> int:
        target = args.server or os.environ.get("AGENTRUN_SERVER") or DEFAULT_TARGET
        out = Output(args.json)
        try:
            with Client(target, api_key=args.api_key or None, retry=RETRY) as client:
                return action(client, args, out)
        except AgentrunError as exc:
            out.fail(describe(exc, target))
            return SERVER_ERROR
        except KeyboardInterrupt:
            out.interrupted()
            return INTERRUPTED
        except BrokenPipeError:  # `agentrun list | head`: the reader has all it wants
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return BROKEN_PIPE

    return handle


# ---- run, stream, follow -----------------------------------------------------------------------


def positive_seconds(args: argparse.Namespace) -> float | None:
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError(f"--timeout: {args.timeout:g} is not a positive number of seconds")
    return float(args.timeout) if args.timeout is not None else None


def run_command(client: Client, args: argparse.Namespace, out: Output) -> int:
    wait, timeout = not args.background, positive_seconds(args)
    run = client.run(args.agent, args.message, wait=wait, session_id=args.session, timeout=timeout)
    if args.background:
        if out.json:
            render.print_json(run)
        else:
            print(run.id, render.state_name(run.state), flush=True)
        return 0
    out.run(run)
    return exit_code(run)


def stream_command(client: Client, args: argparse.Namespace, out: Output) -> int:
    timeout = positive_seconds(args)
    events = client.stream(args.agent, args.message, session_id=args.session, timeout=timeout)
    return follow_through(client, events, "", args, out)


def follow_command(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.after < 0:
        raise UsageError(f"--after: {args.after} is not a seq (0 or more)")
    return follow_through(client, client.follow(args.run, args.after), args.run, args, out)


def follow_through(
    client: Client, events: Iterable[RunEvent], run_ref: str, args: argparse.Namespace, out: Output
) -> int:
    """Show the events until the run ends; while it pauses, decide (--yes, --no or a prompt), continue
    it and follow on. Ends with the run's state."""
    for event in events:
        out.event(event)
    run = client.get(out.run_id or run_ref)
    while run.state == S.RUN_STATE_PAUSED:
        decision = decide(run.pending_action, args, out)
        if decision is None:
            break
        client.continue_(run.id, decision, tool_call_id=run.pending_action.tool_call_id, wait=False)
        for event in client.follow(run.id, run.last_seq):
            out.event(event)
        run = client.get(run.id)
    if not out.json:
        out.view.end(run)
    return exit_code(run)


def decide(action: run_pb2.PendingAction, args: argparse.Namespace, out: Output) -> Decision | None:
    """ "approve" or "reject" for a paused tool call, from --yes/--no or a prompt; None to leave the
    run paused (no flag and no terminal to ask on, or the input ended)."""
    if args.yes or args.no:
        decision: Decision = "approve" if args.yes else "reject"
        if not out.json:
            out.view.decided(action, decision)
        return decision
    if not sys.stdin.isatty():
        return None
    question = Text.assemble("approve ", (action.tool_name, "bold"), " ")
    question += Text(render.compact_json(action.arguments_json)) + Text("? [y/N] ")
    answer = out.ask(question)
    if answer is None:
        return None
    return "approve" if answer.strip().lower() in ("y", "yes") else "reject"


# ---- one run -----------------------------------------------------------------------------------


def get_command(client: Client, args: argparse.Namespace, out: Output) -> int:
    if len(args.runs) == 1:
        run = client.get(args.runs[0])
        out.run(run)
        return exit_code(run)
    found = client.batch_get(args.runs)
    for index, run in enumerate(found.runs):
        if out.json:
            render.print_json(run, lines=True)
        else:
            if index:
                out.out.print()
            render.print_run(out.out, run)
    for missing in found.missing_run_ids:
        render.error_line(f"NOT_FOUND RUN_NOT_FOUND: run {missing!r} not found")
    return SERVER_ERROR if found.missing_run_ids else 0


def decision_command(decision: Decision) -> Action:
    def command(client: Client, args: argparse.Namespace, out: Output) -> int:
        run = client.continue_(args.run, decision, reason=args.reason, wait=True)
        out.run(run)
        return exit_code(run)

    return command


def cancel_command(client: Client, args: argparse.Namespace, out: Output) -> int:
    out.run(client.cancel(args.run, args.reason))
    return 0


def events_command(client: Client, args: argparse.Namespace, out: Output) -> int:
    for event in client.events(args.run, args.after):
        if out.json:
            render.print_json(event.proto, lines=True)
        else:
            out.out.print(render.event_line(event))
    return 0


# ---- lists -------------------------------------------------------------------------------------


def list_command(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.limit < 1:
        raise UsageError(f"--limit: {args.limit} is not a positive number")
    runs: list[run_pb2.Run] = []
    pages = client.list(args.agent, args.state, args.session, page_size=min(args.limit, 1000))
    try:
        for run in pages:
            runs.append(run)
            if len(runs) >= args.limit:
                break
    finally:
        pages.close()
    if out.json:
        for run in runs:
            render.print_json(run, lines=True)
    else:
        out.out.print(render.runs_table(runs))
    return 0


def agents_command(client: Client, args: argparse.Namespace, out: Output) -> int:
    agents = client.agents()
    if out.json:
        for agent in agents:
            render.print_json(agent, lines=True)
    else:
        out.out.print(render.agents_table(agents))
    return 0


# ---- parsers -----------------------------------------------------------------------------------


def common_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("server")
    group.add_argument(
        "--server",
        metavar="HOST:PORT",
        help=f"the agentrun gRPC server (env AGENTRUN_SERVER, default {DEFAULT_TARGET})",
    )
    group.add_argument("--api-key", metavar="KEY", help="sent as a bearer token (env AGENTRUN_API_KEY)")
    common.add_argument(
        "--json", action="store_true", help="ProtoJSON output: one object per line for streams and lists"
    )
    return common


def submit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("agent", metavar="AGENT", help="the agent id (see `agentrun agents`)")
    parser.add_argument("message", metavar="MESSAGE", help="what to ask the agent")
    parser.add_argument("--session", metavar="S", help="the conversation the run belongs to")
    parser.add_argument("--timeout", metavar="SECONDS", type=float, help="the run's time limit")


def decision_arguments(parser: argparse.ArgumentParser) -> None:
    answer = parser.add_mutually_exclusive_group()
    answer.add_argument("--yes", action="store_true", help="approve every paused tool call without asking")
    answer.add_argument("--no", action="store_true", help="reject every paused tool call without asking")


def add(commands: Any, common: argparse.ArgumentParser, name: str, action: Action, text: str) -> Any:
    parser = commands.add_parser(name, parents=[common], help=text, description=text + ".", epilog=EPILOG)
    parser.set_defaults(handler=handler(action))
    return parser


def add_parsers(commands: Any) -> None:
    common = common_parser()
    run = add(commands, common, "run", run_command, "start a run, wait for it and print it")
    submit_arguments(run)
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--wait", action="store_false", dest="background", help="wait for the run (default)")
    mode.add_argument("--background", action="store_true", help="print the queued run's id and state")
    run.set_defaults(background=False)

    stream = add(commands, common, "stream", stream_command, "start a run and show it live")
    submit_arguments(stream)
    decision_arguments(stream)

    follow = add(commands, common, "follow", follow_command, "show a run live, from its start or a seq")
    follow.add_argument("run", metavar="RUN", help="the run id or number")
    follow.add_argument("--after", metavar="SEQ", type=int, default=0, help="only events after this seq")
    decision_arguments(follow)

    get = add(commands, common, "get", get_command, "print runs by id or number")
    get.add_argument("runs", metavar="RUN", nargs="+", help="run ids or numbers")

    runs = add(commands, common, "list", list_command, "list runs, newest first")
    runs.add_argument(
        "--state",
        action="append",
        type=str.lower,
        choices=STATES,
        help="only runs in this state (repeat for several)",
    )
    runs.add_argument("--agent", metavar="A", help="only runs of this agent")
    runs.add_argument("--session", metavar="S", help="only runs of this session")
    runs.add_argument("--limit", metavar="N", type=int, default=20, help="at most N runs (default 20)")

    for name, text in (
        ("approve", "approve the tool call a paused run waits for, and wait for the run"),
        ("reject", "reject the tool call a paused run waits for, and wait for the run"),
        ("cancel", "cancel a queued, running or paused run"),
    ):
        action = cancel_command if name == "cancel" else decision_command(cast(Decision, name))
        parser = add(commands, common, name, action, text)
        parser.add_argument("run", metavar="RUN", help="the run id or number")
        parser.add_argument("--reason", metavar="R", default="", help="recorded with the decision")

    events = add(commands, common, "events", events_command, "print a run's stored events, one a line")
    events.add_argument("run", metavar="RUN", help="the run id or number")
    events.add_argument("--after", metavar="SEQ", type=int, default=0, help="only events after this seq")

    add(commands, common, "agents", agents_command, "list the configured agents")
