"""Client: the blocking face of AsyncClient. It runs one AsyncClient on a private event loop in a
daemon thread and waits for its results, so both share one implementation of retries, re-attaching
and errors; async iterators become plain iterators. Safe to use from several threads.

    with Client() as client:
        for event in client.stream("echo", "hello"):
            print(event)
"""

from __future__ import annotations

import asyncio
import builtins
import threading
from collections.abc import AsyncIterator, Coroutine, Generator, Iterable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack, cast

import grpc
from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb

from agentrun_client.aio import AsyncClient
from agentrun_client.events import RunEvent
from agentrun_client.options import DecisionLike, StateLike, SubmitOptions
from agentrun_client.retry import RetryPolicy

T = TypeVar("T")


class Client:
    """Blocking client; the arguments and methods are those of AsyncClient."""

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
        self._aio = AsyncClient(
            target,
            api_key=api_key,
            token=token,
            timeout=timeout,
            credentials=credentials,
            retry=retry,
            channel_options=channel_options,
        )
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="agentrun-client", daemon=True)
        self._thread.start()

    @property
    def target(self) -> str:
        return self._aio.target

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._wait(self._aio.close())
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _wait(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:  # KeyboardInterrupt while waiting: stop the call too
            future.cancel()
            raise

    def _iterate(self, items: AsyncIterator[T]) -> Generator[T, None, None]:
        async def step() -> tuple[bool, T | None]:
            try:
                return True, await anext(items)
            except StopAsyncIteration:
                return False, None

        try:
            while True:
                more, item = self._wait(step())
                if not more:
                    return
                yield cast(T, item)
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None and not self._closed:  # ends the call of an unfinished stream
                closing = asyncio.run_coroutine_threadsafe(aclose(), self._loop)
                if threading.current_thread() is not self._thread:  # (a collected iterator: no wait)
                    closing.result()

    # ---- runs ------------------------------------------------------------------------------

    def run(
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
        return self._wait(
            self._aio.run(
                agent_id,
                message,
                wait=wait,
                session_id=session_id,
                timeout=timeout,
                metadata=metadata,
                idempotency_key=idempotency_key,
                **options,
            )
        )

    def stream(
        self,
        agent_id: str,
        message: str,
        *,
        session_id: str | None = None,
        timeout: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        **options: Unpack[SubmitOptions],
    ) -> Generator[RunEvent, None, None]:
        return self._iterate(
            self._aio.stream(
                agent_id,
                message,
                session_id=session_id,
                timeout=timeout,
                metadata=metadata,
                idempotency_key=idempotency_key,
                **options,
            )
        )

    def follow(self, run_id: str, after_seq: int = 0) -> Generator[RunEvent, None, None]:
        return self._iterate(self._aio.follow(run_id, after_seq))

    def get(self, run_id: str) -> run_pb2.Run:
        return self._wait(self._aio.get(run_id))

    def batch_get(self, run_ids: Iterable[str]) -> pb.BatchGetRunsResponse:
        return self._wait(self._aio.batch_get(run_ids))

    def list(
        self,
        agent_id: str | None = None,
        states: Iterable[StateLike] | None = None,
        session_id: str | None = None,
        page_size: int = 50,
        *,
        user_id: str | None = None,
    ) -> Generator[run_pb2.Run, None, None]:
        return self._iterate(self._aio.list(agent_id, states, session_id, page_size, user_id=user_id))

    def events(
        self, run_id: str, after_seq: int = 0, page_size: int = 100
    ) -> Generator[RunEvent, None, None]:
        return self._iterate(self._aio.events(run_id, after_seq, page_size))

    # ---- decisions and cancel --------------------------------------------------------------

    def continue_(
        self,
        run_id: str,
        decision: DecisionLike,
        *,
        tool_call_id: str = "",
        reason: str = "",
        wait: bool = True,
    ) -> run_pb2.Run:
        return self._wait(
            self._aio.continue_(run_id, decision, tool_call_id=tool_call_id, reason=reason, wait=wait)
        )

    def approve(
        self, run_id: str, *, tool_call_id: str = "", reason: str = "", wait: bool = True
    ) -> run_pb2.Run:
        return self._wait(self._aio.approve(run_id, tool_call_id=tool_call_id, reason=reason, wait=wait))

    def reject(
        self, run_id: str, *, tool_call_id: str = "", reason: str = "", wait: bool = True
    ) -> run_pb2.Run:
        return self._wait(self._aio.reject(run_id, tool_call_id=tool_call_id, reason=reason, wait=wait))

    def cancel(self, run_id: str, reason: str = "") -> run_pb2.Run:
        return self._wait(self._aio.cancel(run_id, reason))

    def update_metadata(self, run_id: str, metadata: Mapping[str, Any]) -> run_pb2.Run:
        return self._wait(self._aio.update_metadata(run_id, metadata))

    # ---- agents ----------------------------------------------------------------------------

    def agents(self) -> builtins.list[run_pb2.Agent]:
        return self._wait(self._aio.agents())

    def agent(self, agent_id: str) -> run_pb2.Agent:
        return self._wait(self._aio.agent(agent_id))
