"""Built-in tools, shared by every agent runtime. Each is a plain typed function; the registry
maps the name used in agents.yaml to it."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from simpleeval import NumberTooHigh, SimpleEval

MAX_EXPRESSION_CHARS = 200
# Largest power the calculator computes, in bits of its result. Without a bound, a short prompt such
# as ((9**99)**99)**99 keeps a CPU busy for minutes computing a number nobody can read.
MAX_POWER_BITS = 4096


def _numbers(*values: Any) -> None:
    if not all(isinstance(v, int | float) for v in values):
        raise ValueError("only numbers and + - * / // % ** are allowed")


def _power(base: Any, exponent: Any) -> Any:
    _numbers(base, exponent)
    if abs(exponent) > 1000 or (
        abs(base) > 1 and exponent > 0 and exponent * math.log2(abs(base)) > MAX_POWER_BITS
    ):
        raise NumberTooHigh(f"a power above {MAX_POWER_BITS} bits is too large to compute")
    return operator.pow(base, exponent)


def _arithmetic(op: Callable[..., Any]) -> Callable[..., Any]:
    """`op` on numbers only (a string operand could be multiplied into gigabytes)."""

    def checked(*operands: Any) -> Any:
        _numbers(*operands)
        return op(*operands)

    return checked


# Arithmetic only: no names, no functions, no comparisons, no shifts (<< is a power in disguise).
_ARITHMETIC: dict[type[ast.AST], Callable[..., Any]] = {
    ast.Add: _arithmetic(operator.add),
    ast.Sub: _arithmetic(operator.sub),
    ast.Mult: _arithmetic(operator.mul),
    ast.Div: _arithmetic(operator.truediv),
    ast.FloorDiv: _arithmetic(operator.floordiv),
    ast.Mod: _arithmetic(operator.mod),
    ast.Pow: _power,
    ast.USub: _arithmetic(operator.neg),
    ast.UAdd: _arithmetic(operator.pos),
}


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as "2 * (3 + 4)"."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError("expression too long")
    value = SimpleEval(operators=_ARITHMETIC, functions={}, names={}).eval(expression)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError("only numbers and + - * / // % ** are allowed")
    return str(value)


def clock() -> str:
    """Return the current UTC time in ISO-8601."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def send_email(to: str, subject: str, body: str = "") -> str:
    """Send an email (simulated: nothing leaves the server). Needs approval in the demo agents."""
    return f"email to {to} with subject {subject!r} queued for delivery"


TOOLS: dict[str, Callable[..., str]] = {
    "calculator": calculator,
    "clock": clock,
    "send_email": send_email,
}
# Tools that change nothing outside the run: a run that only started these may run again from the
# start when its worker is lost. Any other tool (send_email, a team member) may have acted.
SIDE_EFFECT_FREE = frozenset({"calculator", "clock"})
