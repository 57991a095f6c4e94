"""Why pipelines do not use Faust streams: the same transform as a Faust agent.

Runs three variants as real ``faust worker`` processes on an embedded broker,
each over the same pre-filled source topic, and compares their rate to the bare
aiokafka loop and to our pipeline (from ``bench.transform_throughput``), all in
the same run:

* ``agent-send``: ``async for event in stream: await target.send(...)``
* ``agent-take``: ``stream.take(1000, within=0.2)`` and one ``send`` per event
  without awaiting each acknowledgement
* ``agent-consume``: consume only, produce nothing

    python -m bench.faust_stream [--messages 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.transform_throughput import bare_loop, fill, our_pipeline
from etl.embedded import EmbeddedBroker, free_port
from etl.testing.kafka import create_topic, read_all

APP = """
import os
import faust

app = faust.App(
    os.environ["BENCH_APP"],
    broker="kafka://" + os.environ["BENCH_BROKER"],
    store="memory://",
    web_port=int(os.environ["BENCH_WEB_PORT"]),
    broker_rebalance_timeout=5,
    broker_session_timeout=6,
    broker_heartbeat_interval=1,
    stream_buffer_maxsize=100000,
    topic_allow_declare=False,
    consumer_auto_offset_reset="earliest",
)
source = app.topic(os.environ["BENCH_SOURCE"], value_serializer="raw", key_serializer="raw")
target = app.topic(os.environ["BENCH_TARGET"], value_serializer="raw", key_serializer="raw")
variant = os.environ["BENCH_VARIANT"]
seen = 0

if variant == "agent-send":
    @app.agent(source)
    async def run(stream):
        async for event in stream.events():
            value = event.value.decode() + "ValueSuffix"
            await target.send(key=event.key, value=value.encode())
elif variant == "agent-take":
    @app.agent(source)
    async def run(stream):
        async for values in stream.take(1000, within=0.2):
            for value in values:
                await target.send(value=(value.decode() + "ValueSuffix").encode())
else:
    @app.agent(source)
    async def run(stream):
        global seen
        async for _value in stream:
            seen += 1
            if seen % 1000 == 0:
                await target.send(value=str(seen).encode())
"""


async def count_records(bootstrap: str, topic: str) -> int:
    """Records in the topic, counted by reading it (some brokers under-report end offsets)."""
    return len(await read_all(bootstrap, topic))


async def run_variant(
    bootstrap: str, source: str, variant: str, messages: int, workdir: Path
) -> float:
    target = f"faust-{variant}-out"
    await create_topic(bootstrap, target, 4)
    app_file = workdir / "bench_faust_app.py"
    app_file.write_text(APP)
    expected = messages // 1000 if variant == "agent-consume" else messages
    env = {
        **os.environ,
        "BENCH_APP": f"bench-{variant}-{os.getpid()}",
        "BENCH_BROKER": bootstrap,
        "BENCH_WEB_PORT": str(free_port()),
        "BENCH_SOURCE": source,
        "BENCH_TARGET": target,
        "BENCH_VARIANT": variant,
        "PYTHONPATH": str(workdir),
    }
    log = (workdir / f"faust-{variant}.log").open("wb")
    process = subprocess.Popen(  # noqa: ASYNC220 - a benchmark harness
        [sys.executable, "-m", "faust", "-A", "bench_faust_app", "worker", "-l", "warn"],
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        started = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = await count_records(bootstrap, target)
            if started is None and done > 0:
                started = time.perf_counter()
            if done >= expected:
                assert started is not None
                return time.perf_counter() - started
            await asyncio.sleep(0.5)
        raise TimeoutError(variant)
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


async def main(messages: int) -> None:
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory(prefix="etl-faust-bench-") as tmp:
        bootstrap = broker.bootstrap_servers
        source = "faust-bench-source"
        await create_topic(bootstrap, source, 4)
        await create_topic(bootstrap, "faust-bench-bare-out", 4)
        await create_topic(bootstrap, "faust-bench-etl-out", 4)
        await fill(bootstrap, source, messages)
        bare = await bare_loop(bootstrap, source, "faust-bench-bare-out", messages, "fb-bare")
        ours = await our_pipeline(
            bootstrap, source, "faust-bench-etl-out", messages, Path(tmp), "fb-etl"
        )
        print(f"bare aiokafka loop: {messages / bare:,.0f} msg/s (1.00)")
        print(f"etl pipeline:       {messages / ours:,.0f} msg/s ({bare / ours:.2f})")
        for variant in ("agent-consume", "agent-take", "agent-send"):
            elapsed = await run_variant(bootstrap, source, variant, messages, Path(tmp))
            print(f"faust {variant:13s} {messages / elapsed:,.0f} msg/s ({bare / elapsed:.3f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    args = parser.parse_args()
    asyncio.run(main(args.messages))
