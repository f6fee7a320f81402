"""The Python client (`agentrun_client.Client`, blocking) against a running server.

    scripts/dev serve                                   # in another terminal
    .venv/bin/python examples/python_client.py          # AGENTRUN_SERVER=HOST:PORT to point elsewhere

Runs `echo`, streams `tools`, pauses on `approval` and approves it, then lists the last 5 runs.
tests/test_examples.py runs this file against a real server.
"""

from __future__ import annotations

import itertools
import os

from agentrun.v1 import run_pb2

from agentrun_client import Client, ContentDelta, ErrorEvent, Paused, Stop, ToolEnd, ToolStart


def state(run: run_pb2.Run) -> str:
    return run_pb2.RunState.Name(run.state).removeprefix("RUN_STATE_")


def main() -> None:
    with Client(os.environ.get("AGENTRUN_SERVER", "127.0.0.1:50051")) as client:
        # 1. a synchronous run: waits for the run and returns it with its output
        run = client.run("echo", "hello")
        print(f"echo: {state(run)} {run.output!r}")

        # 2. a stream: events as the agent produces them, ending with STOP (or ERROR)
        for event in client.stream("tools", "what is 6*7?"):
            match event:
                case ToolStart(tool_call=call):
                    print(f"  {event.seq} tool {call.name} {call.arguments_json}")
                case ToolEnd(tool_call=call):
                    print(f"  {event.seq} tool result {call.result}")
                case ContentDelta(text=text):
                    print(f"  {event.seq} content {text!r}")
                case Paused() | Stop() | ErrorEvent():
                    print(f"  {event.seq} {type(event).__name__}")
                case _:
                    print(f"  {event.seq} {run_pb2.EventType.Name(event.type)}")

        # 3. human in the loop: the run pauses on a tool that needs approval; approve it
        paused = client.run("approval", "send the report")
        action = paused.pending_action
        print(f"approval: {state(paused)}, waiting for {action.tool_name} {action.arguments_json}")
        done = client.approve(paused.id)
        print(f"approved: {state(done)} {done.output!r}")

        # 4. the last 5 runs, newest first (client.list pages through all of them lazily)
        for listed in itertools.islice(client.list(page_size=5), 5):
            print(f"  #{listed.number} {listed.agent_id:<10} {state(listed):<10} {listed.id}")


if __name__ == "__main__":
    main()
