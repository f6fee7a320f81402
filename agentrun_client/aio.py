"""AsyncClient: agentrun.v1.RunService over a grpc.aio channel, with typed results, typed errors,
idempotent retries of submissions and streams that re-attach by themselves.

    async with AsyncClient() as client:          # AGENTRUN_SERVER, AGENTRUN_API_KEY
        run = await client.run("echo", "hello")  # the COMPLETED run
        async for event in client.stream("tools", "what is 6*7?"):
            print(event)
"""

from __future__ import annotations

import builtins
import os
from collections.abc import AsyncGenerator, Iterable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

import grpc
from agentrun.v1 import run_pb2, run_service_pb2_grpc
from agentrun.v1 import run_service_pb2 as pb
from google.protobuf.message import Message

from agentrun_client import options as opts
from agentrun_client.errors import AgentrunError, Unavailable, from_rpc_error
from agentrun_client.events import RunEvent, parse_event
from agentrun_client.options import DecisionLike, StateLike, SubmitOptions
from agentrun_client.retry import Backoff, RetryPolicy, retryable

DEFAULT_TARGET = "127.0.0.1:50051"
R = TypeVar("R", bound=Message)
_T = run_pb2.EventType
_S = run_pb2.RunState
_FINAL = frozenset({_T.EVENT_TYPE_STOP, _T.EVENT_TYPE_ERROR})
_AT_REST = frozenset(
    {_S.RUN_STATE_COMPLETED, _S.RUN_STATE_FAILED, _S.RUN_STATE_CANCELLED, _S.RUN_STATE_PAUSED}
)
# grpc's own reconnection backoff (1 s, growing to 2 min) would keep a restarted server unused for
# long after it is back; the client's retries decide how long to keep trying.
_CHANNEL_OPTIONS: dict[str, Any] = {
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
}
_BATCH = 100  # BatchGetRuns takes at most this many ids


