"""How one partition's records are cut into objects."""

from __future__ import annotations

import math


def plan_objects(
    sizes: list[int], dirs: list[str] | None, *, limit: int, most: int
) -> list[tuple[int, int]]:
    """``[start, end)`` index ranges, one per object, in order.

    An object holds consecutive records of one time directory (``dirs``; None:
    all in one), so the objects of a partition follow offset order and the meta
    object's ``last_offset`` only moves forward. A run over ``limit`` bytes or
    ``most`` records is cut into pieces of about equal size rather than full
    pieces and a small rest. A single record larger than ``limit`` gets an
    object of its own.
    """
    if not sizes:
        return []
    runs: list[tuple[int, int]] = []
    if dirs is None or (dirs[0] == dirs[-1] and dirs.count(dirs[0]) == len(dirs)):
        runs.append((0, len(sizes)))
    else:
        start = 0
        for index in range(1, len(dirs)):
            if dirs[index] != dirs[index - 1]:
                runs.append((start, index))
                start = index
        runs.append((start, len(dirs)))
    pieces: list[tuple[int, int]] = []
    for start, end in runs:
        total = sum(sizes[start:end])
        count = end - start
        if total <= limit and count <= most:
            pieces.append((start, end))
            continue
        target = total / max(math.ceil(total / limit), math.ceil(count / most))
        first, size = start, 0
        for index in range(start, end):
            item = sizes[index]
            if index > first and (size + item > limit or size >= target or index - first >= most):
                pieces.append((first, index))
                first, size = index, 0
            size += item
        pieces.append((first, end))
    return pieces
