"""What a run has produced so far (output, tool calls, reasoning, usage), carried across a pause
in the run's `result`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Transcript:
    """What a run has produced so far: carried across a pause in the run's `result`."""

    output: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    reasoning_steps: list[str] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    reasoning: list[str] = field(default_factory=list)
    open_calls: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def resume(cls, result: dict[str, Any] | None) -> Transcript:
        result = result or {}
        return cls(
            output=[result["output"]] if result.get("output") else [],
            tool_calls=list(result.get("tool_calls", [])),
            reasoning_steps=list(result.get("reasoning_steps", [])),
            usage=dict(result.get("usage", {})),
        )

    def close_reasoning(self) -> None:
        if self.reasoning:
            self.reasoning_steps.append("".join(self.reasoning))
            self.reasoning = []

    def add_usage(self, **counts: int) -> None:
        for name, value in counts.items():
            self.usage[name] = self.usage.get(name, 0) + value

    def result(self, **extra: Any) -> dict[str, Any]:
        self.close_reasoning()
        return {
            "output": "".join(self.output),
            "tool_calls": self.tool_calls,
            "reasoning_steps": self.reasoning_steps,
            "usage": self.usage,
            **extra,
        }
