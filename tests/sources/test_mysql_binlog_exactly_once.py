"""The mysql_binlog source under ``kafka.processing_guarantee: exactly_once``, kill -9.

On a broker with transactions (noida-db): 20,000 inserts while the worker is
killed three times, each time with a Kafka transaction open; a ``read_committed``
reader sees every inserted row exactly once.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from etl.testing.noida_kafka import OpenTransactions, read_topic
from etl.testing.worker import WorkerProcess, write_config
from tests.sources.helpers import CDC_PASSWORD, BinlogServer, source_options
from tests.sources.test_mysql_binlog_worker import insert

pytestmark = [pytest.mark.kafka, pytest.mark.mysql, pytest.mark.slow]

TOTAL = 20_000
KILLS = 3


def inserted_ids(bootstrap: str, topic: str) -> list[int]:
    ids = []
    for _partition, _offset, _key, value in read_topic(bootstrap, topic):
        payload = json.loads(value or b"{}")["payload"]
        if payload["op"] == "INSERT":
            ids.append(payload["after"]["dataColumn"]["id"])
    return ids


@pytest.mark.serial  # a kill must find a transaction open
def test_kill_9_during_inserts_publishes_every_change_once(
    noida_kafka: str, binlog_server: BinlogServer, database: str, uid: str, workdir: Path
) -> None:
    server = binlog_server
    server.execute(f"CREATE TABLE `{database}`.events (id INT PRIMARY KEY, note VARCHAR(20))")
    options = source_options(server, database, uid, tables="events", start=server.position())
    topic = f"t{uid}_events"
    config = write_config(
        workdir,
        noida_kafka,
        kafka={"processing_guarantee": "exactly_once"},
        sources=[{**options, "password": "${CDC_PW}"}],
    )
    name = str(options["name"])
    open_transactions = OpenTransactions(noida_kafka, topic)
    hits = 0
    for round_ in range(KILLS):
        worker = WorkerProcess(config, name=f"w{round_}", env={"CDC_PW": CDC_PASSWORD})
        worker.status_path.unlink(missing_ok=True)
        worker.start()
        worker.wait_running(name, timeout=90)
        # Each round inserts its share while this worker runs: one writer for all the
        # rows was done within the first round, and later kills found nothing to cut.
        ids = range(1 + round_ * TOTAL // KILLS, 1 + (round_ + 1) * TOTAL // KILLS)
        writer = threading.Thread(target=insert, args=(server, database, ids, 5))
        writer.start()
        deadline = time.monotonic() + 20
        while not open_transactions.seen() and time.monotonic() < deadline:
            time.sleep(0.01)
        hits += open_transactions.seen()
        worker.kill()
        writer.join()
    with WorkerProcess(config, name="last", env={"CDC_PW": CDC_PASSWORD}):
        deadline = time.monotonic() + 90
        ids = inserted_ids(noida_kafka, topic)
        while len(ids) < TOTAL and time.monotonic() < deadline:
            time.sleep(0.5)
            ids = inserted_ids(noida_kafka, topic)
        time.sleep(1.0)  # anything repeated would arrive by now
        ids = inserted_ids(noida_kafka, topic)
    repeated = [i for i, n in Counter(ids).items() if n > 1]
    assert not repeated, f"{len(repeated)} rows repeated, e.g. {repeated[:5]}"
    assert sorted(ids) == list(range(1, TOTAL + 1)), "lost rows"
    assert hits >= 1, "no kill hit an open transaction"
