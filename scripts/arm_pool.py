"""What the large action space costs: UniScale on every arm against UniScale on the arms that matter.

    python scripts/arm_pool.py ../shared/data gsm8k,llmrouter --seeds 5

The pool is every arm that is the best fixed arm at some cost weight, plus the --top-k most accurate, chosen
in hindsight on the whole stream (`uniscale_lc/replay/arm_pool.py`). Both runs use the library defaults and
the same seeds and question orders; every AIQ is on the full space's cost range. Where the two UniScale AIQs
agree, the arms outside the pool cost the learner nothing, and its gap to the best fixed arm comes from
telling the near-tied arms of the pool apart.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uniscale_lc.progress import progress_bar  # noqa: E402
from uniscale_lc.replay.arm_pool import POOL_TABLE_HEADER, compare_with_pool, pool_table_row  # noqa: E402
from uniscale_lc.replay.runner import ReplayConfig, ReplayEnvironment  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("data_root", type=Path, help="folder holding one outcome-table folder per dataset")
    parser.add_argument("datasets", help="comma-separated dataset folder names")
    parser.add_argument("--seeds", type=int, default=5, help="seeds (question orders), as the replay's")
    parser.add_argument("--top-k", type=int, default=3, help="most accurate arms added to the frontier arms")
    parser.add_argument("--max-questions", type=int, default=1500, help="the replay's seeded subset size")
    args = parser.parse_args(argv)
    config = ReplayConfig(seeds=args.seeds, max_questions=args.max_questions, learners=("uniscale",))
    print("\n".join(POOL_TABLE_HEADER))
    for name in args.datasets.split(","):
        started = time.perf_counter()
        env = ReplayEnvironment.from_directory(args.data_root / name, config)
        bar = progress_bar(2 * config.seeds * len(config.cost_weights), f"arm pool {name}", unit="run")
        try:
            result = compare_with_pool(env, config, top_k=args.top_k, progress=bar.update)
        finally:
            bar.close()
        print(pool_table_row(name, result))
        print(f"  pool: {', '.join(result['pool'])} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
