"""How the client commands show things: runs, tables of runs and agents, stored events, and the live
view of a stream (reasoning dim, content as it arrives, tool calls as `→ name {args}` / `← result`),
with `rich` for a terminal; `--json` prints ProtoJSON instead, one object per line for streams and
lists. Text from the server is always shown as text, never read as rich markup."""

from __future__ import annotations

import datetime
import json
import os
import sys
from typing import TextIO

from agentrun.v1 import run_pb2
from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agentrun_client import (
    ContentDelta,
    ErrorEvent,
    Paused,
    ReasoningDelta,
    RunEvent,
    Start,
    StatusChange,
    Stop,
    ToolEnd,
    ToolStart,
)

S = run_pb2.RunState
STATE_STYLES = {
    S.RUN_STATE_QUEUED: "blue",
    S.RUN_STATE_RUNNING: "cyan",
    S.RUN_STATE_PAUSED: "magenta",
    S.RUN_STATE_COMPLETED: "green",
    S.RUN_STATE_FAILED: "red",
    S.RUN_STATE_CANCELLED: "yellow",
}
WIDE = 200  # a pipe gets tables this wide at most, so ids are never folded


def console(file: TextIO) -> Console:
    """A console on `file`: styled on a terminal, plain text on a pipe (and wide, for tables)."""
    width = None if file.isatty() or os.environ.get("COLUMNS") else WIDE
    return Console(file=file, width=width, highlight=False, soft_wrap=True)


def state_name(state: run_pb2.RunState) -> str:
    return S.Name(state).removeprefix("RUN_STATE_")


def state_text(state: run_pb2.RunState) -> Text:
    return Text(state_name(state), style=STATE_STYLES.get(state, ""))


def compact_json(text: str) -> str:
    """A JSON text on one line (`{"expression": "6*7"}`); anything else as it is."""
    try:
        return json.dumps(json.loads(text), ensure_ascii=False)
    except ValueError:
        return text


def local_time(stamp: datetime.datetime) -> str:
    return stamp.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


# ---- JSON ------------------------------------------------------------------------------------


def to_json(message: Message, *, lines: bool = False) -> str:
    """ProtoJSON of a message: one line for streams and lists, indented otherwise."""
    return json.dumps(json_format.MessageToDict(message), indent=None if lines else 2, ensure_ascii=False)


def print_json(message: Message, *, lines: bool = False) -> None:
    print(to_json(message, lines=lines), flush=True)


# ---- runs ------------------------------------------------------------------------------------


def tool_call_lines(call: run_pb2.ToolCall) -> list[Text]:
    start = Text.assemble(("→ ", "cyan"), (call.name, "bold"), " ", compact_json(call.arguments_json))
    if not call.result and not call.is_error:
        return [start]
    return [start, Text.assemble(("← ", "red" if call.is_error else "green"), call.result)]


def pending_lines(run: run_pb2.Run) -> list[Text]:
    action = run.pending_action
    return [
        Text.assemble(("⏸ awaits approval: ", "magenta"), (action.tool_name, "bold"), " ")
        + Text(compact_json(action.arguments_json)),
        Text(f"  agentrun approve {run.id}   or   agentrun reject {run.id}", style="dim"),
    ]


def error_text(run: run_pb2.Run) -> Text:
    reason = f"{run.error.reason}: " if run.error.reason else ""
    return Text.assemble(("✗ ", "red"), state_text(run.state), f" {reason}{run.error.message}")


def run_lines(run: run_pb2.Run) -> list[Text]:
    """A run in a few lines: a header (id, number, agent, state), its tool calls, its output, then
    its error or the approval it waits for."""
    header = Text.assemble(("run ", "dim"), run.id, (f" #{run.number} ", "dim"), run.agent_id, " ")
    lines = [header + state_text(run.state)]
    for call in run.tool_calls:
        lines += [Text("  ") + line for line in tool_call_lines(call)]
    if run.output:
        lines.append(Text(run.output))
    if run.state in (S.RUN_STATE_FAILED, S.RUN_STATE_CANCELLED):
        lines.append(error_text(run))
    if run.state == S.RUN_STATE_PAUSED:
        lines += pending_lines(run)
    return lines


def print_run(out: Console, run: run_pb2.Run) -> None:
    for line in run_lines(run):
        out.print(line)


