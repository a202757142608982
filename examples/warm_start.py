"""Warm start from an eval set: fit a Router on recorded outcomes, save, reload, then route and learn online.

Runs offline on a recorded outcome table (default ../shared/data/gsm8k, Single arms only): no model is
called, the table says what each arm would have answered. A seeded 30 % of the questions is the labelled
eval set (every arm's outcome of each); the router is fitted on it through `Router.fit`, saved, reloaded
from its state file, and then routes the other 70 % with `route()` and learns each recorded outcome
through `feedback()`, as it would live. Prints its accuracy and cost there beside the arm that was best on
the eval set. About 15 s on an idle two-core machine.

    python examples/warm_start.py
    python examples/warm_start.py --data ../shared/data/routerarena --arms all

See docs/warm_start.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import numpy as np

from uniscale_lc import Router
from uniscale_lc.replay.fit_cli import recorded_outcomes
from uniscale_lc.replay.warm import WARM_FRACTION, WARM_SEED, outcome_records
from uniscale_lc.warm_start import labelled_split

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="an outcome-table directory")
    parser.add_argument(
        "--arms", default="kind:single", help="arm patterns as for `uniscale-lc replay --arms`"
    )
    parser.add_argument("--cost-weight", type=float, default=0.2)
    args = parser.parse_args(argv)
    if not (args.data / "outcomes.csv.gz").is_file():
        print(
            f"no outcome table at {args.data}; pass --data DIR (see ../shared/data/README.md)",
            file=sys.stderr,
        )
        return 2

    env, outcomes = recorded_outcomes(args.data, None if args.arms == "all" else args.arms)
    space = env.arm_space(range(len(outcomes.arms)))
    labelled, heldout = labelled_split(outcomes.n_questions, WARM_FRACTION, WARM_SEED)
    print(
        f"{outcomes.dataset}: {len(space)} arms, {labelled.size} labelled and {heldout.size} held-out questions"
    )

    with tempfile.TemporaryDirectory() as folder:
        state = Path(folder) / "warm.npz"
        router = Router(arms=space, cost_weight=args.cost_weight)
        summary = router.fit(outcome_records(outcomes, labelled))
        print(
            f"fitted {summary['records']} outcomes of {summary['arms_taught']} arms "
            f"(context_ridge {summary['context_ridge']:g}, chosen by cross-validation: "
            f"{summary['context_ridge_chosen_by_cv']})"
        )
        router.save(state)
        router.close()

        live = Router(arms=space, cost_weight=args.cost_weight, state_path=str(state), autosave_interval_s=60)
        column = {arm_id: index for index, arm_id in enumerate(outcomes.arm_ids)}
        quality, cost = [], []
        for question in np.random.default_rng(0).permutation(heldout):
            routed = live.route(outcomes.prompts[question])
            arm = column[routed.arm_id]
            quality.append(float(outcomes.quality[question, arm]))
            cost.append(float(outcomes.cost_usd[question, arm]))
            live.feedback(routed.decision_id, quality[-1])  # the recorded outcome, as live feedback
        print(f"stats: warm_start_records={live.stats()['warm_start_records']}, feedback={len(quality)}")
        live.close()

    best = int(np.argmax(outcomes.quality[labelled].mean(axis=0)))
    print(f"warm-started router on held-out: accuracy {np.mean(quality):.4f}, ${np.mean(cost):.6f}/query")
    print(
        f"eval set's best arm {outcomes.arm_ids[best]} on held-out: accuracy "
        f"{outcomes.quality[heldout, best].mean():.4f}, ${outcomes.cost_usd[heldout, best].mean():.6f}/query"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