class AsyncClient:
    """A client of one agentrun server (or load balancer).

    `target` defaults to $AGENTRUN_SERVER, then 127.0.0.1:50051. `api_key` (default $AGENTRUN_API_KEY)
    or `token` (a JWT) is sent as `authorization: Bearer ...`. `timeout` is the deadline in seconds of
    each attempt of a unary call (None: none; streams have none). `credentials` makes a TLS channel.
    Calls that fail with UNAVAILABLE (or CANCELLED by a server going away) are retried under `retry`.
    Use it as `async with`, or call `close()`."""

    def __init__(
        self,
        target: str | None = None,
        *,
        api_key: str | None = None,
        token: str | None = None,
        timeout: float | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        retry: RetryPolicy | None = None,
        channel_options: Mapping[str, Any] | None = None,
    ) -> None:
        if api_key and token:
            raise ValueError("pass api_key or token, not both")
        self.target = target or os.environ.get("AGENTRUN_SERVER") or DEFAULT_TARGET
        secret = token or api_key or os.environ.get("AGENTRUN_API_KEY") or ""
        self._metadata = (("authorization", f"Bearer {secret}"),) if secret else ()
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._credentials = credentials
        self._options = [*{**_CHANNEL_OPTIONS, **(channel_options or {})}.items()]
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._closed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel; calls in flight end with CANCELLED."""
        self._closed = True
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close(None)

    def _service(self) -> Any:
        """The generated stub, on a channel made on first use (so in the event loop that uses it: use
        an AsyncClient in one event loop only)."""
        if self._closed:
            raise RuntimeError("the client is closed")
        if self._stub is None:
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
            else:
                self._channel = grpc.aio.secure_channel(self.target, self._credentials, options=self._options)
            self._stub = run_service_pb2_grpc.RunServiceStub(self._channel)
        return self._stub

    async def _unary(self, method: str, request: Message, reply: type[R]) -> R:
        backoff = Backoff(self.retry)
        while True:
            try:
                result = await getattr(self._service(), method)(
                    request, timeout=self.timeout, metadata=self._metadata
                )
            except grpc.aio.AioRpcError as exc:
                if retryable(exc) and await backoff.wait(f"{method} failed", exc.code().name):
                    continue
                raise from_rpc_error(exc) from exc
            if not isinstance(result, reply):
                raise TypeError(f"{method} answered {type(result).__name__}, not {reply.__name__}")
            return result

    # ---- runs ------------------------------------------------------------------------------

    async def run(
        self,
        agent_id: str,
        message: str,
        *,
        wait: bool = True,
        session_id: str | None = None,
        timeout: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        **options: Unpack[SubmitOptions],
    ) -> run_pb2.Run:
        """Start a run. With `wait` (the default) return it once it is COMPLETED, FAILED, CANCELLED or
        PAUSED; without, return it QUEUED at once. `timeout` is the run's time limit in seconds (None:
        the server's default), `metadata` extras stored with it; see SubmitOptions for the rest. A
        retried attempt reuses the idempotency key (one is made when none is given), so it never makes
        a second run."""
        request = opts.run_request(
            agent_id,
            message,
            wait=wait,
            session_id=session_id,
            timeout=timeout,
            metadata=metadata,
            idempotency_key=idempotency_key or opts.new_idempotency_key(),
            options=options,
        )
        return (await self._unary("Run", request, pb.RunResponse)).run

    async def stream(
        self,
        agent_id: str,
        message: str,
        *,
        session_id: str | None = None,
        timeout: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        **options: Unpack[SubmitOptions],
    ) -> AsyncGenerator[RunEvent, None]:
        """Start a run and yield its events from START until STOP, ERROR or PAUSED. A dropped stream is
        re-attached after the last event seen (or, before START, submitted again with the same
        idempotency key), so every event comes exactly once, in seq order."""
        request = opts.run_request(
            agent_id,
            message,
            wait=False,
            session_id=session_id,
            timeout=timeout,
            metadata=metadata,
            idempotency_key=idempotency_key or opts.new_idempotency_key(),
            options=options,
        )
        async for event in self._stream(request, "", 0):
            yield event

    async def follow(self, run_id: str, after_seq: int = 0) -> AsyncGenerator[RunEvent, None]:
        """Yield the events of a run after `after_seq` (stored ones, then live ones) until it ends or
        pauses; re-attaches by itself like `stream`."""
        async for event in self._stream(None, run_id, after_seq):
            yield event

    async def _stream(
        self, submit: pb.RunRequest | None, run_id: str, after_seq: int
    ) -> AsyncGenerator[RunEvent, None]:
        last_seq, last_type = after_seq, _T.EVENT_TYPE_UNSPECIFIED
        backoff = Backoff(self.retry)
        while True:
            if run_id:
                request = pb.StreamRunRequest(run_id=run_id, after_seq=last_seq)
            else:
                request = pb.StreamRunRequest(run=submit)
            call = self._service().StreamRun(request, metadata=self._metadata)
            failure: AgentrunError
            try:
                async for response in call:
                    event = response.event
                    if event.seq <= last_seq:  # replayed by an idempotent re-submission: seen
                        continue
                    if event.seq != last_seq + 1:
                        failure = Unavailable(f"stream skipped from seq {last_seq} to {event.seq}")
                        break
                    run_id, last_seq, last_type = event.run_id, event.seq, event.type
                    backoff.reset()
                    yield parse_event(event)
                    if event.type in _FINAL:
                        return
                else:  # the server ended the stream: the run is at rest, or the server went away
                    if last_type == _T.EVENT_TYPE_PAUSED or await self._at_rest(run_id, last_seq):
                        return
                    failure = Unavailable("the stream ended before the run did")
            except grpc.aio.AioRpcError as exc:
                if not retryable(exc):
                    raise from_rpc_error(exc) from exc
                failure = from_rpc_error(exc)
            finally:
                call.cancel()
            if run_id:
                what = f"stream of run {run_id} broke after seq {last_seq}; re-attach"
            else:
                what = "StreamRun submit failed; submit again with the same idempotency key"
            if not await backoff.wait(what, failure):
                raise failure

    async def _at_rest(self, run_id: str, last_seq: int) -> bool:
        """Whether a run has ended or paused with no event after `last_seq`."""
        if not run_id:
            return False
        run = await self.get(run_id)
        return run.state in _AT_REST and run.last_seq <= last_seq

    async def get(self, run_id: str) -> run_pb2.Run:
        """One run, by id or number."""
        return (await self._unary("GetRun", pb.GetRunRequest(run_id=run_id), pb.GetRunResponse)).run

    async def batch_get(self, run_ids: Iterable[str]) -> pb.BatchGetRunsResponse:
        """The runs with these ids in request order (`runs`), and the ids that name none
        (`missing_run_ids`); any number of ids, asked for 100 at a time."""
        ids = builtins.list(dict.fromkeys(run_ids))
        result = pb.BatchGetRunsResponse()
        for start in range(0, len(ids), _BATCH):
            request = pb.BatchGetRunsRequest(run_ids=ids[start : start + _BATCH])
            page = await self._unary("BatchGetRuns", request, pb.BatchGetRunsResponse)
            result.runs.extend(page.runs)
            result.missing_run_ids.extend(page.missing_run_ids)
        return result

    async def list(
        self,
        agent_id: str | None = None,
        states: Iterable[StateLike] | None = None,
        session_id: str | None = None,
        page_size: int = 50,
        *,
        user_id: str | None = None,
    ) -> AsyncGenerator[run_pb2.Run, None]:
        """Every run matching the filters, newest first, fetched `page_size` at a time. `states` are
        RunState values or names ("COMPLETED", "RUN_STATE_COMPLETED")."""
        request = pb.ListRunsRequest(
            agent_id=agent_id or "",
            session_id=session_id or "",
            user_id=user_id or "",
            states=opts.states(states),
            page_size=page_size,
        )
        while True:
            page = await self._unary("ListRuns", request, pb.ListRunsResponse)
            for run in page.runs:
                yield run
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    async def events(
        self, run_id: str, after_seq: int = 0, page_size: int = 100
    ) -> AsyncGenerator[RunEvent, None]:
        """The run's stored events after `after_seq`, in seq order, fetched `page_size` at a time."""
        request = pb.ListRunEventsRequest(run_id=run_id, after_seq=after_seq, page_size=page_size)
        while True:
            page = await self._unary("ListRunEvents", request, pb.ListRunEventsResponse)
            for event in page.events:
                yield parse_event(event)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    # ---- decisions and cancel --------------------------------------------------------------

    async def continue_(
        self,
        run_id: str,
        decision: DecisionLike,
        *,
        tool_call_id: str = "",
        reason: str = "",
        wait: bool = True,
    ) -> run_pb2.Run:
        """Decide on the pending tool call of a PAUSED run ("approve" or "reject", or a Decision);
        with `wait`, return the run once it ends or pauses again. The same decision twice applies
        once."""
        request = pb.ContinueRequest(
            run_id=run_id,
            decision=opts.decision(decision),
            tool_call_id=tool_call_id,
            reason=reason,
            wait=wait,
        )
        return (await self._unary("Continue", request, pb.ContinueResponse)).run

    async def approve(
        self, run_id: str, *, tool_call_id: str = "", reason: str = "", wait: bool = True
    ) -> run_pb2.Run:
        return await self.continue_(run_id, "approve", tool_call_id=tool_call_id, reason=reason, wait=wait)

    async def reject(
        self, run_id: str, *, tool_call_id: str = "", reason: str = "", wait: bool = True
    ) -> run_pb2.Run:
        return await self.continue_(run_id, "reject", tool_call_id=tool_call_id, reason=reason, wait=wait)

    async def cancel(self, run_id: str, reason: str = "") -> run_pb2.Run:
        """Cancel a QUEUED, RUNNING or PAUSED run; a finished run is returned unchanged."""
        request = pb.CancelRunRequest(run_id=run_id, reason=reason)
        return (await self._unary("CancelRun", request, pb.CancelRunResponse)).run

    async def update_metadata(self, run_id: str, metadata: Mapping[str, Any]) -> run_pb2.Run:
        """Replace a run's metadata (JSON values), in any state; returns the updated run."""
        request = pb.UpdateRunRequest(run=run_pb2.Run(id=run_id))
        request.run.metadata.update(metadata)
        request.update_mask.paths.append("metadata")
        return (await self._unary("UpdateRun", request, pb.UpdateRunResponse)).run

    # ---- agents ----------------------------------------------------------------------------

    async def agents(self) -> builtins.list[run_pb2.Agent]:
        """Every configured agent, in configuration order."""
        request, agents = pb.ListAgentsRequest(), builtins.list[run_pb2.Agent]()
        while True:
            page = await self._unary("ListAgents", request, pb.ListAgentsResponse)
            agents.extend(page.agents)
            if not page.next_page_token:
                return agents
            request.page_token = page.next_page_token

    async def agent(self, agent_id: str) -> run_pb2.Agent:
        request = pb.GetAgentRequest(agent_id=agent_id)
        return (await self._unary("GetAgent", request, pb.GetAgentResponse)).agent


__all__ = ["DEFAULT_TARGET", "AsyncClient"]
