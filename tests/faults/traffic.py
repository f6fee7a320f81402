"""The clients under fault: submitters start runs on random replicas (Run with wait=false, and
StreamRun), followers read runs' event streams, cut them at random and re-attach with the cursor
(StreamRun run_id + after_seq) on any replica, recording every event they were sent."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from agentrun.v1 import run_pb2
from agentrun.v1 import run_service_pb2 as pb

from tests.faults.report import Figures
from tests.faults.servers import HarnessError, Pool, Replica

FINAL = frozenset({run_pb2.EVENT_TYPE_STOP, run_pb2.EVENT_TYPE_ERROR})
CALL_TIMEOUT_S = 10.0
# A stream that fails with one of these is re-attached (the server went away, the database is down);
# any other answer to a re-attach of an acknowledged run is a finding.
TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
OnEvent = Callable[[run_pb2.RunEvent], None]
EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]  # what read() returns at a stream's end; not in grpc-stubs
log = logging.getLogger(__name__)


@dataclass
class Observed:
    """One run's events as its streams delivered them, over every attachment, in order. Each
    attachment must continue exactly after the cursor it was given."""

    run_id: str
    seqs: list[int] = field(default_factory=list)
    types: list[int] = field(default_factory=list)
    attaches: int = 0
    after: int = 0  # the cursor of the current attachment
    final: bool = False
    gave_up: str = ""  # why following stopped before the final event
    problems: list[str] = field(default_factory=list)

    @property
    def cursor(self) -> int:
        return self.seqs[-1] if self.seqs else 0

    def attach(self) -> int:
        self.attaches += 1
        self.after = self.cursor
        return self.after

    def add(self, event: run_pb2.RunEvent) -> None:
        where = f"attachment {self.attaches} (after_seq={self.after})"
        if event.run_id != self.run_id:
            self.problems.append(f"{where}: an event of run {event.run_id!r}")
        elif event.seq <= self.cursor:
            self.problems.append(f"{where}: duplicate seq {event.seq} after seq {self.cursor}")
        else:
            if event.seq != self.cursor + 1:
                self.problems.append(f"{where}: missing seqs {self.cursor + 1}..{event.seq - 1}")
            self.seqs.append(event.seq)
            self.types.append(event.type)
            self.final = event.type in FINAL


@dataclass
class Traffic:
    """Submitters and followers of one scenario. Submitters stop at `finish`; followers then get
    until its deadline to see their runs' final events."""

    pool: Pool
    figures: Figures
    seed: str
    stream_share: float = 0.5
    follow_share: float = 0.3
    cut_rate: float = 0.5
    max_followers: int = 12
    acknowledged: dict[str, str] = field(default_factory=dict)
    observed: dict[str, Observed] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    slots: asyncio.Semaphore = field(init=False)  # one per follower: bounds the streams open at once
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _deadline: float | None = None
    _timeouts: set[asyncio.Timeout] = field(default_factory=set)
    _followers: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.max_followers)

    def rng(self, name: str) -> random.Random:
        return random.Random(f"{self.seed}:{name}")

    def finish(self, deadline: float) -> None:
        """No more submissions; every follower stops at `deadline` (event-loop time)."""
        self._stopping.set()
        self._deadline = deadline
        for timeout in self._timeouts:
            timeout.reschedule(deadline)

    async def submitter(self, name: str) -> None:
        """Start runs until `finish`: Run(wait=false), some of them followed, or StreamRun."""
        rng = self.rng(name)
        while not self._stopping.is_set():
            request = _request(rng)
            if rng.random() < self.stream_share:
                await self.stream(request, rng)
            else:
                await self.submit(request, rng)
            await asyncio.sleep(rng.uniform(0.02, 0.15))  # a client's think time: the load's shape

    async def submit(self, request: pb.RunRequest, rng: random.Random) -> str | None:
        """Run(wait=false): acknowledged when the server answers with the run."""
        self.figures.submitted += 1
        replica = None
        try:
            replica = await self.pool.pick(rng, CALL_TIMEOUT_S)
            response = await replica.stub.Run(request, timeout=CALL_TIMEOUT_S)
        except (grpc.RpcError, TimeoutError) as exc:
            self._refused("Run", replica, exc)
            return None
        run_id: str = response.run.id
        self._acknowledge(run_id, "Run")
        if rng.random() < self.follow_share:
            await self.slots.acquire()
            self._spawn(Observed(run_id), None, None, rng)
        return run_id

    async def stream(
        self, request: pb.RunRequest, rng: random.Random, on_event: OnEvent | None = None
    ) -> str | None:
        """StreamRun: acknowledged with its first event; then followed to the end."""
        self.figures.submitted += 1
        await self.slots.acquire()
        call: Any = None
        replica = None
        try:
            replica = await self.pool.pick(rng, CALL_TIMEOUT_S)
            call = replica.stub.StreamRun(pb.StreamRunRequest(run=request))
            async with asyncio.timeout(CALL_TIMEOUT_S):
                first = await call.read()
        except (grpc.RpcError, TimeoutError) as exc:
            self.slots.release()
            if call is not None:
                call.cancel()
            self._refused("StreamRun", replica, exc)
            return None
        if first is EOF:
            self.slots.release()
            self._refused("StreamRun", replica, None)
            return None
        observed = Observed(first.event.run_id)
        observed.attach()
        self._acknowledge(observed.run_id, "StreamRun")
        self._spawn(observed, call, on_event, rng, first.event)
        return observed.run_id

    def _refused(self, method: str, replica: Replica | None, exc: BaseException | None) -> None:
        if isinstance(exc, grpc.RpcError):
            code, details = exc.code().name, exc.details()
        else:
            code, details = ("TIMEOUT", "") if exc else ("EMPTY_STREAM", "")
        if replica is None:
            code = "NO_SERVER_UP"
        self.figures.refused[code] += 1
        log.info("%s on %s refused: %s %s", method, replica and replica.name, code, details)

    def _acknowledge(self, run_id: str, how: str) -> None:
        self.acknowledged[run_id] = how
        self.figures.acknowledged += 1
        self.figures.acknowledged_by[how] += 1

    def _spawn(
        self,
        observed: Observed,
        call: Any,
        on_event: OnEvent | None,
        rng: random.Random,
        first: run_pb2.RunEvent | None = None,
    ) -> None:
        self.observed[observed.run_id] = observed
        self.figures.streams_followed += 1
        follower_rng = random.Random(f"{self.seed}:follow:{rng.random()}")
        task = asyncio.create_task(self._follow(observed, call, on_event, follower_rng, first))
        self._followers.add(task)
        task.add_done_callback(self._followers.discard)

    async def quiet_probe(self, submit_on: Replica, follow_on: Replica, within: float) -> None:
        """On a quiet system (no other traffic to wake anything): a run submitted on one replica and
        streamed, uncut, from another must reach its end within `within` s. Only the hub and, between
        replicas, LISTEN/NOTIFY wake that stream: a lost wake-up leaves it waiting for a re-read."""
        request = pb.RunRequest(agent_id="slow", input=run_pb2.RunInput(message="tokens=3 delay_ms=20"))
        self.figures.submitted += 1
        try:
            run_id: str = (await submit_on.stub.Run(request, timeout=CALL_TIMEOUT_S)).run.id
        except grpc.RpcError as exc:
            raise HarnessError(f"quiet probe: Run on {submit_on.name} refused: {exc.code().name}") from exc
        self._acknowledge(run_id, "Run")
        self.figures.quiet_probes += 1
        observed = self.observed[run_id] = Observed(run_id)
        observed.attach()
        call = follow_on.stub.StreamRun(pb.StreamRunRequest(run_id=run_id))
        route = f"quiet probe {submit_on.name} -> {follow_on.name}"
        try:
            async with asyncio.timeout(within):
                while not observed.final:
                    message = await call.read()
                    if message is EOF:
                        observed.gave_up = f"{route}: the stream ended at seq {observed.cursor}"
                        return
                    observed.add(message.event)
        except TimeoutError:
            observed.gave_up = f"{route}: no final event within {within:g}s (last seq {observed.cursor})"
        except grpc.RpcError as exc:
            observed.gave_up = f"{route}: {exc.code().name}: {exc.details()}"
        finally:
            call.cancel()

    async def drain(self) -> None:
        """Wait for every follower (each stops by the deadline given to `finish`)."""
        while self._followers:
            await asyncio.gather(*self._followers, return_exceptions=True)

    async def _follow(
        self,
        observed: Observed,
        call: Any,
        on_event: OnEvent | None,
        rng: random.Random,
        first: run_pb2.RunEvent | None,
    ) -> None:
        try:
            if first is not None:
                self._take(observed, first, on_event)
            async with asyncio.timeout_at(self._deadline) as timeout:
                self._timeouts.add(timeout)
                try:
                    await self._read_to_end(observed, call, on_event, rng)
                finally:
                    self._timeouts.discard(timeout)
        except TimeoutError:
            observed.gave_up = f"no final event by the end of following (last seq {observed.cursor})"
            log.info("run %s: %s", observed.run_id, observed.gave_up)
        except Exception as exc:  # the harness's own failure, not a finding
            self.errors.append(f"following run {observed.run_id}: {exc!r}")
        finally:
            self.slots.release()

    def _take(self, observed: Observed, event: run_pb2.RunEvent, on_event: OnEvent | None) -> None:
        observed.add(event)
        if on_event is not None:
            on_event(event)

    async def _read_to_end(
        self, observed: Observed, call: Any, on_event: OnEvent | None, rng: random.Random
    ) -> None:
        while not observed.final:
            if call is None:
                replica = await self.pool.pick(rng, CALL_TIMEOUT_S * 3)
                after = observed.attach()
                self.figures.reattaches += 1
                call = replica.stub.StreamRun(pb.StreamRunRequest(run_id=observed.run_id, after_seq=after))
            outcome = await self._read(observed, call, on_event, rng)
            call = None
            if outcome == "stop":
                return
            if outcome != "cut":
                await asyncio.sleep(rng.uniform(0.02, 0.2))  # a client's backoff before re-attaching

    async def _read(self, observed: Observed, call: Any, on_event: OnEvent | None, rng: random.Random) -> str:
        """Read one attachment until the final event, a cut (at random), an error or its end."""
        cut_after = rng.randint(1, 12) if rng.random() < self.cut_rate else 0
        count = 0
        try:
            while True:
                message = await call.read()
                if message is EOF:
                    self.figures.early_ends += 1  # ended without the final event: re-attach
                    return "ended"
                self._take(observed, message.event, on_event)
                count += 1
                if observed.final:
                    return "final"
                if cut_after and count >= cut_after:
                    self.figures.stream_cuts += 1
                    return "cut"
        except grpc.RpcError as exc:
            if exc.code() not in TRANSIENT:
                observed.gave_up = f"re-attach refused: {exc.code().name}: {exc.details()}"
                return "stop"
            self.figures.breaks[exc.code().name] += 1
            log.info("run %s: stream broken at seq %d: %s", observed.run_id, observed.cursor, exc.code().name)
            return "broken"
        finally:
            call.cancel()


def _request(rng: random.Random) -> pb.RunRequest:
    """Mostly short runs; some long enough to be running when a server is killed."""
    pick = rng.random()
    if pick < 0.25:
        agent, message = "echo", " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8)))
    elif pick < 0.9:
        agent, message = "slow", f"tokens={rng.randint(3, 25)} delay_ms={rng.randint(5, 40)}"
    else:
        agent, message = "slow", f"tokens={rng.randint(40, 80)} delay_ms=25"
    return pb.RunRequest(agent_id=agent, input=run_pb2.RunInput(message=message))


WORDS = ("kill", "restart", "pause", "cut", "stream", "cursor", "lease", "sweep", "seq", "event")
