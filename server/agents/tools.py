"""Built-in tools, shared by every agent runtime. Each is a plain typed function; the registry
maps the name used in agents.yaml to it."""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}


def _evaluate(node: ast.AST) -> float | int:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        right = _evaluate(node.right)
        # Bound exponents so a prompt cannot make the server compute a huge power.
        if isinstance(node.op, ast.Pow) and abs(right) > 100:
            raise ValueError("exponent too large")
        return _BINARY[type(node.op)](_evaluate(node.left), right)  # type: ignore[no-any-return]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))  # type: ignore[no-any-return]
    raise ValueError("only numbers and + - * / // % ** are allowed")


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as "2 * (3 + 4)"."""
    if len(expression) > 200:
        raise ValueError("expression too long")
    value = _evaluate(ast.parse(expression, mode="eval"))
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
