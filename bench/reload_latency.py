"""Hot-reload latency: from saving a transform file to the new version handling messages.

Starts the embedded broker and a real ``etl worker`` subprocess on a template
YAML (``add_prefix_suffix``), keeps messages flowing, then saves ``--edits``
edits, each with a new value suffix, and measures save -> the first output
message carrying the new suffix, as read by a separate consumer (so the figure
includes producing and fetching the output). Then ``--restarts`` edits change
``target_topic`` (the pipeline restarts: commit, leave, rejoin the group) and the
same is measured on the new topic. Every message is numbered; lost and doubled
ones are counted.

The bare-library reference is watchfiles alone, in this process, with the
worker's step/debounce settings: save -> ``awatch`` yields the change. Prints
both medians and the ratio (ours / bare).

    python -m bench.reload_latency [--edits 10] [--restarts 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from watchfiles import awatch

from etl.embedded import EmbeddedBroker
from etl.testing.flow import MessageFlow
from etl.testing.kafka import create_topic
from etl.testing.worker import WorkerProcess, write_config
from etl.transforms.reload import DEBOUNCE_MS, STEP_MS


def template_yaml(target: str, suffix: str) -> str:
    return (
        "template: add_prefix_suffix\n"
        "source_topic: bench-src\n"
        f"target_topic: {target}\n"
        "start_offset: earliest\n"
        f"params: {{value_suffix: '|{suffix}'}}\n"
    )


def measure_worker(
    edits: int, restarts: int, workdir: Path
) -> tuple[list[float], list[float], str]:
    with EmbeddedBroker(log_path=workdir / "broker.log") as broker:
        bootstrap = broker.bootstrap_servers
        targets = ["bench-a", "bench-b"]
        for topic in ["bench-src", *targets]:
            asyncio.run(create_topic(bootstrap, topic, 2))
        config = write_config(workdir, bootstrap)
        path = workdir / "transforms" / "bench.yaml"
        path.write_text(template_yaml("bench-a", "v0"))
        swaps: list[float] = []
        moves: list[float] = []
        with WorkerProcess(config) as worker, MessageFlow(bootstrap, "bench-src", targets) as flow:
            worker.wait_running("bench", timeout=120)
            flow.wait_for(lambda a: len(a) > 100, 60, "first output")
            for n in range(1, edits + 1):
                suffix = f"|v{n}"
                saved = time.time()
                path.write_text(template_yaml("bench-a", f"v{n}"))
                arrivals = flow.wait_for(
                    lambda a, s=suffix: sum(x.value.endswith(s) for x in a) >= 100, 60, suffix
                )
                swaps.append(min(x.received for x in arrivals if x.value.endswith(suffix)) - saved)
            for n in range(restarts):
                target = targets[(n + 1) % 2]
                before = len(flow.arrivals())
                saved = time.time()
                path.write_text(template_yaml(target, f"v{edits}"))
                arrivals = flow.wait_for(
                    lambda a, t=target, b=before: sum(x.topic == t for x in a[b:]) >= 100,
                    120,
                    target,
                )
                first = min(x.received for x in arrivals[before:] if x.topic == target)
                moves.append(first - saved)
            sent = flow.stop_producing()
            arrivals = flow.wait_all(sent, 120)
            time.sleep(1.0)  # anything doubled arrives late
            arrivals = flow.arrivals()
        counts = Counter(int(x.value.split("|")[0]) for x in arrivals)
        lost = sum(1 for i in range(sent) if i not in counts)
        doubled = sum(n - 1 for n in counts.values() if n > 1)
        return swaps, moves, f"{sent} messages, lost {lost}, doubled {doubled}"


async def measure_bare(edits: int, workdir: Path) -> list[float]:
    """Save -> watchfiles yields the change, same settings as the worker."""
    directory = workdir / "bare"
    directory.mkdir()
    stop = asyncio.Event()
    seen: asyncio.Queue[float] = asyncio.Queue()

    async def watch() -> None:
        async for _ in awatch(directory, step=STEP_MS, debounce=DEBOUNCE_MS, stop_event=stop):
            seen.put_nowait(time.time())

    task = asyncio.create_task(watch())
    await asyncio.sleep(0.5)
    latencies = []
    for n in range(edits):
        saved = time.time()
        (directory / "bench.yaml").write_text(template_yaml("bench-a", f"v{n}"))
        latencies.append(await asyncio.wait_for(seen.get(), 30) - saved)
        await asyncio.sleep(0.3)
    stop.set()
    await task
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=10)
    parser.add_argument("--restarts", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="etl-bench-reload-") as tmp:
        workdir = Path(tmp)
        swaps, moves, integrity = measure_worker(args.edits, args.restarts, workdir)
        bare = asyncio.run(measure_bare(args.edits, workdir))
    ours, reference = statistics.median(swaps), statistics.median(bare)
    print(f"watcher settings: step {STEP_MS} ms, debounce {DEBOUNCE_MS} ms")
    print(
        f"ours  save -> new version handling messages (swap): median {ours:.3f} s, "
        f"max {max(swaps):.3f} s, n={len(swaps)}"
    )
    print(f"bare  save -> watchfiles reports the change: median {reference:.3f} s, n={len(bare)}")
    print(f"ratio ours / bare: {ours / reference:.2f}")
    if moves:
        print(
            f"restart (target_topic changed): save -> output on the new topic: "
            f"median {statistics.median(moves):.3f} s, n={len(moves)}"
        )
    print(f"integrity: {integrity}")


if __name__ == "__main__":
    main()
