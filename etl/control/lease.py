"""A lease on Kafka: one worker at a time runs a source, on any Kafka-protocol broker.

The lease lives in a compacted, single-partition topic (``<group_prefix>-leases``)
read through :class:`~etl.control.log.ControlLog`. It needs no consumer group,
so it fails over on brokers that never expire a dead group member (kill -9 on
such a broker leaves a group-based election stuck forever). Rules kept here:

* each worker writes its claim under a key of its own, ``lease/<source>/<worker
  id>``: ``{"since_offset", "ttl", "at", "host", "pid"}``. Compaction keeps only
  the last record of a key, so a renewal carries the offset of its tenure's
  first record (``since_offset``; null in that first record: its own offset);
* the **holder** is the live claim with the smallest ``since_offset``. One
  partition means every reader sees every claim in the same order, so all agree;
* a claim is **live** for a reader until ``ttl`` seconds after that reader *saw*
  its last record (its own monotonic clock: no two machines' clocks are
  compared). A reader that starts sees every claim as just renewed;
* a worker claims only when it sees no live claim of another worker; it writes
  its claim and reads the topic back to it: a claim before its own (a race)
  makes it delete its claim and stand by. A worker restarted under the same
  worker id carries on the tenure its claim records, unless another worker
  has a claim too;
* the holder renews every ``ttl/3``. It counts itself the holder only until
  ``3/4 ttl`` after it *sent* its last acknowledged renewal (others wait at least
  ``ttl`` after they saw it, which is later), so a holder cut off from the
  broker gives up before anyone else takes over; a late acknowledgement never
  revives a lapsed tenure;
* a clean stop deletes the claim (a tombstone): the next worker takes over at
  its next attempt instead of waiting out ``ttl``. The holder also deletes the
  expired claims of dead workers.

What a lease cannot do: fence. A holder that freezes (a stopped process, a long
pause) past its lease may publish once more when it wakes, before it checks the
lease; at-least-once sources accept that, and exactly-once sources are fenced by
their transactional id (:mod:`etl.sources.base`).

Why a topic of its own and not the control topic: a lease reader reads its topic
from the start whenever a source starts, and the control topic carries every
worker's heartbeat with its full status; the lease topic holds small records
that compaction soon folds to one per worker and source (short segments); and
leases are nothing to back up, where the control topic is.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from etl.config import ETLSettings
from etl.control.log import ControlLog, Entry
from etl.errors import ETLError, FatalError, RetriableError
from etl.kafka import describe_error, ensure_topics, topic_partitions

log = logging.getLogger("etl.control.lease")

LEASE = "lease/"
#: Seconds a lease lasts without renewal (``lease_seconds`` of a source).
DEFAULT_SECONDS = 15.0
#: Settings of a lease topic the worker creates: compaction folds it soon.
TOPIC_CONFIGS = {"cleanup.policy": "compact", "segment.ms": "3600000"}
#: Longest a clean release waits for its tombstone to be acknowledged.
RELEASE_TIMEOUT = 5.0


def lease_topic(settings: ETLSettings) -> str:
    """The topic that holds the leases of a deployment's sources."""
    return f"{settings.kafka.group_prefix}-leases"


@dataclass(frozen=True, slots=True)
class Claim:
    """One worker's claim on a lease, as one reader saw it last."""

    claimant: str
    #: The offset of the first record of this tenure (orders the claims).
    since: int
    #: The offset of the claim's last record.
    offset: int
    #: The reader's monotonic time when it read that record.
    seen: float
    ttl: float

    def live(self, now: float) -> bool:
        """Renewed less than ``ttl`` seconds ago (by the reader's clock)."""
        return now < self.seen + self.ttl

    @property
    def rank(self) -> tuple[int, str]:
        """Earlier tenure first; the worker id only breaks ties of a corrupt record."""
        return (self.since, self.claimant)


