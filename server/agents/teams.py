"""Teams: a team agent delegates to its members through one tool per member, so each delegation is
an ordinary tool call (TOOL_START/TOOL_END naming the member and the instruction)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic_ai import RunContext, Tool

# A member runs an instruction within its team's run and answers with text; the usage it adds
# counts towards the team's run.
Delegate = Callable[[str, RunContext[Any]], Awaitable[str]]


def tool_name(member_id: str) -> str:
    # Agent ids may contain dots; providers accept only letters, digits, "_" and "-" in tool names.
    return member_id.replace(".", "_")


def member_tool(member_id: str, name: str, description: str, delegate: Delegate) -> Tool[Any]:
    async def ask(ctx: RunContext[Any], instruction: str) -> str:
        return await delegate(instruction, ctx)

    about = f": {description}" if description else ""
    return Tool(
        ask,
        name=tool_name(member_id),
        description=f"Delegate a task to the team member {name}{about}. "
        "Give it a complete, self-contained instruction; it answers with its result.",
    )
