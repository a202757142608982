"""`uniscale-lc specserve plan|profile|simulate`: the command-line face of the planner and simulator.

Wire it into the main CLI with `add_subparser(subparsers)` and dispatch with `run(args)`; standalone:
`python -m uniscale_lc.specserve.cli specserve plan PROFILE.json --slo-tpot-ms 40`.

`apply PLAN --model M --draft-model D` launches `vllm serve` with the plan (or any `--command`, e.g. the
stand-in), waits for /health, and serves until interrupted (`--check`: stop once healthy; `--dry-run`:
print the command only).
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from ..errors import UniScaleError
from .planner import SpecPlan, plan, speculative_config, summary_rows
from .profile import EXAMPLE_PROFILE, Profile
from .server_profiler import fit_profile, observe
from .simulate import load_trace, run_comparison
from .sweep import check_aims, markdown, run_sweep
from .vllm_rules import VLLM_TARGET

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
    p_plan.add_argument("--draft-model", default=None,
                        help="draft model for the config's `model` key; default: the profile's draft_model")
    p_plan.add_argument("--adaptive-verification", action="store_true",
                        help="vLLM accepts it only with method dspark (see vllm_rules.VLLM_TARGET)")
    p_plan.add_argument("--max-batch-size", type=int, default=None)
    p_plan.add_argument("--slo-quantile", type=float, default=0.9,
                        help="hold the SLO for the request at this quantile of acceptance difficulty")
    p_plan.add_argument("--out", type=Path, default=None, help="also write the plan here (for `apply`)")

    p_apply = sub.add_parser("apply", help="launch vLLM (or --command) with a plan written by `plan --out`")
    p_apply.add_argument("plan", type=Path)
    p_apply.add_argument("--model", required=True, help="target model given to `vllm serve`")
    p_apply.add_argument("--draft-model", default=None, help="draft model; default: the plan's")
    p_apply.add_argument("--method", default=None, help="vLLM speculative method; default: the plan's")
    p_apply.add_argument("--served-model-name", default=None)
    p_apply.add_argument("--host", default="127.0.0.1")
    p_apply.add_argument("--port", type=int, default=8000)
    p_apply.add_argument("--command", default=None,
                         help="argv instead of `vllm serve MODEL --host --port --served-model-name`, with "
                              "{host} {port} {model} {served_model_name} placeholders")
    p_apply.add_argument("--startup-timeout-s", type=float, default=900.0)
    p_apply.add_argument("--log", type=Path, default=None, help="server log file")
    p_apply.add_argument("--check", action="store_true", help="stop as soon as the server is healthy")
    p_apply.add_argument("--dry-run", action="store_true", help="print the command line and exit")
    p_apply.add_argument("--vllm-args", default="", help="further `vllm serve` arguments, one quoted string")

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

    p_sweep = sub.add_parser("sweep", help="every policy on several traces and loads, with the aims check")
    p_sweep.add_argument("--traces", default="conv,code,mooncake", help="comma-separated names or CSV paths")
    p_sweep.add_argument("--traces-dir", type=Path, default=None, help="default: ../shared/data/traces")
    p_sweep.add_argument("--loads", default="1,4,8", help="comma-separated rate scales")
    p_sweep.add_argument("--profile", type=Path, default=EXAMPLE_PROFILE)
    p_sweep.add_argument("--slo-tpot-ms", type=float, required=True)
    p_sweep.add_argument("--max-k", type=int, default=8)
    p_sweep.add_argument("--seed", type=int, default=0)
    p_sweep.add_argument("--adaptive", default="vllm-table+cap,specserve-slo+cap,adaspec-drafting+trim",
                         help="policies checked against the aims")
    p_sweep.add_argument("--json", type=Path, default=None)


def profile_label(path: Path, profile: Profile) -> str:
    """What every simulated table is headed with: SIMULATION and the profile it used."""
    kind = "SYNTHETIC calibrated roofline" if profile.synthetic else "measured"
    return f"SIMULATION, profile {path.name}: {kind}, {profile.hardware}"


def _cmd_plan(args: argparse.Namespace) -> int:
    profile = Profile.from_json(args.profile)
    spec_plan = plan(profile, args.slo_tpot_ms, args.max_k, args.max_batch_size, slo_quantile=args.slo_quantile)
    config = speculative_config(spec_plan, method=args.method, model=args.draft_model,
                                adaptive_verification=args.adaptive_verification)
    label = "SYNTHETIC profile" if profile.synthetic else "measured profile"
    print(f"# {label}: {profile.description}", file=sys.stderr)
    print(f"# config targets {VLLM_TARGET}", file=sys.stderr)
    for row in summary_rows(spec_plan):
        print(f"#   batch {row['batch_sizes']:>9}: k={row['k']} tpot={row['tpot_ms']} ms "
              f"p{round(100 * args.slo_quantile)}-request tpot={row['tail_tpot_ms']} ms "
              f"goodput={row['goodput_tok_s']} tok/s meets_slo={row['meets_slo']}", file=sys.stderr)
    cap = spec_plan.max_batch_meeting_slo
    print(f"# largest batch meeting {args.slo_tpot_ms} ms TPOT: {cap} (`apply` sets it as --max-num-seqs)",
          file=sys.stderr)
    if args.out:
        spec_plan.to_json(args.out)
        print(f"# wrote {args.out}", file=sys.stderr)
    if config is None:
        print("# speculation never pays for this profile: run without --speculative-config", file=sys.stderr)
        print("null")
    else:
        print(json.dumps(config))
    return 0


def _cmd_apply(args: argparse.Namespace) -> int:
    from ..serving.server import VLLMServer, VLLMServerConfig

    spec_plan = SpecPlan.from_json(args.plan)
    extra = shlex.split(args.vllm_args)
    config = VLLMServerConfig(
        model=args.model, served_model_name=args.served_model_name, host=args.host, port=args.port,
        extra_args=tuple(extra), command=tuple(shlex.split(args.command)) if args.command else None,
        startup_timeout_s=args.startup_timeout_s, log_path=args.log,
    )
    server = VLLMServer(config, speculative_plan=spec_plan, draft_model=args.draft_model,
                        speculative_method=args.method)
    print(f"# config targets {VLLM_TARGET}", file=sys.stderr)
    print(shlex.join(server.config.argv()))
    if args.dry_run:
        return 0
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with server:
            print(f"# serving at {server.api_base} (log {server.log_path})", file=sys.stderr, flush=True)
            while not args.check and not stop.is_set() and server.is_running():
                stop.wait(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
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
    print(f"# {profile_label(args.profile, profile)}")
    print("| policy | mean TPOT ms | p99 TPOT ms | SLO attainment | goodput tok/s | throughput tok/s "
          "| mean TTFT ms | mean k |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['policy']} | {r['mean_tpot_ms']:.2f} | {r['p99_tpot_ms']:.2f} | {r['slo_attainment']:.3f} "
              f"| {r['goodput_tok_s']:.0f} | {r['throughput_tok_s']:.0f} | {r['mean_ttft_ms']:.0f} "
              f"| {r['mean_k']:.2f} |")
    if args.json:
        payload = {"label": SIMULATION_LABEL, "trace": args.trace, "rate_scale": args.rate_scale,
                   "slo_tpot_ms": args.slo_tpot_ms, "seed": args.seed, "profile": str(args.profile),
                   "profile_synthetic": profile.synthetic, "profile_provenance": profile.provenance,
                   "results": rows}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else "n/a"


def _cmd_sweep(args: argparse.Namespace) -> int:
    profile = Profile.from_json(args.profile)
    loads = [float(x) for x in args.loads.split(",") if x.strip()]
    traces = [x for x in args.traces.split(",") if x.strip()]
    cells = run_sweep(profile, args.slo_tpot_ms, traces, loads, traces_dir=args.traces_dir, max_k=args.max_k,
                      seed=args.seed)
    label = profile_label(args.profile, profile)
    print(f"{SIMULATION_LABEL}; {label}; slo_tpot_ms={args.slo_tpot_ms} seed={args.seed}\n")
    print(markdown(cells, label))
    aims = [a for name in args.adaptive.split(",") for a in check_aims(cells, name, max(loads))]
    print("| policy | trace | load | attainment >= best static | goodput / best static (>= 1.1 at top load) "
          "| static-k3+cap attainment |")
    print("|---|---|---|---|---|---|")
    for a in aims:
        met = "n/a" if a["goodput_met"] is None else ("met" if a["goodput_met"] else "MISSED")
        print(f"| {a['policy']} | {a['trace']} | x{a['rate_scale']:g} | "
              f"{'met' if a['attainment_met'] else 'MISSED'} ({a['attainment']:.3f} vs "
              f"{a['best_static_attainment']:.3f}) | {a['goodput_ratio']:.2f} {met} | "
              f"{_fmt(a['static_k3_cap_attainment'])} |")
    if args.json:
        payload = {"label": label, "slo_tpot_ms": args.slo_tpot_ms, "seed": args.seed,
                   "profile": str(args.profile), "profile_synthetic": profile.synthetic,
                   "profile_provenance": profile.provenance, "aims": aims,
                   "cells": [{"trace": c.trace, "rate_scale": c.rate_scale, "requests": c.requests,
                              "results": c.rows} for c in cells]}
        args.json.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return 0


def run(args: argparse.Namespace) -> int:
    """Dispatch a parsed `specserve` command; errors print one line and return 2."""
    commands = {"plan": _cmd_plan, "apply": _cmd_apply, "profile": _cmd_profile, "simulate": _cmd_simulate,
                "sweep": _cmd_sweep}
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
