"""Compression end to end: kcat produces compressed input, the worker compresses its output.

One worker per codec (the codec is a worker setting), all four at once; kcat, a
client nobody here wrote, reads the outputs back.
"""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from pathlib import Path

from etl.testing.kafka import create_topic
from etl.testing.kcat import kcat_consume, kcat_produce
from etl.testing.worker import WorkerProcess, suffix_transform, write_config

CODECS = ("gzip", "snappy", "lz4", "zstd")


def test_every_codec_in_and_out(tmp_path: Path, kafka_bootstrap: str, uid: str) -> None:
    workers = {}
    with ExitStack() as stack:
        for codec in CODECS:
            source, target = f"zin-{codec}-{uid}", f"zout-{codec}-{uid}"
            asyncio.run(create_topic(kafka_bootstrap, source, 2))
            project = tmp_path / codec
            (project / "transforms").mkdir(parents=True)
            (project / "transforms" / "suffix.py").write_text(
                suffix_transform(source, target, "+z")
            )
            path = write_config(
                project,
                kafka_bootstrap,
                kafka={"group_prefix": f"z{codec}{uid}", "compression_type": codec},
            )
            workers[codec] = (stack.enter_context(WorkerProcess(path)), source, target)
        for codec, (worker, source, _target) in workers.items():
            worker.wait_running("suffix")
            lines = [f"k{i % 5}\t{codec}-{i}-" + "x" * 200 for i in range(500)]
            kcat_produce(kafka_bootstrap, source, lines, compression=codec)
        for codec, (worker, _source, target) in workers.items():
            rows = kcat_consume(kafka_bootstrap, target, count=500)
            values = sorted(value for _key, value, _p, _o in rows)
            expected = sorted(f"{codec}-{i}-" + "x" * 200 + "+z" for i in range(500))
            assert values == expected, f"{codec}: outputs differ"
            worker.wait_for(
                lambda w: (w.pipeline("suffix") or {}).get("consumed") == 500, 30, "500 consumed"
            )
            assert (worker.pipeline("suffix") or {}).get("state") == "running"
