"""Plan speculative decoding for a local vLLM server, launch it, and watch its load for the router.

Without a GPU (or without vLLM) run it with `--standin`: the same code drives the CPU stand-in server.

    python examples/vllm_specserve.py --standin
    python examples/vllm_specserve.py --model meta-llama/Llama-3.1-8B-Instruct \
        --draft meta-llama/Llama-3.2-1B-Instruct --gpu-usd-per-hour 2.0
"""

from __future__ import annotations

import argparse
import sys
import time

from uniscale_lc.serving import LoadSignals, ServerMonitor, VLLMServer, VLLMServerConfig, free_port, slo_gate
from uniscale_lc.specserve import example_profile, plan
from uniscale_lc.specserve.vllm_rules import VLLM_TARGET


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--standin", action="store_true", help="use the CPU stand-in instead of vllm serve")
    parser.add_argument("--model", default="meta-llama/Llama-3.1-8B-Instruct")
    parser.add_argument("--draft", default="meta-llama/Llama-3.2-1B-Instruct")
    parser.add_argument("--gpu-usd-per-hour", type=float, default=2.0)
    parser.add_argument("--slo-tpot-ms", type=float, default=40.0)
    args = parser.parse_args()

    # 1. Plan k per batch size from a profile (here the shipped SYNTHETIC, calibrated A100 example).
    spec_plan = plan(example_profile(), args.slo_tpot_ms, max_k=6)

    # 2. Launch the server with it (or the stand-in, which checks the config as vLLM does), always stopped
    #    by the context manager. The plan also sets --max-num-seqs to the largest batch meeting the SLO.
    command = None
    if args.standin:
        command = (sys.executable, "-m", "uniscale_lc.testing.vllm_standin", "--host", "{host}",
                   "--port", "{port}", "--model-name", "{served_model_name}")
    config = VLLMServerConfig(model=args.model, served_model_name="local", port=free_port(), command=command,
                              gpu_usd_per_hour=args.gpu_usd_per_hour)
    server = VLLMServer(config, speculative_plan=spec_plan, draft_model=args.draft)
    print(f"speculative config (targets {VLLM_TARGET}):", server.config.speculative_config)
    print("extra args:", server.config.extra_args)
    with server:
        spec = server.model_spec()
        print("route to:", spec.model, spec.api_base)
        # 3. Watch its load; the router reads features and gates arms by predicted TPOT.
        with ServerMonitor(server.api_base, interval_s=0.5) as monitor:
            time.sleep(1.2)
            signals = LoadSignals({spec.api_base or "": monitor})
            print("context features:", signals.context_features())
            arms = {"local|single": spec.api_base, "gpt-4o-mini|single": None}
            allowed, gated = slo_gate(arms, signals.predicted_tpot_by_api_base(), args.slo_tpot_ms)
            print("allowed:", allowed, "gated:", gated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
