"""GPU check (<= 5 minutes on one H200/H100/A100): profile draft and target step times with torch, plan, simulate.

Random-weight decoders with Llama-3.1-8B and Llama-3.2-1B shapes (step time depends on shapes, not weights),
bf16, KV cache at 1024 tokens, batch sizes 1-256, k 0-8. Acceptance cannot come from random weights: the
calibrated A100 profile's assumed curve is used. Writes a profile JSON, prints the plan for a TPOT SLO and a
SIMULATION of the mooncake trace at 1x, 4x and 8x with that profile.

    python scripts/gpu_profile_check.py --out uniscale_lc/specserve/profiles/h200_llama8b_draft1b.json

Needs torch with CUDA. Not run yet: no GPU machine was lent to the sessions that wrote it. vLLM itself is
not needed (and cannot be installed on that machine).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from uniscale_lc.specserve.planner import plan, speculative_config, summary_rows
from uniscale_lc.specserve.profile import example_profile
from uniscale_lc.specserve.simulate import load_trace, run_comparison
from uniscale_lc.specserve.torch_profiler import LLAMA_1B_DIMS, LLAMA_8B_DIMS, profile_pair, require_torch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=None)
    parser.add_argument("--slo-tpot-ms", type=float, default=40.0)
    parser.add_argument("--batch-sizes", default="1,4,16,64,128,256")
    parser.add_argument("--max-k", type=int, default=8)
    args = parser.parse_args()
    torch = require_torch()
    if not torch.cuda.is_available():
        print("no CUDA device: this check needs a GPU", file=sys.stderr)
        return 2
    started = time.monotonic()
    example = example_profile()
    batch_sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    profile = profile_pair(LLAMA_8B_DIMS, LLAMA_1B_DIMS, example.acceptance_per_pos,
                           batch_sizes=batch_sizes, max_k=args.max_k, context_len=1024,
                           device="cuda", dtype="bfloat16", warmup=2, iters=5)
    profile = profile.model_copy(update={"draft_model": example.draft_model,
                                         "cuda_graph_sizes": example.cuda_graph_sizes})
    print(f"profiled on {profile.hardware} in {time.monotonic() - started:.0f} s")
    print("draft ms by batch:", dict(zip(profile.batch_sizes, profile.draft_ms, strict=True)))
    print("verify ms by tokens:", dict(zip(profile.verify_tokens, profile.verify_ms, strict=True)))
    spec_plan = plan(profile, args.slo_tpot_ms, max_k=args.max_k)
    for row in summary_rows(spec_plan):
        print(row)
    print(json.dumps(speculative_config(spec_plan)))
    if args.out:
        profile.to_json(args.out)
        print(f"wrote {args.out}")
    arrivals = load_trace("mooncake")
    for load in (1.0, 4.0, 8.0):
        print(f"SIMULATION, profile {profile.hardware} (torch, random weights): mooncake x{load:g}")
        for r in run_comparison(profile, arrivals, args.slo_tpot_ms, max_k=args.max_k, rate_scale=load):
            print(f"  {r['policy']:<22} attainment={r['slo_attainment']:.3f} goodput={r['goodput_tok_s']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
