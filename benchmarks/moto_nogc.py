"""The S3 endpoint of the API benchmark: moto's own server (``moto_server``, the same arguments)
with Python's cyclic garbage collector switched off.

Why: moto keeps every bucket and object in Python memory, on top of a few hundred thousand
objects from its imports (botocore's service models, Flask). Measured under the API benchmark,
its full (generation 2) collections paused it for 20-100 ms each, a few times a minute, and every
S3 request in flight waited: those pauses alone set the p99 of a label write. Freezing its warm
objects (:func:`gc.freeze`) was not enough, since the benchmark's own writes grow the heap again.
The production store is MinIO, a Go server whose collector runs concurrently with sub-millisecond
pauses, so the pauses measured the stand-in, not oraculum. A benchmark run lasts minutes; moto's
resident memory at the end is recorded in the results (``moto_rss_mib``).
``bench_api.py --stock-moto`` runs plain ``moto_server`` instead, for comparison.

    python benchmarks/moto_nogc.py -H 127.0.0.1 -p PORT
"""

from __future__ import annotations

import gc
import sys


def main() -> None:
    gc.disable()  # before moto's imports: reference counting still frees all but cyclic garbage
    from moto.server import main as moto_main

    moto_main(sys.argv[1:])


if __name__ == "__main__":
    main()
