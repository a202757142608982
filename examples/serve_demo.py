"""Serve UniScale as an OpenAI-compatible API over the demo's SIMULATED model pool (no real LLM, no key).

    uniscale-lc serve examples/serve_demo.py:router          # or: make serve-demo
    python examples/serve_demo.py                            # prints questions the pool knows, and a curl

The pool's scripted models answer the demo's generated arithmetic problems (correct with a probability
that falls with difficulty and rises with model size; prices are made up), so the router has a real
trade-off to learn from the feedback you send. Set UNISCALE_STATE_PATH to keep what it learns across
restarts. See docs/server.md.
"""

from __future__ import annotations

import atexit
import json
import os
import sys

from uniscale_lc import HashingFeaturizer, LinUCB, MajorityVote, Router, Single
from uniscale_lc.demo.pool import SimulatedPool
from uniscale_lc.demo.problems import generate_problems
from uniscale_lc.demo.run import COST_WEIGHT, STATS_WEIGHT

PROBLEMS = generate_problems(200, seed=0)

# The pool is a loopback server started on import, so `uniscale-lc serve` finds it running; it stops at exit.
pool = SimulatedPool(PROBLEMS, seed=0).start()
atexit.register(pool.stop)

router = Router(
    models=pool.specs(),
    strategies=[Single(), MajorityVote(n=5)],
    policy=LinUCB(seed=0),  # the library defaults, as the demo (uniscale_lc/demo/run.py) uses
    featurizer=HashingFeaturizer(stats_weight=STATS_WEIGHT),
    cost_weight=COST_WEIGHT,
    state_path=os.environ.get("UNISCALE_STATE_PATH") or None,
)


def curl_command(question: str, port: int = 8000) -> str:
    """A curl that asks the served router one question (no system prompt: its quotes would need escaping)."""
    body = {"model": "uniscale", "messages": [{"role": "user", "content": question}]}
    return (
        f"curl -s http://127.0.0.1:{port}/v1/chat/completions -H 'Content-Type: application/json' "
        f"-d '{json.dumps(body)}'"
    )


def main() -> int:
    for problem in PROBLEMS[:3]:
        print(f"difficulty {problem.difficulty}, answer {problem.answer}: {problem.question}")
    print("\nWith `uniscale-lc serve examples/serve_demo.py:router` running:\n")
    print(curl_command(PROBLEMS[0].question))
    return 0


if __name__ == "__main__":
    sys.exit(main())