def runs_table(runs: list[run_pb2.Run]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("#", "ID", "AGENT", "STATE", "CREATED"):
        table.add_column(name, no_wrap=True, justify="right" if name == "#" else "left")
    table.add_column("OUTPUT", no_wrap=True)
    for run in runs:
        created = local_time(run.create_time.ToDatetime(tzinfo=datetime.UTC))
        output = one_line(run.output, 40)
        table.add_row(str(run.number), run.id, run.agent_id, state_text(run.state), created, Text(output))
    return table


def agents_table(agents: list[run_pb2.Agent]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name in ("ID", "RUNTIME/MODEL", "TOOLS"):
        table.add_column(name, no_wrap=True)
    table.add_column("DESCRIPTION")
    for agent in agents:
        model = agent.model + (" (team: " + ", ".join(agent.member_ids) + ")" if agent.is_team else "")
        needs = set(agent.approval_tools)
        tools = ", ".join(f"{tool}*" if tool in needs else tool for tool in agent.tools)
        table.add_row(agent.id, model, tools, Text(agent.description))
    return table


# ---- events ----------------------------------------------------------------------------------


def event_detail(event: RunEvent) -> Text:
    """What one stored event says, after its seq, time and type."""
    match event:
        case Start(session_id=session, attempt=attempt):
            return Text(f"session {session}, attempt {attempt}", style="dim")
        case ReasoningDelta(text=text):
            return Text(json.dumps(text, ensure_ascii=False), style="dim")
        case ContentDelta(text=text):
            return Text(json.dumps(text, ensure_ascii=False))
        case ToolStart(tool_call=call):
            return tool_call_lines(call)[0]
        case ToolEnd(tool_call=call):
            return tool_call_lines(call)[-1] + Text(f" ({call.name}, {call.duration_ms} ms)", style="dim")
        case Paused(pending_action=action):
            return Text(f"{action.tool_name} {compact_json(action.arguments_json)}")
        case Stop(state=state):
            return state_text(state)
        case ErrorEvent(reason=reason, message=message):
            return Text(f"{reason}: {message}", style="red")
        case StatusChange(state=state, reason=reason):
            return state_text(state) + Text(f" ({reason})", style="dim")
    return Text("")


def event_line(event: RunEvent) -> Text:
    kind = run_pb2.EventType.Name(event.type).removeprefix("EVENT_TYPE_")
    stamp = event.time.astimezone().strftime("%H:%M:%S.%f")[:-3]
    return Text.assemble(f"{event.seq:>4} ", (stamp, "dim"), f" {kind:<15} ") + event_detail(event)


# ---- live ------------------------------------------------------------------------------------


class LiveView:
    """The human view of a stream. Deltas of the same kind continue one line as they arrive; any
    other event starts a line of its own."""

    def __init__(self, out: Console) -> None:
        self.out = out
        self.open: str | None = None  # "reasoning" or "content" while a line of deltas is open
        self.shown_pause = False  # the pending action of the last PAUSED event is on screen

    def end_line(self) -> None:
        if self.open is not None:
            self.out.print()
            self.open = None

    def _line(self, text: Text) -> None:
        self.end_line()
        self.out.print(text)

    def _delta(self, kind: str, text: str, style: str) -> None:
        if self.open != kind:
            self.end_line()
            self.open = kind
        self.out.print(Text(text, style=style), end="")

    def feed(self, event: RunEvent) -> None:
        match event:
            case ReasoningDelta(text=text):
                self._delta("reasoning", text, "dim")
            case ContentDelta(text=text):
                self._delta("content", text, "")
            case Start():
                self._line(Text(f"▶ run {event.run_id}", style="dim"))
            case ToolStart(tool_call=call) | ToolEnd(tool_call=call):
                self._line(tool_call_lines(call)[0 if isinstance(event, ToolStart) else -1])
            case StatusChange():
                self._line(Text("· ", style="dim") + event_detail(event))
            case Paused():
                self.shown_pause = True
                self._line(Text("⏸ paused: ", style="magenta") + event_detail(event))
            case Stop() | ErrorEvent():
                self.end_line()  # the end line comes from the run itself

    def decided(self, action: run_pb2.PendingAction, decision: str) -> None:
        """A decision taken by --yes or --no, shown where a prompt would have been."""
        done, flag = ("approved", "--yes") if decision == "approve" else ("rejected", "--no")
        self._line(Text(f"{done} {action.tool_name} ({flag})", style="bold"))

    def end(self, run: run_pb2.Run) -> None:
        self.end_line()
        where = Text(f"  #{run.number} {run.id}", style="dim")
        if run.state == S.RUN_STATE_COMPLETED:
            self.out.print(Text.assemble(("✓ ", "green"), state_text(run.state), where))
            for question in run.followups:
                self.out.print(Text(f"  ? {question}", style="dim"))
        elif run.state == S.RUN_STATE_PAUSED:
            lines = pending_lines(run)
            self.out.print(Text.assemble(("⏸ ", "magenta"), state_text(run.state), where))
            for line in lines[1:] if self.shown_pause else lines:
                self.out.print(line)
        elif run.state in (S.RUN_STATE_FAILED, S.RUN_STATE_CANCELLED):
            self.out.print(error_text(run))
        else:
            self.out.print(Text.assemble("· ", state_text(run.state), where))


def error_line(message: str) -> None:
    """A failure: one line on stderr."""
    sys.stdout.flush()
    print(f"agentrun: {message}", file=sys.stderr, flush=True)
