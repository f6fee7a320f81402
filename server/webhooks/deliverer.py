"""Sends the webhook outbox: claims due deliveries with a lease, POSTs each signed body (Standard
Webhooks), records every attempt, and retries with exponential backoff and jitter until the receiver
answers 2xx or the attempt or age limit is reached. Sends run concurrently up to a limit, each with a
timeout, so a slow or dead receiver holds up neither other deliveries nor run admission."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from standardwebhooks.webhooks import Webhook

from server import metrics, tasks
from server.store.contract import Deliveries
from server.store.records import DeliveryRecord
from server.urlpolicy import PolicyResolver, UrlPolicy

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 3600.0
MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class WebhookSettings:
    secret: str = ""  # Standard Webhooks secret ("whsec_" + base64); empty sends unsigned bodies
    allow: str = ""  # comma-separated hosts/IPs/networks allowed although not public
    max_attempts: int = 8
    max_age_s: float = 86_400.0
    timeout_s: float = 10.0
    concurrency: int = 16
    backoff_s: float = 2.0  # delay before the first retry; doubles with every attempt, with jitter
    # New deliveries wake the deliverer when their run's end commits here, and a retry when it is
    # asked for; the outbox is re-read this often anyway (rows whose replica died before sending).
    poll_interval_s: float = 30.0
    lease_s: float = 60.0


def backoff(settings: WebhookSettings, attempt: int) -> float:
    """Delay after failed attempt number `attempt` (1-based): exponential, half of it random."""
    delay = min(settings.backoff_s * 2.0 ** (attempt - 1), MAX_BACKOFF_S)
    return float(delay / 2 + random.uniform(0, delay / 2))


class Deliverer:
    def __init__(self, settings: WebhookSettings, owner: str) -> None:
        self.settings = settings
        self.owner = owner
        self.policy = UrlPolicy.parse(settings.allow)
        self._signer = Webhook(settings.secret) if settings.secret else None
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._store: Deliveries | None = None
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, store: Deliveries) -> None:
        if not self._signer:
            log.warning("webhooks are sent unsigned: set --webhook-secret to sign them")
        self._store = store
        connector = aiohttp.TCPConnector(
            resolver=PolicyResolver(self.policy), limit=self.settings.concurrency
        )
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_s)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        self._task = asyncio.create_task(self._loop(), name="webhook-deliverer")

    async def stop(self, grace_s: float = 1.0) -> None:
        """Stop claiming; attempts in flight get `grace_s` to be sent and recorded, the rest are cut
        short and their leases released, so another process sends them again at once."""
        await tasks.stop(self._task)
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=grace_s)
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._store is not None:
            try:
                await self._store.release(self.owner)
            except Exception:  # the leases expire on their own
                log.exception("releasing webhook leases failed")
        if self._session is not None:
            await self._session.close()

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        assert self._store is not None
        while True:
            self._wake.clear()
            free = self.settings.concurrency - len(self._inflight)
            try:
                due = await self._store.claim_due(self.owner, free, self.settings.lease_s) if free > 0 else []
                for delivery in due:
                    task = asyncio.create_task(self._deliver(delivery), name=f"webhook-{delivery.id}")
                    self._inflight.add(task)
                    task.add_done_callback(self._done)
                wait = await self._idle_time(len(due) == free)
            except Exception:
                log.exception("claiming webhook deliveries failed")
                wait = self.settings.poll_interval_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    async def _idle_time(self, busy: bool) -> float:
        """Sleep until the next delivery is due, at most one poll interval (others may add some)."""
        assert self._store is not None
        if busy:
            return 0
        due = await self._store.next_due()
        if due is None:
            return self.settings.poll_interval_s
        return min(max(due - time.time(), 0.0), self.settings.poll_interval_s)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()  # a slot is free

    async def _deliver(self, delivery: DeliveryRecord) -> None:
        assert self._store is not None
        attempt = await self._attempt(delivery)
        number = delivery.attempt_count + 1
        retry_at: float | None = time.time() + backoff(self.settings, number)
        if number >= self.settings.max_attempts or (retry_at or 0) > delivery.give_up_at:
            retry_at = None
        ok = 200 <= attempt["status_code"] < 300
        recorded = await self._store.record(delivery, self.owner, attempt, None if ok else retry_at)
        if recorded is None:
            log.warning("webhook %s: lease lost before the attempt was recorded", delivery.id)
        elif not ok:
            log.info("webhook %s attempt %d failed: %s", delivery.id, number, attempt["error"])

    async def _attempt(self, delivery: DeliveryRecord) -> dict[str, Any]:
        started = time.time()
        status, error, outcome = 0, "", "ok"
        problem = await self.policy.problem(delivery.url)
        if problem is not None:
            error, outcome = f"refused: URL {problem}", "refused"
        else:
            try:
                status = await self._post(delivery)
                if not 200 <= status < 300:
                    error, outcome = f"receiver answered HTTP {status}", "http_error"
            except TimeoutError:
                error, outcome = f"timed out after {self.settings.timeout_s:g}s", "timeout"
            except (aiohttp.ClientError, OSError) as exc:
                error, outcome = f"{type(exc).__name__}: {exc}", "unreachable"
        metrics.WEBHOOK_ATTEMPTS.labels(outcome).inc()
        if outcome == "ok":
            metrics.WEBHOOK_LAG.observe(max(time.time() - delivery.created_at, 0.0))
        duration_ms = int((time.time() - started) * 1000)
        return {
            "at": started,
            "status_code": status,
            "error": error[:MAX_ERROR_CHARS],
            "duration_ms": duration_ms,
        }

    async def _post(self, delivery: DeliveryRecord) -> int:
        assert self._session is not None
        body = json.dumps(delivery.payload, separators=(",", ":"))
        now = datetime.now(UTC)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": delivery.id,
            "webhook-timestamp": str(int(now.timestamp())),
        }
        if delivery.traceparent:
            headers["traceparent"] = delivery.traceparent
        if self._signer is not None:
            headers["webhook-signature"] = self._signer.sign(delivery.id, now, body)
        async with self._session.post(
            delivery.url, data=body, headers=headers, allow_redirects=False
        ) as reply:
            await reply.read()
            return reply.status
