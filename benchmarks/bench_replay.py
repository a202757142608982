"""Wall and CPU time of the full GSM8K replay: every learner and baseline, 5 seeds, the default cost-weight sweep.

Aim (issue 4): under 3 minutes on 2 cores. Run it on an otherwise idle machine; the CPU time it prints
(summed over worker processes) is the figure that does not depend on what else the machine is doing.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_replay.py                 # ../shared/data/gsm8k
    OPENBLAS_NUM_THREADS=1 taskset -c 0,1 python benchmarks/bench_replay.py  # pin to 2 cores
    python benchmarks/bench_replay.py --quick                                # 1 seed, 200 questions
    env -u OPENBLAS_NUM_THREADS python benchmarks/bench_replay.py --seeds 1 --compare-blas

--compare-blas also times the same sweep without the replay's one-BLAS-thread limit (replay/threads.py),
the behaviour before it, and prints the ratio; run it without OPENBLAS_NUM_THREADS in the environment
(the Makefile sets it to 1, which would make both runs single-threaded).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uniscale_lc.replay import ReplayConfig, ReplayEnvironment, build_report, run_sweep  # noqa: E402


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "gsm8k")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--compare-blas", action="store_true", help="also time the sweep without the BLAS limit")
    args = parser.parse_args(argv)
    config = ReplayConfig(
        seeds=1 if args.quick else args.seeds, workers=args.workers, max_questions=200 if args.quick else None
    )
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    env = ReplayEnvironment.from_directory(args.data, config)
    loaded = time.perf_counter()
    traces = run_sweep(env, config)
    swept = time.perf_counter()
    sweep_cpu = _cpu_seconds() - cpu_started
    report = build_report(env, config, traces)
    finished = time.perf_counter()
    steps = sum(len(trace.order) for trace in traces.values())
    cpu = _cpu_seconds() - cpu_started
    print(
        f"dataset {report['dataset']}: {env.n_questions} questions, {len(env.outcomes.arms)} arms, "
        f"{len(config.learners)} learners x {config.seeds} seeds x {len(config.cost_weights)} weights = "
        f"{len(traces)} runs, {steps} steps; {cores} usable core(s), workers={config.workers or cores}"
    )
    print(
        f"wall {finished - started:.1f} s (load + featurise {loaded - started:.1f} s, sweep {swept - loaded:.1f} s, "
        f"report {finished - swept:.1f} s); CPU {cpu:.1f} s; {1e3 * cpu / max(steps, 1):.3f} CPU-ms per step"
    )
    print(
        f"load average at the end: {os.getloadavg()[0]:.2f} (other processes on the machine slow the wall time)"
    )
    if args.compare_blas:
        _compare_blas(env, config, swept - loaded, sweep_cpu)
    return 0


def _compare_blas(env: ReplayEnvironment, config: ReplayConfig, limited_wall: float, limited_cpu: float) -> None:
    """The same sweep with the BLAS libraries left at their own thread count (the baseline)."""
    import contextlib

    from uniscale_lc.replay import sweep

    if os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS"):
        print("note: OPENBLAS_NUM_THREADS / OMP_NUM_THREADS is set, so the baseline is limited as well")
    limit = sweep.one_blas_thread
    sweep.one_blas_thread = contextlib.nullcontext  # type: ignore[assignment]
    try:
        started, cpu_started = time.perf_counter(), _cpu_seconds()
        run_sweep(env, config)
        wall, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_started
    finally:
        sweep.one_blas_thread = limit
    print(
        f"sweep without the BLAS limit (baseline): wall {wall:.1f} s, CPU {cpu:.1f} s; with it: wall "
        f"{limited_wall:.1f} s, CPU {limited_cpu:.1f} s; ratio {wall / limited_wall:.2f}x wall, "
        f"{cpu / max(limited_cpu, 1e-9):.2f}x CPU"
    )


if __name__ == "__main__":
    raise SystemExit(main())
