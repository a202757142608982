"""Many replay runs: every learner x seed x cost weight, in forked worker processes.

Each job is one `run_learner` (or, for the learners that see labelled data first, one `run_warm_learner`;
for the full-information references, one `run_full_information`)
on the seed's question order. The environment reaches the workers by fork, not by pickling, and every
worker runs numpy on one BLAS thread (`threads.one_blas_thread`): the processes already fill the cores.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable

from .full_information import FULL_INFORMATION_LEARNERS, run_full_information
from .runner import ReplayConfig, ReplayEnvironment, RunTrace, question_order, run_learner
from .threads import one_blas_thread
from .warm import WARM_LEARNERS, run_warm_learner

__all__ = ["RunKey", "run_sweep"]

RunKey = tuple[str, int, float]


def _sweep_job(args: tuple[ReplayEnvironment, str, int, float, ReplayConfig]) -> RunTrace:
    env, learner, seed, weight, config = args
    if learner in WARM_LEARNERS:
        return run_warm_learner(env, learner, seed, weight, config)
    if learner in FULL_INFORMATION_LEARNERS:
        order = question_order(env.n_questions, seed)
        return run_full_information(env, learner, seed, weight, order)
    return run_learner(env, learner, seed, weight, question_order(env.n_questions, seed), config)


_SHARED_ENV: ReplayEnvironment | None = None


def _sweep_job_shared(args: tuple[str, int, float, ReplayConfig]) -> RunTrace:
    if _SHARED_ENV is None:  # pragma: no cover - set before the workers fork
        raise RuntimeError("worker started without an environment")
    return _sweep_job((_SHARED_ENV, *args))


def run_sweep(
    env: ReplayEnvironment,
    config: ReplayConfig,
    progress: Callable[[int], None] | None = None,
) -> dict[RunKey, RunTrace]:
    """Every learner x seed x cost weight; forked worker processes when `config.workers` > 1."""
    jobs = [
        (learner, seed, weight, config)
        for learner in config.learners
        for seed in range(config.seeds)
        for weight in config.cost_weights
    ]
    traces: dict[RunKey, RunTrace] = {}
    with one_blas_thread():  # the workers already fill the cores (replay/threads.py)
        workers = min(config.workers or (os.cpu_count() or 1), len(jobs))
        if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
            global _SHARED_ENV
            _SHARED_ENV = env
            try:
                with multiprocessing.get_context("fork").Pool(workers) as pool:
                    for trace in pool.imap_unordered(_sweep_job_shared, jobs):
                        traces[(trace.learner, trace.seed, trace.cost_weight)] = trace
                        if progress:
                            progress(1)
            finally:
                _SHARED_ENV = None
        else:
            for job in jobs:
                trace = _sweep_job((env, *job))
                traces[(trace.learner, trace.seed, trace.cost_weight)] = trace
                if progress:
                    progress(1)
    return traces
