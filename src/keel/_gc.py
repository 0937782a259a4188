"""The garbage collector's settings for Keel's long-running processes.

A gateway worker and its telemetry process each build what they keep for
life once, at start, and then allocate per request (or per batch)
containers that reference counting frees: requests and telemetry records
hold no cycles. CPython's defaults suit neither. Every full collection
walked all the objects built at start, and a young collection ran every
700 container allocations, walking everything allocated since the last.
"""

from __future__ import annotations

import gc

# Container allocations between young-generation collections (CPython 3.11-3.13: 700).
YOUNG_GC_THRESHOLD = 10_000


def settle_after_start() -> None:
    """Keep everything that exists now out of collections; collect the young generation less often.

    Cycles are still collected, only less often.
    """
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])
