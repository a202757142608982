"""`uniscale-lc specserve plan|profile|simulate`: the command-line face of the planner and simulator.

Wire it into the main CLI with `add_subparser(subparsers)` and dispatch with `run(args)`; standalone:
`python -m uniscale_lc.specserve.cli specserve plan PROFILE.json --slo-tpot-ms 40`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import UniScaleError
from .planner import plan, speculative_config, summary_rows
from .profile import EXAMPLE_PROFILE, Profile
from .server_profiler import fit_profile, observe
from .simulate import load_trace, run_comparison

SIMULATION_LABEL = "SIMULATION (goodput/latency model replay; no GPU, no server)"


def add_subparser(subparsers: Any) -> None:
    """Register `specserve` and its subcommands on an argparse subparsers object."""
    parser = subparsers.add_parser("specserve", help="SLO-aware speculative decoding plans for vLLM")
    parser.set_defaults(func=run)
    sub = parser.add_subparsers(dest="specserve_command", required=True)

    p_plan = sub.add_parser("plan", help="print a vLLM --speculative-config for a profile and a TPOT SLO")
    p_plan.add_argument("profile", type=Path, help=f"profile JSON (example: {EXAMPLE_PROFILE})")
    p_plan.add_argument("--slo-tpot-ms", type=float, required=True)
    p_plan.add_argument("--max-k", type=int, default=8)
    p_plan.add_argument("--method", default=None, help="vLLM method; default: the profile's")
    p_plan.add_argument("--draft-model", default=None, help="draft model for the config's `model` key")
    p_plan.add_argument("--adaptive-verification", action="store_true")
    p_plan.add_argument("--max-batch-size", type=int, default=None)

    p_prof = sub.add_parser("profile", help="profile a running server at several concurrency levels")
    p_prof.add_argument("--url", required=True, help="the speculative server, e.g. http://127.0.0.1:8000")
    p_prof.add_argument("--model", required=True, help="served model name")
    p_prof.add_argument("--k", type=int, required=True, help="the server's num_speculative_tokens")
    p_prof.add_argument("--baseline-url", default=None, help="same target without speculation (optional)")
    p_prof.add_argument("--concurrency", default="1,4,16,64", help="comma-separated levels")
    p_prof.add_argument("--requests-per-worker", type=int, default=2)
    p_prof.add_argument("--max-tokens", type=int, default=128)
    p_prof.add_argument("--draft-cost-ratio", type=float, default=0.15)
    p_prof.add_argument("--timeout-s", type=float, default=120.0)
    p_prof.add_argument("--out", type=Path, required=True)

    p_sim = sub.add_parser("simulate", help="replay an arrival trace under each policy (simulation)")
    p_sim.add_argument("--trace", required=True, help="conv, code, mooncake, or a CSV of arrival seconds")
    p_sim.add_argument("--traces-dir", type=Path, default=None, help="default: ../shared/data/traces")
    p_sim.add_argument("--profile", type=Path, default=EXAMPLE_PROFILE)
    p_sim.add_argument("--slo-tpot-ms", type=float, required=True)
    p_sim.add_argument("--max-k", type=int, default=8)
    p_sim.add_argument("--rate-scale", type=float, default=1.0, help="multiply the arrival rate")
    p_sim.add_argument("--seed", type=int, default=0)
    p_sim.add_argument("--json", type=Path, default=None, help="also write the results here")


def _cmd_plan(args: argparse.Namespace) -> int:
    profile = Profile.from_json(args.profile)
    spec_plan = plan(profile, args.slo_tpot_ms, args.max_k, args.max_batch_size)
    config = speculative_config(spec_plan, method=args.method or profile.method, model=args.draft_model,
                                adaptive_verification=args.adaptive_verification)
    label = "SYNTHETIC profile" if profile.synthetic else "measured profile"
    print(f"# {label}: {profile.description}", file=sys.stderr)
    for row in summary_rows(spec_plan):
        print(f"#   batch {row['batch_sizes']:>9}: k={row['k']} tpot={row['tpot_ms']} ms "
              f"goodput={row['goodput_tok_s']} tok/s meets_slo={row['meets_slo']}", file=sys.stderr)
    cap = spec_plan.max_batch_meeting_slo
    print(f"# largest batch meeting {args.slo_tpot_ms} ms TPOT: {cap} (a candidate for --max-num-seqs)",
          file=sys.stderr)
    if config is None:
        print("# speculation never pays for this profile: run without --speculative-config", file=sys.stderr)
        print("null")
    else:
        print(json.dumps(config))
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    kwargs = {"requests_per_worker": args.requests_per_worker, "max_tokens": args.max_tokens,
              "timeout_s": args.timeout_s}
    spec = [observe(args.url, args.model, c, **kwargs) for c in levels]
    base = [observe(args.baseline_url, args.model, c, **kwargs) for c in levels] if args.baseline_url else None
    profile = fit_profile(spec, k=args.k, baseline_observations=base, draft_cost_ratio=args.draft_cost_ratio,
                          target=args.model)
    profile.to_json(args.out)
    print(f"wrote {args.out}: acceptance_per_pos={profile.acceptance_per_pos}")
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    profile = Profile.from_json(args.profile)
    arrivals = load_trace(args.trace, args.traces_dir)
    rows = run_comparison(profile, arrivals, args.slo_tpot_ms, max_k=args.max_k, seed=args.seed,
                          rate_scale=args.rate_scale)
    header = (f"{SIMULATION_LABEL}\ntrace={args.trace} requests={arrivals.size} rate_scale={args.rate_scale} "
              f"slo_tpot_ms={args.slo_tpot_ms} seed={args.seed}\nprofile={args.profile} "
              f"({'SYNTHETIC' if profile.synthetic else 'measured'}: {profile.description})")
    print(header)
    print("| policy | mean TPOT ms | p99 TPOT ms | SLO attainment | throughput tok/s | mean TTFT ms | mean k |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['policy']} | {r['mean_tpot_ms']:.2f} | {r['p99_tpot_ms']:.2f} | {r['slo_attainment']:.3f} "
              f"| {r['throughput_tok_s']:.0f} | {r['mean_ttft_ms']:.0f} | {r['mean_k']:.2f} |")
    if args.json:
        payload = {"label": SIMULATION_LABEL, "trace": args.trace, "rate_scale": args.rate_scale,
                   "slo_tpot_ms": args.slo_tpot_ms, "seed": args.seed, "profile": str(args.profile),
                   "profile_synthetic": profile.synthetic, "profile_provenance": profile.provenance,
                   "results": rows}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch a parsed `specserve` command; errors print one line and return 2."""
    commands = {"plan": _cmd_plan, "profile": _cmd_profile, "simulate": _cmd_simulate}
    try:
        return commands[args.specserve_command](args)
    except (UniScaleError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="uniscale-lc")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