class LeaseBook:
    """The claims on one source's lease, built from the topic's records (no I/O).

    Feed it every record of the topic in order with :meth:`apply`; :meth:`holder`
    is the decision. Two books fed the same records decide the same.
    """

    def __init__(self, source: str) -> None:
        self.prefix = f"{LEASE}{source}/"
        self.claims: dict[str, Claim] = {}

    def apply(self, entry: Entry, seen: float) -> bool:
        """Take one record (read at monotonic time ``seen``); False: not this lease's."""
        if not entry.key.startswith(self.prefix):
            return False
        claimant = entry.key[len(self.prefix) :]
        value = entry.value
        if value is None:
            self.claims.pop(claimant, None)
            return True
        since = value.get("since_offset")
        if not isinstance(since, int) or isinstance(since, bool) or since < 0:
            since = entry.offset  # the tenure's first record
        ttl = value.get("ttl")
        if not isinstance(ttl, int | float) or isinstance(ttl, bool) or ttl <= 0:
            ttl = DEFAULT_SECONDS
        self.claims[claimant] = Claim(claimant, since, entry.offset, seen, float(ttl))
        return True

    def live(self, now: float) -> list[Claim]:
        """The claims not expired at ``now``, earliest tenure first."""
        return sorted((c for c in self.claims.values() if c.live(now)), key=lambda c: c.rank)

    def holder(self, now: float) -> Claim | None:
        """The live claim with the earliest tenure (None: nobody holds the lease)."""
        live = self.live(now)
        return live[0] if live else None


def holder_of(records: Iterable[tuple[Entry, float]], source: str, now: float) -> str | None:
    """Who holds ``source``'s lease after these (record, seen-at) pairs, at ``now``."""
    book = LeaseBook(source)
    for entry, seen in records:
        book.apply(entry, seen)
    found = book.holder(now)
    return found.claimant if found is not None else None


class LeaseLog(Protocol):
    """What the lease needs of :class:`~etl.control.log.ControlLog`."""

    async def start(self, on_entry: Any, timeout: float = 60.0) -> None: ...

    async def put(self, key: str, value: dict[str, Any] | None, *, seen: bool = True) -> int: ...

    async def stop(self) -> None: ...


#: (topic, key) of the leases objects of this process use: a second claimant under
#: the same worker id (two runners of one source in one process, as in tests) gets a
#: suffix, so that it is never taken for this worker's earlier run.
_IN_USE: set[tuple[str, str]] = set()


