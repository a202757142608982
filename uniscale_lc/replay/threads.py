"""One BLAS thread while a replay runs: its work is many small matrix products, already spread over cores.

The sweep runs one worker process per core, and each decision multiplies matrices of a few hundred
entries. A multithreaded BLAS (OpenBLAS starts one thread per core) then only adds synchronisation and
contention: the full GSM8K sweep took 2.7x the CPU time without a limit (docs/replay.md, 'Speed').
Setting `OPENBLAS_NUM_THREADS` works only before numpy loads, which an installed console script cannot
ensure, so the limit is applied to the loaded libraries with threadpoolctl, for the replay's duration only:
an application's own numpy work outside it keeps its settings.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

__all__ = ["one_blas_thread"]


def one_blas_thread() -> AbstractContextManager[Any]:
    """A context in which the process's BLAS libraries use one thread (restored on exit); forked workers
    started inside it inherit the limit."""
    from threadpoolctl import threadpool_limits  # a small pure-Python base dependency

    return threadpool_limits(limits=1, user_api="blas")
