"""Built-in tools: the calculator computes arithmetic and refuses work that would take the server
minutes (huge powers, string products), and a tool call never stalls the server's event loop."""

from __future__ import annotations

import asyncio
import json

import pytest
from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb

from server.agents.tools import calculator
from tests.conftest import Harness

S = run_pb2


@pytest.mark.parametrize(
    ("expression", "value"),
    [("2 * (3 + 4)", "14"), ("7 / 2", "3.5"), ("-3 + 1", "-2"), ("2 ** 10", "1024"), ("7 // 2 % 2", "1")],
)
def test_the_calculator_computes_arithmetic(expression: str, value: str) -> None:
    assert calculator(expression) == value


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("((((9**99)**99)**99)**9)", "too large"),
        ("9**9**9", "too large"),
        ('"a" * 999999999', "only numbers"),
        ("1 << 100000", "not"),
        ('__import__("os")', "not defined"),
        ("1" * 201, "too long"),
    ],
)
def test_the_calculator_refuses_what_it_should_not_compute(expression: str, problem: str) -> None:
    with pytest.raises(Exception, match=problem):
        calculator(expression)


async def test_a_huge_power_fails_the_tool_call_and_the_server_keeps_answering(h: Harness) -> None:
    """Before the calculator was bounded this expression held the event loop for 16 s."""
    run = asyncio.create_task(h.run("tools", "what is ((((9**99)**99)**99)**9)?", wait=True))
    loop = asyncio.get_running_loop()
    while not run.done():
        started = loop.time()
        await h.stub.ListAgents(pb.ListAgentsRequest())
        assert loop.time() - started < 1.0, "the server stopped answering while the tool ran"
        await asyncio.sleep(0.01)
    done = await asyncio.wait_for(run, timeout=10)
    assert done.state == S.RUN_STATE_COMPLETED
    [call] = done.tool_calls
    assert (call.name, call.is_error) == ("calculator", True)
    assert "too large" in call.result
    assert json.loads(call.arguments_json) == {"expression": "((((9**99)**99)**99)**9)"}