class KafkaLease:
    """:class:`~etl.sources.base.Leadership` kept in a compacted topic (see the module).

    ``claimant`` defaults to the worker id (``kafka.worker_id`` or the one kept in
    ``<data_dir>/worker-id``), which must differ between workers. ``control_log``
    replaces the topic (unit tests).
    """

    def __init__(
        self,
        settings: ETLSettings,
        source: str,
        *,
        seconds: float = DEFAULT_SECONDS,
        topic: str | None = None,
        claimant: str | None = None,
        control_log: LeaseLog | None = None,
    ) -> None:
        if seconds <= 0:
            raise ValueError("seconds: must be positive")
        self.settings = settings
        self.source = source
        self.ttl = float(seconds)
        #: Seconds between renewals.
        self.renew_seconds = self.ttl / 3
        #: How long an acknowledged renewal keeps this worker the holder, from its send.
        self.trust_seconds = self.ttl * 3 / 4
        #: How often the runner retries :meth:`acquire` and checks :meth:`held`.
        self.check_seconds = min(2.0, self.ttl / 10)
        self.topic = topic or lease_topic(settings)
        self.name = f"{self.topic}:{LEASE}{source}"
        self.book = LeaseBook(source)
        self._given_claimant = claimant
        self._claimant: str | None = None
        self._given_log = control_log
        self._log: LeaseLog | None = None
        self._since: int | None = None  # our tenure (None: not holding)
        self._valid_until = 0.0
        self._renewer: asyncio.Task[None] | None = None

    @property
    def claimant(self) -> str:
        """This worker's id in the lease (its key is ``lease/<source>/<claimant>``)."""
        if self._claimant is None:
            if self._given_claimant is not None:
                base = self._given_claimant
            else:
                from etl.runtime.consumer import worker_identity

                base = worker_identity(self.settings)
            claimant, n = base, 1
            while (self.topic, self.book.prefix + claimant) in _IN_USE:
                n += 1
                claimant = f"{base}.{n}"
            self._claimant = claimant
            _IN_USE.add((self.topic, self.book.prefix + claimant))
        return self._claimant

    @property
    def key(self) -> str:
        """This worker's claim key."""
        return self.book.prefix + self.claimant

    def holder(self) -> str | None:
        """Who holds the lease as this worker sees it now (None: nobody, or not read yet)."""
        found = self.book.holder(time.monotonic())
        return found.claimant if found is not None else None

    # ---- Leadership ------------------------------------------------------------------

    async def acquire(self) -> bool:
        """Try once: True when this worker holds the lease now (it may claim it first).

        A broker failure raises :class:`~etl.errors.RetriableError`.
        """
        await self._open()
        try:
            return await self._try()
        except ETLError:
            raise
        except Exception as exc:
            raise RetriableError(f"lease {self.name!r}: {describe_error(exc)}") from exc

    async def _try(self) -> bool:
        now = time.monotonic()
        if self._since is not None:
            return await self.held()
        me = self.claimant
        others = [c for c in self.book.live(now) if c.claimant != me]
        mine = self.book.claims.get(me)
        if mine is not None:
            if not others:
                # This worker's claim from before a restart, and nobody else's.
                return await self._begin(mine.since)
            await self._delete()
        if others:
            return False
        return await self._begin(None)

    async def held(self) -> bool:
        """Still the holder (False once the tenure lapsed or an earlier claim showed up)."""
        if self._since is None:
            return False
        now = time.monotonic()
        reason = self._lapse(now)
        if reason is None:
            return True
        await self._lose(reason)
        return False

    async def release(self) -> None:
        """Give the lease up at once (the claim is deleted) and stop reading the topic."""
        self._stop_renewing()
        claimed = self._since is not None or (
            self._claimant is not None and self._claimant in self.book.claims
        )
        self._since = None
        lease_log, self._log = self._log, None
        if lease_log is not None:
            if claimed:
                try:
                    await asyncio.wait_for(
                        lease_log.put(self.key, None, seen=False), RELEASE_TIMEOUT
                    )
                    log.info("lease released lease=%s claimant=%s", self.name, self.claimant)
                except Exception as exc:
                    log.warning(
                        "lease not released, it expires in %.0fs lease=%s error=%r",
                        self.ttl,
                        self.name,
                        describe_error(exc),
                    )
            await lease_log.stop()
        self.book.claims.clear()
        if self._claimant is not None:
            _IN_USE.discard((self.topic, self.key))
            self._claimant = None

    # ---- inside ----------------------------------------------------------------------

    async def _open(self) -> None:
        if self._log is not None:
            return
        _ = self.claimant  # reserve the key in this process
        lease_log = self._given_log
        try:
            if lease_log is None:
                kafka = self.settings.kafka
                if not await topic_partitions(kafka, [self.topic]):
                    if not kafka.auto_create_topics:
                        raise FatalError(
                            f"lease topic {self.topic!r} does not exist and "
                            "kafka.auto_create_topics is false: create it (1 partition, "
                            "cleanup.policy=compact)"
                        )
                    await ensure_topics(kafka, {self.topic: 1}, configs=TOPIC_CONFIGS)
                lease_log = ControlLog(kafka, self.topic, name=f"lease-{self.source}")
            self.book.claims.clear()
            await lease_log.start(self._on_entry)
        except FatalError:
            raise
        except Exception as exc:
            if lease_log is not None:
                await lease_log.stop()
            raise RetriableError(
                f"lease topic {self.topic!r} not readable: {describe_error(exc)}"
            ) from exc
        self._log = lease_log

    def _on_entry(self, entry: Entry) -> None:
        self.book.apply(entry, time.monotonic())

    async def _write(self, since: int | None, *, seen: bool) -> int:
        assert self._log is not None
        record = {
            "since_offset": since,
            "ttl": self.ttl,
            "at": time.time(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        return await self._log.put(self.key, record, seen=seen)

    async def _delete(self) -> None:
        if self._log is not None:
            await self._log.put(self.key, None)

    async def _begin(self, since: int | None) -> bool:
        """Write a claim (``since`` None: a new tenure), read it back, keep it if first.

        A carried-on tenure (``since`` given) ranks before claims written after it
        began, so it is kept only if no other claim is live at all when read back:
        a worker that claimed meanwhile, seeing the old claim expired, holds.
        """
        sent = time.monotonic()
        offset = await self._write(since, seen=True)
        self._since = offset if since is None else since
        self._valid_until = sent + self.trust_seconds
        now = time.monotonic()
        first = self.book.holder(now)
        alone = all(c.claimant == self.claimant for c in self.book.live(now))
        if first is None or first.claimant != self.claimant or (since is not None and not alone):
            # Another claim came first (a race), or ours expired while we waited.
            self._since = None
            await self._delete()
            return False
        self._renewer = asyncio.ensure_future(self._renew_forever())
        log.info(
            "lease taken lease=%s claimant=%s since_offset=%d ttl=%.0fs",
            self.name,
            self.claimant,
            self._since,
            self.ttl,
        )
        return True

    def _lapse(self, now: float) -> str | None:
        """Why this worker is no longer the holder (None: it still is)."""
        assert self._since is not None
        if now >= self._valid_until:
            return f"no renewal acknowledged within {self.trust_seconds:.1f}s"
        rank = (self._since, self.claimant)
        for claim in self.book.live(now):
            if claim.claimant != self.claimant and claim.rank < rank:
                return f"worker {claim.claimant!r} holds an earlier claim"
        return None

    async def _lose(self, reason: str) -> None:
        self._stop_renewing()
        self._since = None
        log.warning("lease lost lease=%s claimant=%s reason=%r", self.name, self.claimant, reason)
        try:
            await asyncio.wait_for(self._delete(), RELEASE_TIMEOUT)
        except Exception as exc:
            log.warning("lost lease not deleted lease=%s error=%r", self.name, describe_error(exc))

    def _stop_renewing(self) -> None:
        renewer, self._renewer = self._renewer, None
        if renewer is not None and renewer is not asyncio.current_task():
            renewer.cancel()

    async def _renew_forever(self) -> None:
        wait = self.renew_seconds
        while True:
            await asyncio.sleep(wait)
            since = self._since
            sent = time.monotonic()
            if since is None or self._lapse(sent) is not None:
                return  # held() says so to the runner, and deletes the claim
            try:
                await asyncio.wait_for(self._write(since, seen=False), self._valid_until - sent)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                text = describe_error(exc)
                log.warning("lease renewal failed lease=%s error=%r", self.name, text)
                wait = min(self.renew_seconds, 1.0)
                continue
            if self._since != since or time.monotonic() >= self._valid_until:
                return  # acknowledged too late: the tenure is over
            self._valid_until = sent + self.trust_seconds
            wait = self.renew_seconds
            await self._forget_dead()

    async def _forget_dead(self) -> None:
        """Delete the expired claims of other workers (they died without releasing)."""
        now = time.monotonic()
        for claim in list(self.book.claims.values()):
            if self._log is None or claim.claimant == self.claimant or claim.live(now):
                continue
            try:
                await self._log.put(self.book.prefix + claim.claimant, None, seen=False)
            except Exception as exc:
                text = describe_error(exc)
                log.warning("dead claim not deleted lease=%s error=%r", self.name, text)
                return
            self.book.claims.pop(claim.claimant, None)
