"""The demo, from Python: UniScaleChat learning on a SIMULATED model pool, against every fixed arm.

Needs nothing but this package: the models are scripted stand-ins on a loopback server (no real LLM, no
key, no network), and their accuracies and prices are made up. About a minute on two cores.

    python examples/demo_offline.py                      # 300 problems
    python examples/demo_offline.py --requests 120 --plot demo.png

The same as `uniscale-lc demo`; see docs/demo.md for what the table shows.
"""

from __future__ import annotations

import argparse
import sys

from uniscale_lc.demo.run import run_demo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default=None, help="PNG path (needs matplotlib)")
    args = parser.parse_args()
    report = run_demo(requests=args.requests, seed=args.seed, plot_path=args.plot)
    print(report.summary())
    # The report is plain data too: e.g. how often UniScale picked each arm once it had learnt.
    print("\nlast-half picks:", dict(report.choices(last_half=True).most_common()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
