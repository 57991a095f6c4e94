"""Quix Streams doing the benchmark's job: append a suffix to every value, source -> target.

Runs in .venv-peers (see requirements.txt there); bench/worker_throughput.py times it.
Commits every 0.5 s (Quix's default is every 5 s, which would only delay the last commit).
"""

import argparse

from quixstreams import Application

parser = argparse.ArgumentParser()
for name in ("--bootstrap", "--source", "--target", "--group"):
    parser.add_argument(name, required=True)
args = parser.parse_args()

app = Application(
    broker_address=args.bootstrap,
    consumer_group=args.group,
    auto_offset_reset="earliest",
    commit_interval=0.5,
    auto_create_topics=False,
    use_changelog_topics=False,
    producer_extra_config={"enable.idempotence": False, "linger.ms": 5},
    consumer_extra_config={"session.timeout.ms": 10000},
)
source = app.topic(args.source, key_deserializer="bytes", value_deserializer="bytes")
target = app.topic(args.target, key_serializer="bytes", value_serializer="bytes")
frame = app.dataframe(source)
frame = frame.apply(lambda value: value + b"ValueSuffix")
frame.to_topic(target)
app.run()
