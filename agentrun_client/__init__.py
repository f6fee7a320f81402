"""A typed Python client of agentrun.v1.RunService: `AsyncClient` (grpc.aio) and `Client` (blocking),
returning the generated messages (`agentrun.v1.run_pb2.Run`, `Agent`), typed events
(`agentrun_client.events`) and typed errors (`agentrun_client.errors`).

    from agentrun_client import Client

    with Client("127.0.0.1:50051", api_key="ar_...") as client:
        run = client.run("echo", "hello")
        print(run.output)
"""

from agentrun_client.aio import DEFAULT_TARGET, AsyncClient
from agentrun_client.errors import (
    AgentrunError,
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from agentrun_client.events import (
    ContentDelta,
    ErrorEvent,
    Event,
    Paused,
    ReasoningDelta,
    RunEvent,
    Start,
    StatusChange,
    Stop,
    ToolEnd,
    ToolStart,
    UnknownEvent,
    parse_event,
)
from agentrun_client.options import SubmitOptions
from agentrun_client.retry import RetryPolicy
from agentrun_client.sync import Client

__all__ = [
    "DEFAULT_TARGET",
    "AgentrunError",
    "AlreadyExists",
    "AsyncClient",
    "Client",
    "ContentDelta",
    "DeadlineExceeded",
    "ErrorEvent",
    "Event",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "Paused",
    "PermissionDenied",
    "ReasoningDelta",
    "ResourceExhausted",
    "RetryPolicy",
    "RunEvent",
    "Start",
    "StatusChange",
    "Stop",
    "SubmitOptions",
    "ToolEnd",
    "ToolStart",
    "Unauthenticated",
    "Unavailable",
    "UnknownEvent",
    "parse_event",
]
