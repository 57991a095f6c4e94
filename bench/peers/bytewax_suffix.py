"""bytewax doing the benchmark's job: append a suffix to every value, source -> target.

Runs in .venv-peers (see requirements.txt there); bench/worker_throughput.py times it.
bytewax keeps its own recovery state instead of committing group offsets, so the
benchmark times it by its outputs alone.
"""

import argparse

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource
from bytewax.dataflow import Dataflow
from bytewax.testing import run_main
from confluent_kafka import OFFSET_BEGINNING

parser = argparse.ArgumentParser()
for name in ("--bootstrap", "--source", "--target", "--group"):
    parser.add_argument(name, required=True)
args = parser.parse_args()

flow = Dataflow("suffix")
stream = op.input(
    "in",
    flow,
    KafkaSource(
        [args.bootstrap], [args.source], starting_offset=OFFSET_BEGINNING, batch_size=10000
    ),
)
out = op.map("suffix", stream, lambda msg: KafkaSinkMessage(msg.key, msg.value + b"ValueSuffix"))
op.output(
    "out",
    out,
    KafkaSink(
        [args.bootstrap], args.target, add_config={"enable.idempotence": "false", "linger.ms": "5"}
    ),
)
run_main(flow)
