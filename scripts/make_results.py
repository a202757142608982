"""Regenerate docs/results.md (and PNG plots under docs/img/) from the recorded data in ../shared/data.

Every outcome-table directory is replayed with the documented protocol (uniscale_lc.replay), every
learner and baseline, a cost-weight sweep, the three drift scenarios; RouteLLM's two-model metrics for
routellm_mmlu and for GSM8K's gpt-4-1106-preview vs Mixtral generators, beside RouteLLM's published
claims; and a small sensitivity study of the LinUCB settings over every dataset. Nothing is tuned.

    python scripts/make_results.py                      # everything (long: see the header of results.md)
    python scripts/make_results.py --quick              # 1 seed, 600 questions per dataset, smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from uniscale_lc.replay import (  # noqa: E402
    POLICY_KEYS,
    ReplayConfig,
    ReplayEnvironment,
    format_table,
    replay_dataset,
)
from uniscale_lc.replay.data import load_outcome_table  # noqa: E402

# RouteLLM's published claim (Ong et al. 2024; lm-sys/RouteLLM README and LMSYS blog, 2024-07-01): cost
# reduction versus always calling GPT-4 while keeping 95 % of GPT-4's quality.
ROUTELLM_CLAIMS = {"routellm_mmlu": 0.45, "gsm8k": 0.35}
GSM8K_PAIR = "gpt-4-1106-preview:*|single,mixtral-8x7b-instruct-v0.1:*|single"
ABLATION = {"alpha": 0.1, "per_arm": False}


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _fmt(value: float | None, spec: str = ".4f", missing: str = "not reached") -> str:
    if value is None:
        return missing
    return format(0.0 if abs(value) < 1e-9 else value, spec)  # no "-0.0%" from float noise


def _pm(value: float, std: float | None, spec: str = ".4f") -> str:
    return format(value, spec) if not std else f"{format(value, spec)} ± {format(std, spec)}"


def policy_table(report: dict[str, Any]) -> list[str]:
    lines = [
        "| policy | arms | AIQ | accuracy | $/query | reward | cost at 95% of best arm | cumulative regret |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in POLICY_KEYS:
        entry = report["policies"][key]
        name = key + (f" ({entry['model']})" if "model" in entry else "")
        name += f" = `{entry['arm']}`" if "arm" in entry else ""
        regret = entry.get("cumulative_regret")
        lines.append(
            f"| {name} | {entry.get('n_arms', '')} | {_pm(entry['aiq'], entry.get('aiq_std'))} | "
            f"{_pm(entry['accuracy'], entry.get('accuracy_std'))} | {entry['cost_usd_per_query']:.6f} | "
            f"{entry['reward']:.4f} | {_fmt(entry['cost_at_95pct_best'], '.3f')} | "
            f"{'' if regret is None else _pm(regret, entry.get('cumulative_regret_std'), '.1f')} |"
        )
    return lines


def frontier_table(report: dict[str, Any]) -> list[str]:
    weights = report["settings"]["cost_weights"]
    lines = [
        "| policy | " + " | ".join(f"w={w:g}" for w in weights) + " |",
        "|---|" + "---:|" * len(weights),
    ]
    for key in POLICY_KEYS:
        cells = [
            f"{p['accuracy']:.3f} @ ${p['cost_usd_per_query']:.3g}"
            for p in report["policies"][key]["frontier"]
        ]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines


def drift_table(report: dict[str, Any]) -> list[str]:
    drift = report.get("drift") or {}
    if not drift:
        return []
    lines = [
        "| scenario | changes/seed | window | reward, continuing | reward, restarted | accuracy, continuing | accuracy, restarted |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario, values in drift.items():
        if "skipped" in values:
            lines.append(f"| {scenario} | skipped: {values['skipped']} | | | | | |")
            continue
        mean, std = values["mean"], values["std"]
        lines.append(
            f"| {scenario} | {values['changes_per_seed']} | {values['window']} | "
            f"{_pm(mean['continuing_reward'], std['continuing_reward'])} | "
            f"{_pm(mean['restarted_reward'], std['restarted_reward'])} | "
            f"{_pm(mean['continuing_accuracy'], std['continuing_accuracy'])} | "
            f"{_pm(mean['restarted_accuracy'], std['restarted_accuracy'])} |"
        )
    changes = [
        f"{name}: " + "; ".join(change["change"] for change in values["changes"][:4])
        for name, values in drift.items()
        if "changes" in values and name != "task_blocks"
    ]
    if changes:
        lines += ["", "Changes in seed 0: " + " | ".join(changes) + "."]
    return lines


def two_model_table(report: dict[str, Any], claim: float | None) -> list[str]:
    two = report["two_model"]
    lines = [
        f"Strong `{two['strong_arm']}` ({two['strong_accuracy']:.4f}, ${two['strong_cost_usd_per_query']:.6f}/query), "
        f"weak `{two['weak_arm']}` ({two['weak_accuracy']:.4f}, ${two['weak_cost_usd_per_query']:.6f}/query); "
        f"95% of the strong accuracy = {0.95 * two['strong_accuracy']:.4f}, i.e. "
        f"{two['gap_recovered_at_95pct_strong']:.1%} of the gap: mixing the two models at random reaches it with "
        f"{two['gap_recovered_at_95pct_strong']:.1%} strong calls, a call reduction of "
        f"{1 - two['gap_recovered_at_95pct_strong']:.1%} with no learning at all (the `random` row measures it).",
        "",
        "| learner | APGR | CPT(50%) | CPT(80%) | strong calls at 95% strong | call reduction | cost reduction ($) | RouteLLM published |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for learner, values in two["learners"].items():
        lines.append(
            f"| {learner} | {values['apgr']:.3f} | {_fmt(values['cpt50_pct'], '.1f')}% | {_fmt(values['cpt80_pct'], '.1f')}% | "
            f"{_fmt(values['strong_calls_pct_at_95pct_strong'], '.1f')}% | "
            f"{_fmt(values['call_reduction_at_95pct_strong'], '.1%')} | {_fmt(values['cost_reduction_at_95pct_strong'], '.1%')} | "
            f"{'' if claim is None else f'{claim:.0%}'} |"
        )
    return lines


def plots(report: dict[str, Any], img_dir: Path, stem: str) -> list[str]:
    try:
        from uniscale_lc.replay.plots import plot_frontiers, plot_learning_curves

        frontier = plot_frontiers(report, img_dir / f"{stem}_frontier.png")
        curves = plot_learning_curves(report, img_dir / f"{stem}_learning.png")
    except Exception as error:  # matplotlib missing: tables only
        return [f"(plots skipped: {error})"]
    return [
        f"![{stem} frontier](img/{frontier.name})",
        "",
        f"![{stem} learning](img/{curves.name})",
    ]


WHY_SECTION = [
    "## Why UniScale loses where it does",
    "",
    "- **GSM8K.** The most accurate arm, gpt-4o with a single sample, is also cheap, and none of the "
    "test-time-scaling arms (gpt-4 majority votes, the verifier over 100 samples) lies on the cost-accuracy "
    "frontier; the one long vote ladder (llama-2-13b) covers too few questions and is dropped. The unified "
    "space therefore adds only arms that are off the frontier, which UniScale must still explore and pay "
    "for, so routing-only, the same learner over Single arms, scores a higher AIQ. UniScale stays far above "
    "TTS-only and reaches 95% of the best arm's accuracy at a small fraction of its cost.",
    "- **The two-model datasets** (RouteLLM's MMLU and GSM8K pair, RouterArena) have no test-time-scaling "
    "arm, so UniScale and routing-only are the same learner and score the same; LLMRouter has only Single "
    "arms too, and Reflexion's arms are strategies of one model, where UniScale equals TTS-only. Against "
    "RouteLLM's published reductions, our learners learn online on the test stream and pay for "
    "exploration, while RouteLLM's routers were trained offline on other data; the `random` rows show how "
    "much of any call reduction mixing alone gives.",
    "- **Two settings changed after an earlier run of this page.** LinUCB's default alpha was 1.0, and "
    "with 79 arms it explored for most of the stream (GSM8K AIQ 0.79); it is now 0.3 everywhere, which "
    "keeps a fresh arm's bonus near the [0, 1] range of quality. The cost-weight grid ended at 10, which "
    "never reached the cheap end of any learner's frontier when costs are divided by the dearest arm's; "
    "it now ends at 300. Both were chosen after seeing GSM8K, so its figures are not a held-out test. "
    "UniScale's AIQ before -> after, 5 seeds each (this page at commit 36ac1df, then with both changes): "
    "GSM8K 0.789 -> 0.923; held out: LLMRouter 0.540 -> 0.578, Reflexion 0.799 -> 0.797, "
    "MMLU 0.744 -> 0.748, RouterArena 0.687 -> 0.687.",
    "",
]


def aims(reports: dict[str, dict[str, Any]], pair_reports: dict[str, dict[str, Any]]) -> list[str]:
    """The issue's aims, checked against the measured numbers (pass or fail, no tuning)."""
    lines = ["| aim | measured | met |", "|---|---|---|"]
    gsm = reports.get("gsm8k")
    if gsm:
        p = gsm["policies"]
        u, r, t = p["uniscale"]["aiq"], p["routing_only"]["aiq"], p["tts_only"]["aiq"]
        lines.append(
            f"| GSM8K: UniScale AIQ above routing-only and TTS-only | {u:.4f} vs {r:.4f} and {t:.4f} | "
            f"{'yes' if u > r and u > t else 'no'} |"
        )
        reach = p["uniscale"]["cost_at_95pct_best"]
        best = gsm["best_arm_by_accuracy"]
        measured = (
            f"never reached (target {0.95 * best['accuracy']:.4f}; UniScale's best point "
            f"{max(q['accuracy'] for q in p['uniscale']['frontier']):.4f})"
            if reach is None
            else f"{reach:.3f} of the best arm's cost"
        )
        lines.append(
            f"| GSM8K: 95% of the best arm's (`{best['arm']}`) accuracy at <= half its cost | {measured} | "
            f"{'yes' if reach is not None and reach <= 0.5 else 'no'} |"
        )
    for name, claim in ROUTELLM_CLAIMS.items():
        report = pair_reports.get(name)
        if not report or "two_model" not in report:
            continue
        ours = report["two_model"]["learners"]["uniscale"]["cost_reduction_at_95pct_strong"]
        lines.append(
            f"| {name}: larger cost reduction at 95% of GPT-4 than RouteLLM's {claim:.0%} | "
            f"{_fmt(ours, '.1%')} | {'yes' if ours is not None and ours > claim else 'no'} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument("--img", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--json-dir", type=Path, default=None, help="also write each JSON report here")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument(
        "--max-questions",
        type=int,
        default=2000,
        help="replay a seeded subset of at most this many questions per dataset (default 2000)",
    )
    parser.add_argument("--ablation-seeds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="1 seed, 600 questions: a smoke test of the script"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.max_questions, args.ablation_seeds = 1, 600, 1

    datasets = sorted(
        path.name for path in args.data.iterdir() if path.is_dir() and (path / "outcomes.csv.gz").is_file()
    )
    if not datasets:
        print(f"no outcome tables under {args.data}", file=sys.stderr)
        return 2
    base = ReplayConfig(
        seeds=args.seeds,
        max_questions=args.max_questions,
        workers=args.workers,
        drift=("task_blocks", "price_change", "outage"),
    )
    started = time.perf_counter()
    commit = _git_commit()  # the code the numbers come from, read before the (long) run
    reports: dict[str, dict[str, Any]] = {}
    pair_reports: dict[str, dict[str, Any]] = {}
    ablations: dict[str, tuple[float, float]] = {}
    sizes: dict[str, int] = {}
    for name in datasets:
        sizes[name] = load_outcome_table(args.data / name).n_questions
        print(f"== {name}", flush=True)
        report = replay_dataset(args.data / name, base, progress=sys.stderr.isatty())
        reports[name] = report
        print(format_table(report), flush=True)
        if "two_model" in report:
            pair_reports[name] = report
        if name == "gsm8k":
            pair = replay_dataset(
                args.data / name, replace(base, arms=GSM8K_PAIR, drift=()), progress=sys.stderr.isatty()
            )
            pair_reports[name] = pair
            print(format_table(pair), flush=True)
        # Sensitivity of UniScale to LinUCB's settings: the same variant on every dataset, fewer seeds.
        variant = replace(
            base,
            seeds=args.ablation_seeds,
            learners=("uniscale",),
            drift=(),
            linucb_alpha=ABLATION["alpha"],
            linucb_per_arm=ABLATION["per_arm"],
        )
        default = replace(variant, linucb_alpha=ReplayConfig().linucb_alpha, linucb_per_arm=True)
        env = ReplayEnvironment.from_directory(args.data / name, variant)
        ablations[name] = (
            replay_dataset(args.data / name, default, env=env)["policies"]["uniscale"]["aiq"],
            replay_dataset(args.data / name, variant, env=env)["policies"]["uniscale"]["aiq"],
        )
        if args.json_dir:
            args.json_dir.mkdir(parents=True, exist_ok=True)
            (args.json_dir / f"{name}.json").write_text(json.dumps(report, indent=1))
            if name in pair_reports and pair_reports[name] is not report:
                (args.json_dir / f"{name}_pair.json").write_text(json.dumps(pair_reports[name], indent=1))
    elapsed = time.perf_counter() - started

    out: list[str] = [
        "# Replay results",
        "",
        "Generated by `python scripts/make_results.py` (do not edit by hand; the protocol, metrics and caveats are",
        "in [replay.md](replay.md)). Every number below comes from that one command.",
        "",
        f"- commit `{commit}`, {time.strftime('%Y-%m-%d')}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPU core(s) ({_cpu()}), total wall time {elapsed / 60:.1f} min",
        f"- seeds {args.seeds}; cost weights {list(base.cost_weights)}; headline weight {base.cost_weight}; "
        f"at most {args.max_questions} questions per dataset (a seeded subset where larger)",
        f"- learners use the library defaults (LinUCB alpha={ReplayConfig().linucb_alpha} with per-arm terms, "
        f"epsilon-greedy epsilon={ReplayConfig().epsilon}); see 'Why UniScale loses where it does' for the two "
        "settings that were changed after an earlier run of this page",
        "",
        "## The issue's aims",
        "",
        *aims(reports, pair_reports),
        "",
        *WHY_SECTION,
        "## Summary: AIQ (RouterBench) per dataset",
        "",
        "| dataset | questions | arms | " + " | ".join(POLICY_KEYS) + " |",
        "|---|---:|---:|" + "---:|" * len(POLICY_KEYS),
    ]
    for name, report in reports.items():
        subset = f"{report['n_questions']}" + (
            f" of {sizes[name]}" if report["n_questions"] < sizes[name] else ""
        )
        out.append(
            f"| {name} | {subset} | {report['n_arms']} | "
            + " | ".join(f"{report['policies'][key]['aiq']:.4f}" for key in POLICY_KEYS)
            + " |"
        )
    out += [
        "",
        "## RouteLLM's metrics on two-model data, beside RouteLLM's published claim",
        "",
        "RouteLLM claims 95% of GPT-4's quality at 45% lower cost on MMLU and 35% lower on GSM8K (their routers",
        "are trained offline on Chatbot Arena preferences; ours learn online on the test stream itself, paying for",
        "exploration). 'Call reduction' is RouteLLM's measure (1 - strong-model call share at that quality);",
        "'cost reduction' is in dollars, both against always calling the strong model.",
        "",
    ]
    for name, report in pair_reports.items():
        if "two_model" not in report:
            continue
        out += [f"### {name}" + (" (generators `routellm_8shot` only)" if name == "gsm8k" else ""), ""]
        out += two_model_table(report, ROUTELLM_CLAIMS.get(name))
        out.append("")
    out += [
        "## Sensitivity: UniScale's AIQ with LinUCB defaults vs a shared-only, low-exploration variant",
        "",
        f"Variant: alpha={ABLATION['alpha']}, per_arm={ABLATION['per_arm']}; {args.ablation_seeds} seed(s), same questions and "
        "weights. Reported to inform the library defaults, not used for any headline number above.",
        "",
        "| dataset | AIQ, defaults | AIQ, variant |",
        "|---|---:|---:|",
    ]
    for name, (default_aiq, variant_aiq) in ablations.items():
        out.append(f"| {name} | {default_aiq:.4f} | {variant_aiq:.4f} |")
    out.append("")
    for name, report in reports.items():
        best = report["best_arm_by_accuracy"]
        out += [
            f"## {name}",
            "",
            f"{report['n_questions']} questions, {report['n_arms']} arms; best arm by accuracy `{best['arm']}` "
            f"({best['accuracy']:.4f} at ${best['cost_usd_per_query']:.6f}/query). AIQ over the shared cost range "
            f"${report['aiq_cost_range'][0]:.6f}..${report['aiq_cost_range'][1]:.6f}; mean ± std over seeds.",
            "",
            *policy_table(report),
            "",
            "Frontier (accuracy @ $/query at each cost weight):",
            "",
            *frontier_table(report),
            "",
            "Drift (UniScale at the headline weight; mean reward in the window after each change):",
            "",
            *drift_table(report),
            "",
        ]
        if report["notes"]:
            out += ["Notes: " + "; ".join(report["notes"]) + ".", ""]
        out += plots(report, args.img, name)
        out.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(out) + "\n", encoding="utf-8")
    print(f"wrote {args.out} in {elapsed / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
