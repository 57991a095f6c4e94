"""The Kafka lease (etl.control.lease): its decision over records, then on the real broker.

The decision is a pure function of the topic's records and when a reader saw
them, so it is tested first with records written by hand (compaction, races,
expiry, tombstones). Then :class:`KafkaLease` runs over an in-memory log (lapse
and late acknowledgement, a restart under the same worker id, forgetting dead
claims), and over the test broker: several claimants at once, a clean stop that
hands over at once, kill -9 of the holder (separate processes) and the other
taking over within the lease time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from etl.control import lease as lease_module
from etl.control.lease import Claim, KafkaLease, LeaseBook, holder_of
from etl.control.log import Entry
from etl.errors import RetriableError
from etl.testing.settings import pipeline_settings
from etl.testing.source_conformance import until

REPO = Path(__file__).resolve().parents[2]


def claim(
    source: str, worker: str, offset: int, since: int | None = None, ttl: float = 10
) -> Entry:
    value = {"since_offset": since, "ttl": ttl, "at": 0.0}
    return Entry(f"lease/{source}/{worker}", value, offset, 0.0)


def tombstone(source: str, worker: str, offset: int) -> Entry:
    return Entry(f"lease/{source}/{worker}", None, offset, 0.0)


# ---- the decision over records -----------------------------------------------------------


def test_the_first_live_claim_holds_and_every_reader_agrees() -> None:
    records = [claim("s", "b", 7), claim("s", "a", 8), claim("s", "c", 9)]
    assert holder_of([(r, 0.0) for r in records], "s", now=1.0) == "b"
    # Readers that saw the records at other times still agree while the claims live.
    assert holder_of([(r, 5.0 + i) for i, r in enumerate(records)], "s", now=9.0) == "b"


def test_renewals_keep_the_tenure_through_compaction() -> None:
    full = [
        claim("s", "a", 3),  # a's tenure starts at offset 3
        claim("s", "b", 4),  # b raced and lost ...
        claim("s", "a", 5, since=3),
        tombstone("s", "b", 6),  # ... and deleted its claim
        claim("s", "b", 7),  # b claims again later (a still renews)
        claim("s", "a", 8, since=3),
    ]
    compacted = [r for r in full if r.offset in (7, 8)]  # the last record of each key
    for records in (full, compacted):
        assert holder_of([(r, 0.0) for r in records], "s", now=1.0) == "a"


def test_an_expired_claim_gives_way_to_a_later_live_one() -> None:
    book = LeaseBook("s")
    book.apply(claim("s", "a", 1, ttl=10), seen=0.0)
    book.apply(claim("s", "b", 2, ttl=10), seen=5.0)
    assert book.holder(now=9.9).claimant == "a"  # type: ignore[union-attr]
    assert book.holder(now=10.0).claimant == "b"  # type: ignore[union-attr]
    assert book.holder(now=15.0) is None
    # A renewal seen later makes a's claim live again, with its old place first.
    book.apply(claim("s", "a", 3, since=1, ttl=10), seen=14.0)
    assert book.holder(now=15.0).claimant == "a"  # type: ignore[union-attr]


def test_a_tombstone_hands_the_lease_on_at_once() -> None:
    records = [claim("s", "a", 1), claim("s", "b", 2), tombstone("s", "a", 3)]
    assert holder_of([(r, 0.0) for r in records], "s", now=1.0) == "b"


def test_each_claim_lasts_its_own_ttl() -> None:
    book = LeaseBook("s")
    book.apply(claim("s", "a", 1, ttl=2), seen=0.0)
    book.apply(claim("s", "b", 2, ttl=60), seen=0.0)
    assert [c.claimant for c in book.live(now=1.0)] == ["a", "b"]
    assert [c.claimant for c in book.live(now=3.0)] == ["b"]


def test_other_leases_and_unreadable_fields_do_not_confuse_it() -> None:
    book = LeaseBook("s")
    assert not book.apply(claim("s2", "x", 0), seen=0.0)  # another source's lease
    assert not book.apply(Entry("worker/x", {"at": 1}, 1, 0.0), seen=0.0)
    book.apply(Entry("lease/s/a", {"since_offset": "nine", "ttl": "long"}, 5, 0.0), seen=0.0)
    book.apply(Entry("lease/s/b", {"since_offset": True, "ttl": -1}, 6, 0.0), seen=0.0)
    assert book.claims["a"] == Claim("a", 5, 5, 0.0, lease_module.DEFAULT_SECONDS)
    assert book.claims["b"].since == 6
    assert book.holder(now=1.0).claimant == "a"  # type: ignore[union-attr]


# ---- the lease over an in-memory log -------------------------------------------------------


class MemoryTopic:
    """One partition in memory; each lease reads it through its own :class:`MemoryReader`."""

    def __init__(self) -> None:
        self.records: list[Entry] = []
        self.readers: list[MemoryReader] = []
        #: While clear, writes wait (a broker that stopped answering).
        self.answering = asyncio.Event()
        self.answering.set()

    def table(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for r in self.records:
            out[r.key] = r.value
        return {k: v for k, v in out.items() if v is not None}

    def append(self, key: str, value: dict[str, Any] | None) -> int:
        self.records.append(Entry(key, value, len(self.records), time.time()))
        for reader in self.readers:
            reader.catch_up()
        return len(self.records) - 1


class MemoryReader:
    """A :class:`~etl.control.lease.LeaseLog` over a :class:`MemoryTopic`."""

    def __init__(self, topic: MemoryTopic) -> None:
        self.topic = topic
        self.position = 0
        self.on_entry: Callable[[Entry], None] | None = None
        #: While clear, this reader's writes wait (a slow network on one side).
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = False

    async def start(self, on_entry: Callable[[Entry], None], timeout: float = 60.0) -> None:
        self.on_entry, self.position = on_entry, 0
        self.topic.readers.append(self)
        self.catch_up()

    def catch_up(self) -> None:
        while self.on_entry is not None and self.position < len(self.topic.records):
            self.on_entry(self.topic.records[self.position])
            self.position += 1

    async def put(self, key: str, value: dict[str, Any] | None, *, seen: bool = True) -> int:
        await asyncio.sleep(0)  # claimants deciding at once all decide before anyone writes
        # A write the caller stops waiting for still lands, as on a broker.
        return await asyncio.shield(asyncio.ensure_future(self._append(key, value)))

    async def _append(self, key: str, value: dict[str, Any] | None) -> int:
        self.waiting = not self.gate.is_set()
        await self.gate.wait()
        self.waiting = False
        await self.topic.answering.wait()
        return self.topic.append(key, value)

    async def stop(self) -> None:
        self.on_entry = None
        if self in self.topic.readers:
            self.topic.readers.remove(self)


def memory_lease(topic: MemoryTopic, claimant: str, seconds: float = 10.0) -> KafkaLease:
    settings = pipeline_settings("127.0.0.1:1", "mem")
    return KafkaLease(
        settings, "src", seconds=seconds, claimant=claimant, control_log=MemoryReader(topic)
    )


def abandon(lease: KafkaLease) -> None:
    """As if the process died: no more renewals, no release."""
    lease._stop_renewing()
    assert lease._log is not None
    asyncio.ensure_future(lease._log.stop())
    lease_module._IN_USE.discard((lease.topic, lease.key))


async def test_one_claimant_holds_the_others_stand_by_a_release_hands_over() -> None:
    topic = MemoryTopic()
    a, b = memory_lease(topic, "a"), memory_lease(topic, "b")
    assert await a.acquire() and await a.held()
    assert not await b.acquire()
    assert a.holder() == b.holder() == "a"
    await a.release()
    assert "lease/src/a" not in topic.table()
    assert await b.acquire()
    await b.release()


async def test_claimants_racing_leave_one_holder_and_one_claim() -> None:
    topic = MemoryTopic()
    leases = [memory_lease(topic, f"w{i}") for i in range(4)]
    won = await asyncio.gather(*(lease.acquire() for lease in leases))
    assert sum(won) == 1, won
    winner = leases[won.index(True)]
    assert {lease.holder() for lease in leases} == {winner.claimant}
    assert list(topic.table()) == [winner.key]  # the losers deleted their claims
    for lease in leases:
        await lease.release()


async def test_a_holder_whose_renewals_go_unanswered_gives_up_and_stays_given_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lease_module, "RELEASE_TIMEOUT", 0.2)
    topic = MemoryTopic()
    a = memory_lease(topic, "a", seconds=0.6)
    assert await a.acquire()
    topic.answering.clear()
    await until(lambda: a._lapse(time.monotonic()), "the tenure to lapse")
    assert not await a.held()
    topic.answering.set()  # the late renewal lands now, then the deletion: no way back
    await until(lambda: "lease/src/a" not in topic.table(), "the claim deleted")
    assert not await a.held()
    assert a.holder() is None
    await a.release()


async def test_a_renewing_holder_keeps_the_lease_past_its_ttl() -> None:
    topic = MemoryTopic()
    a, b = memory_lease(topic, "a", seconds=0.6), memory_lease(topic, "b", seconds=0.6)
    assert await a.acquire()
    renewals = len(topic.records)
    await until(lambda: len(topic.records) >= renewals + 5, "five renewals")
    assert await a.held() and not await b.acquire()
    await a.release()
    await b.release()


async def test_a_dead_holder_is_replaced_after_its_ttl_and_its_claim_deleted() -> None:
    topic = MemoryTopic()
    a, b = memory_lease(topic, "a", seconds=0.5), memory_lease(topic, "b", seconds=0.5)
    assert await a.acquire() and not await b.acquire()
    abandon(a)
    await until(b.acquire, "b to take over")
    # b's renewals delete a's expired claim.
    await until(lambda: "lease/src/a" not in topic.table(), "a's claim deleted")
    await b.release()


async def test_a_restarted_worker_carries_on_its_tenure_unless_another_claims() -> None:
    topic = MemoryTopic()
    first = memory_lease(topic, "a", seconds=30)
    assert await first.acquire()
    since = first._since
    abandon(first)  # kill -9
    again = memory_lease(topic, "a", seconds=30)
    assert await again.acquire(), "the same worker id resumes at once"
    assert again._since == since
    abandon(again)
    # Another worker claimed in between: the restarted one deletes its old claim.
    topic.append("lease/src/b", {"since_offset": None, "ttl": 30, "at": 0})
    third = memory_lease(topic, "a", seconds=30)
    assert not await third.acquire()
    assert "lease/src/a" not in topic.table()
    await third.release()


async def test_a_carried_on_tenure_racing_a_new_claim_never_makes_two_holders() -> None:
    topic = MemoryTopic()
    # The restarted worker's old claim, expired for x (its ttl is short).
    topic.append("lease/src/a", {"since_offset": None, "ttl": 0.05, "at": 0})
    x = memory_lease(topic, "x")
    await x._open()
    await asyncio.sleep(0.1)
    a = memory_lease(topic, "a")
    reader = a._given_log
    assert isinstance(reader, MemoryReader)
    reader.gate.clear()
    # a decides to carry its tenure on; its write lands after x claimed and read back.
    resumed = asyncio.ensure_future(a.acquire())
    await until(lambda: reader.waiting, "a writing its claim")
    assert await x.acquire()
    reader.gate.set()
    assert not await resumed, "a carried-on tenure jumped ahead of a live claim"
    assert x.holder() == "x" and await x.held()
    await x.release()
    await a.release()


async def test_two_leases_of_one_worker_in_one_process_are_two_claimants() -> None:
    topic = MemoryTopic()
    a1, a2 = memory_lease(topic, "a"), memory_lease(topic, "a")
    assert await a1.acquire() and not await a2.acquire()
    assert a1.claimant == "a" and a2.claimant == "a.2"
    await a1.release()
    await a2.release()


# ---- on the real broker ----------------------------------------------------------------


def broker_lease(bootstrap: str, uid: str, claimant: str, seconds: float) -> KafkaLease:
    settings = pipeline_settings(bootstrap, uid)
    return KafkaLease(settings, "replay", seconds=seconds, claimant=claimant)


@pytest.mark.kafka
async def test_on_the_broker_racing_claimants_agree_on_one_holder(
    kafka_bootstrap: str, uid: str
) -> None:
    leases = [broker_lease(kafka_bootstrap, uid, f"w{i}", 60) for i in range(4)]
    try:
        won = await asyncio.gather(*(lease.acquire() for lease in leases))
        assert sum(won) == 1, won
        winner = leases[won.index(True)].claimant
        await until(lambda: all(x.holder() == winner for x in leases), "every reader agrees")
        assert [await x.acquire() for x in leases].count(True) == 1
    finally:
        for lease in leases:
            await lease.release()


@pytest.mark.kafka
async def test_on_the_broker_a_clean_release_hands_over_at_once(
    kafka_bootstrap: str, uid: str
) -> None:
    # A 60 s lease: a takeover within 15 s can only come from the release.
    a, b = (broker_lease(kafka_bootstrap, uid, w, 60) for w in ("a", "b"))
    try:
        assert await a.acquire()
        assert not await b.acquire()
        await a.release()
        await until(b.acquire, "b to hold the lease", timeout=15)
        assert await b.held()
    finally:
        await a.release()
        await b.release()


async def test_a_lease_topic_that_cannot_be_read_is_retriable(uid: str) -> None:
    settings = pipeline_settings("127.0.0.1:9", uid)  # nothing listens there
    lease = KafkaLease(settings, "replay", claimant="a")
    with pytest.raises(RetriableError):
        await asyncio.wait_for(lease.acquire(), 120)
    await lease.release()


class Claimant:
    """``tests.sources.lease_claimant`` in a process of its own."""

    def __init__(self, bootstrap: str, prefix: str, name: str, seconds: float, tmp: Path):
        self.args = [bootstrap, prefix, "replay", name, str(seconds)]
        self.state = tmp / f"{name}.state"
        self.log = tmp / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.ended = False  # by the test

    def start(self) -> Claimant:
        self.ended = False
        self.state.unlink(missing_ok=True)
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.sources.lease_claimant", *self.args, str(self.state)],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def shows(self) -> str:
        return self.state.read_text() if self.state.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, sig)
        self.process.wait(30)
        self.ended = True

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.signal(signal.SIGKILL)


def wait_shown(claimants: list[Claimant], check: Callable[[], bool], what: str, timeout: float):
    deadline = time.monotonic() + timeout
    while not check():
        for c in claimants:
            if c.process is not None and not c.ended and c.process.poll() is not None:
                raise AssertionError(f"{c.log.name} exited:\n{c.log.read_text()}")
        if time.monotonic() > deadline:
            logs = "\n".join(c.log.read_text()[-3000:] for c in claimants if c.log.exists())
            raise AssertionError(f"timed out waiting for {what}:\n{logs}")
        time.sleep(0.1)


@pytest.mark.kafka
@pytest.mark.slow
def test_kill_9_of_the_holder_hands_the_lease_over_within_its_ttl(
    kafka_bootstrap: str, uid: str, tmp_path: Path
) -> None:
    seconds = 6.0
    a = Claimant(kafka_bootstrap, f"t{uid}", "a", seconds, tmp_path).start()
    b = Claimant(kafka_bootstrap, f"t{uid}", "b", seconds, tmp_path).start()
    both = [a, b]
    try:
        wait_shown(both, lambda: {a.shows(), b.shows()} == {"held", "standby"}, "one holder", 90)
        holder, other = (a, b) if a.shows() == "held" else (b, a)
        holder.signal(signal.SIGKILL)
        killed = time.monotonic()
        # The lease time plus a few seconds (attempts every check interval, a reader's poll).
        wait_shown(both, lambda: other.shows() == "held", "the other to take over", seconds + 10)
        print(f"kill -9 -> taken over in {time.monotonic() - killed:.1f}s (lease {seconds}s)")
        # The killed worker comes back: the lease stays where it is.
        holder.start()
        wait_shown(both, lambda: holder.shows() == "standby", "the restarted one standing by", 90)
        assert other.shows() == "held"
        # A clean stop of the holder hands over at once.
        other.signal(signal.SIGTERM)
        assert other.shows() == "released"
        released = time.monotonic()
        wait_shown(both, lambda: holder.shows() == "held", "the hand-over", 15)
        print(f"release -> taken over in {time.monotonic() - released:.1f}s")
    finally:
        for c in both:
            c.close()


@pytest.mark.kafka
@pytest.mark.slow
def test_a_worker_killed_and_restarted_under_its_id_takes_its_lease_back_at_once(
    kafka_bootstrap: str, uid: str, tmp_path: Path
) -> None:
    # A 60 s lease: holding again within 30 s of the restart is not the lease running out.
    a = Claimant(kafka_bootstrap, f"t{uid}", "a", 60, tmp_path).start()
    try:
        wait_shown([a], lambda: a.shows() == "held", "a holds", 90)
        a.signal(signal.SIGKILL)
        a.start()
        wait_shown([a], lambda: a.shows() == "held", "a holds again", 30)
    finally:
        a.close()
