"""What exactly-once costs: the real ``etl worker`` at-least-once and exactly-once, one broker.

Exactly-once needs a broker with transactions; the embedded one has none, so this
starts noida-db's Kafka side (or uses ``--bootstrap``). In one run, alternating
the order round by round, each contender moves the same source topic through the
suffix transform of ``bench/worker_throughput.py`` into a target topic of its own
(read back ``read_committed``: every id exactly once, with the suffix), timed from
the first output to the last output and the group's commit.

Exactly-once makes each poll batch one transaction (up to
``kafka.max_batch_records``, 10,000 records): begin, produce, flush, add the
offsets, commit. Printed: median msg/s (min-max), CPU s per 100k, and the ratio
to at-least-once.

    python -m bench.exactly_once [--messages 200000] [--rounds 3] [--batch N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import uuid
from pathlib import Path

from bench import worker_throughput as wt
from bench.harness import create_topic, fill, span
from etl.testing.noida_kafka import NoidaKafka

CONTENDERS = ("etl worker", "etl worker (exactly_once)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bootstrap", help="a broker with transactions (default: noida-db)")
    parser.add_argument("--batch", type=int, help="kafka.max_batch_records (default 10000)")
    args = parser.parse_args(argv)
    if args.batch:
        os.environ["ETL_KAFKA__MAX_BATCH_RECORDS"] = str(args.batch)

    broker = None
    bootstrap = args.bootstrap
    if not bootstrap:
        broker = NoidaKafka().start()
        bootstrap = broker.bootstrap_servers
    base = Path(tempfile.mkdtemp(prefix="etl-bench-eo-"))
    load = os.getloadavg()
    contenders = [wt.Contender(name) for name in CONTENDERS]
    try:
        source = f"bench-src-{uuid.uuid4().hex[:8]}"
        create_topic(bootstrap, source, args.partitions)
        fill(bootstrap, source, args.messages)
        batch = args.batch or 10000
        print(
            f"{args.messages:,} messages in {args.partitions} partitions on {bootstrap} "
            f"({broker.version if broker else 'external broker'}), "
            f"batch/transaction {batch:,} records"
        )
        wt.run_rounds(
            contenders, bootstrap, source, args.partitions, args.messages, args.rounds, base
        )
        print(f"\nload average before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}")
        base_rate = span(contenders[0].results)[0]
        for contender in contenders:
            median, text, cpu, _rss = span(contender.results)
            print(
                f"{contender.name:28} {text:>28} msg/s  CPU {cpu:.2f} s/100k  "
                f"ratio {median / base_rate:.2f}"
            )
    finally:
        if broker is not None:
            broker.remove()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
