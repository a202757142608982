"""GPU check (<= 5 minutes on one H100/A100): profile draft and target step times with torch, plan, print.

Random-weight decoders with Llama-3.1-8B and Llama-3.2-1B shapes, bf16, KV cache at 1024 tokens; the
acceptance curve is the example profile's (random weights cannot measure acceptance). Prints the measured
profile's step times next to the synthetic example's roofline numbers, and the plan for a 40 ms TPOT SLO.

    python scripts/gpu_profile_check.py [--out profile.json]

Needs torch with CUDA. It has not been run yet: the session that wrote it had no GPU machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from uniscale_lc.specserve.planner import plan, speculative_config, summary_rows
from uniscale_lc.specserve.profile import example_profile
from uniscale_lc.specserve.torch_profiler import LLAMA_1B_DIMS, LLAMA_8B_DIMS, profile_pair, require_torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=None)
    parser.add_argument("--slo-tpot-ms", type=float, default=40.0)
    args = parser.parse_args()
    torch = require_torch()
    if not torch.cuda.is_available():
        print("no CUDA device: this check needs a GPU", file=sys.stderr)
        return 2
    started = time.monotonic()
    example = example_profile()
    profile = profile_pair(LLAMA_8B_DIMS, LLAMA_1B_DIMS, example.acceptance_per_pos,
                           batch_sizes=(1, 4, 16, 64, 128), max_k=4, context_len=1024,
                           device="cuda", dtype="bfloat16", warmup=2, iters=5)
    print(f"profiled on {profile.hardware} in {time.monotonic() - started:.0f} s")
    print("draft ms by batch:", dict(zip(profile.batch_sizes, profile.draft_ms, strict=True)))
    print("verify ms by tokens:", dict(zip(profile.verify_tokens, profile.verify_ms, strict=True)))
    print("synthetic example (roofline) verify ms:", dict(zip(example.verify_tokens, example.verify_ms, strict=True)))
    spec_plan = plan(profile, args.slo_tpot_ms, max_k=4, max_batch_size=128)
    for row in summary_rows(spec_plan):
        print(row)
    print(json.dumps(speculative_config(spec_plan, method="draft_model", model="meta-llama/Llama-3.2-1B-Instruct")))
    if args.out:
        profile.to_json(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
