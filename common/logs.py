"""Log output for the server and the gateway: plain text, or JSON lines (`--log-format json`) where
every line logged while a run executes carries that run's run_id, org_id, agent_id and attempt."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.json import JsonFormatter

FORMATS = ("text", "json")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_RUN: ContextVar[dict[str, Any] | None] = ContextVar("agentrun_log_run", default=None)


def _with_run_fields(factory: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        for name, value in (_RUN.get() or {}).items():
            setattr(record, name, value)
        return record

    make.agentrun_run_fields = True  # type: ignore[attr-defined]
    return make


def _install() -> None:
    """Give every log record the fields of the run executing in its task (once per process), so
    every handler sees them: ours, and any an embedding application or a test adds."""
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "agentrun_run_fields", False):
        logging.setLogRecordFactory(_with_run_fields(factory))


def configure(level: str, fmt: str = "text") -> None:
    """Send logs to stderr in `fmt` ("text" or "json") from `level` up."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    _install()
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                ["asctime", "levelname", "name", "message"],
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def bind_run(**fields: Any) -> None:
    """Tag every line logged from now on in this task (and tasks it starts) with `fields`."""
    _install()
    _RUN.set(fields)


@contextlib.contextmanager
def run_fields(**fields: Any) -> Iterator[None]:
    _install()
    token = _RUN.set(fields)
    try:
        yield
    finally:
        _RUN.reset(token)
