"""Regenerate docs/results.md (and PNG plots under docs/img/) from the recorded data in ../shared/data.

Every outcome-table directory is replayed with the documented protocol (uniscale_lc.replay), every
learner and baseline (the warm-started learner and the offline router included), a cost-weight sweep, the
three drift scenarios; RouteLLM's two-model metrics for routellm_mmlu (also on all 14,042 questions) and
for GSM8K's gpt-4-1106-preview vs Mixtral generators, beside RouteLLM's published claims; issue 9's aims
(the demo's included); and the before/after of every setting changed after looking at the data.

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
from uniscale_lc.replay.arm_pool import POOL_TABLE_HEADER, compare_with_pool, pool_table_row  # noqa: E402
from uniscale_lc.replay.data import load_outcome_table  # noqa: E402
from uniscale_lc.replay.task_bound import task_router_bounds  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_notes import WHY_SECTION  # noqa: E402

# RouteLLM's published claim (Ong et al. 2024; lm-sys/RouteLLM README and LMSYS blog, 2024-07-01): cost
# reduction versus always calling GPT-4 while keeping 95 % of GPT-4's quality.
ROUTELLM_CLAIMS = {"routellm_mmlu": 0.45, "gsm8k": 0.35}
GSM8K_PAIR = "gpt-4-1106-preview:*|single,mixtral-8x7b-instruct-v0.1:*|single"
# Variants of the library defaults, each replayed on every dataset beside the defaults. `before` is the
# library as it was before this round (context weights shrunk like arm means; no side observations).
VARIANTS: dict[str, dict[str, Any]] = {
    "before: context_ridge = arm_ridge = ridge": {"linucb_context_ridge": 1.0, "linucb_arm_ridge": 1.0},
    "arm_ridge = ridge": {"linucb_arm_ridge": 1.0},
    "side observations on": {"side_observations": True},
    "alpha 0.15": {"linucb_alpha": 0.15},
    "cost reference: geometric mean": {"cost_reference": "geomean"},
    # Not a default (the live default is no tags): what an application that passes each request's task gains.
    "task tags (64 buckets)": {"tag_buckets": 64},
}
MMLU_TAG_BUCKETS = 64
MMLU = "routellm_mmlu"
MMLU_LEARNERS = ("uniscale", "uniscale_warm", "offline_router", "full_info_router", "random")


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
        entry = report["policies"].get(key)
        if entry is None:
            continue
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
        if key not in report["policies"]:
            continue
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


POOL_TOP_K = 3  # the most accurate arms added to the fixed-arm frontier in the 'Arms that matter' section


def pool_section(pools: dict[str, dict[str, Any]], seeds: int) -> list[str]:
    """UniScale on every arm against UniScale on the arms that matter in hindsight (replay/arm_pool.py)."""
    lines = [
        "## Arms that matter: what the size of the action space costs UniScale",
        "",
        f"The pool is every arm that is the best fixed arm at some cost weight, plus the {POOL_TOP_K} most accurate, "
        "chosen in hindsight on the whole stream: a peek no deployment has, so it bounds what a smaller action "
        f"space could buy. UniScale with the defaults on each, the same {seeds} seed(s) and question orders; every "
        "AIQ on one cost range. Datasets with two arms are left out (the pool is the whole space).",
        "",
        *POOL_TABLE_HEADER,
    ]
    lines += [pool_table_row(name, pool) for name, pool in pools.items()]
    lines += ["", *(f"- {name}'s pool: " + ", ".join(f"`{arm}`" for arm in pool["pool"]) for name, pool in pools.items())]
    return lines


def _aim_row(aim: str, measured: str, met: bool) -> str:
    return f"| {aim} | {measured} | {'yes' if met else 'no'} |"


def _full_information_context(policies: dict[str, Any]) -> str:
    """Aim 1's bar beside learners that see every arm's outcome after each question (no exploration)."""
    present = [key for key in ("full_info_leader", "full_info_router") if key in policies]
    if not present:
        return ""
    values = ", ".join(
        f"{'follow-the-leader' if key == 'full_info_leader' else 'per-arm ridge'} {policies[key]['aiq']:.4f}"
        for key in present
    )
    return f"; online with every arm's outcome after each question (no exploration): {values}"


def aims(
    reports: dict[str, dict[str, Any]],
    mmlu_full: dict[str, Any] | None,
    demo: dict[str, Any] | None,
    mmlu_tagged: dict[str, Any] | None = None,
    mmlu_bound: dict[str, float | None] | None = None,
) -> list[str]:
    """Issue 9's aims, checked against the measured numbers (pass or fail, no tuning).

    `mmlu_tagged`: the full MMLU run with each question's subject as a request tag, reported beside aim 3
    as what an application that passes tags gets (not the default, so it does not decide the aim).
    `mmlu_bound`: the per-subject router's cost reductions (`replay.task_bound`), printed beside aim 3."""
    lines = ["| aim | measured | met |", "|---|---|---|"]
    for name, report in reports.items():
        p = report["policies"]
        u, fixed = p["uniscale"]["aiq"], p["best_fixed_arm"]["aiq"]
        # The spread over seeds (question orders) says how much a "met" or "not met" could be noise.
        text = f"{_pm(u, p['uniscale'].get('aiq_std'))} vs best fixed {fixed:.4f}"
        met = u >= fixed
        has_tts = any(arm["kind"] != "single" for arm in report["fixed_arms"])
        if has_tts:
            r, t = p["routing_only"]["aiq"], p["tts_only"]["aiq"]
            text += f", routing-only {r:.4f}, TTS-only {t:.4f}"
            met = met and u > r
            if p["tts_only"].get("n_arms") == p["uniscale"].get("n_arms"):
                # One model only: TTS-only chooses from the very arms UniScale does, so "UniScale > TTS-only"
                # compares a learner with itself; the aim's TTS half does not apply to this dataset.
                text += " (TTS-only has all of UniScale's arms: one model, so that comparison does not apply)"
            else:
                met = met and u > t
        text += _full_information_context(p)
        lines.append(
            _aim_row(
                f"1. {name}: UniScale AIQ >= best fixed arm" + (" and > routing, TTS" if has_tts else ""),
                text,
                met,
            )
        )
    for name, report in reports.items():
        p = report["policies"]
        if "uniscale_warm" not in p:
            continue
        w, o, f = p["uniscale_warm"]["aiq"], p["offline_router"]["aiq"], p["best_fixed_arm_heldout"]["aiq"]
        chosen = p.get("best_fixed_arm_labelled", {}).get("aiq")
        # The arm a user would deploy from the same labelled part: context for the row, not the aim's bar.
        labelled = "" if chosen is None else f" (the arm best on the labelled 30%: {chosen:.4f})"
        lines.append(
            _aim_row(
                f"2. {name}: uniscale_warm >= best fixed (held out), within 2% of offline_router",
                f"{_pm(w, p['uniscale_warm'].get('aiq_std'))} vs {f:.4f} and {o:.4f}{labelled}",
                w >= f and w >= 0.98 * o,
            )
        )
    if mmlu_full is not None and "two_model" in mmlu_full:
        learners = mmlu_full["two_model"]["learners"]
        for learner, target in (("uniscale", 0.45), ("uniscale_warm", 0.60)):
            ours = learners.get(learner, {}).get("cost_reduction_at_95pct_strong")
            reference = ""
            if mmlu_bound is not None:
                reference = (
                    f"; a per-subject router: {_fmt(mmlu_bound['task_router_hindsight'], '.1%')} in hindsight, "
                    f"{_fmt(mmlu_bound['task_router_heldout'], '.1%')} ranked on the labelled 30% and scored on the rest"
                )
            full_info = learners.get("full_info_router", {}).get("cost_reduction_at_95pct_strong")
            if full_info is not None:
                reference += f"; online with full information, the per-arm ridge router: {_fmt(full_info, '.1%')}"
            lines.append(
                _aim_row(
                    f"3. MMLU, {mmlu_full['n_questions']} questions: {learner} cost reduction at 95% of GPT-4 > {target:.0%}",
                    _fmt(ours, ".1%")
                    + f" (random: {_fmt(learners['random']['cost_reduction_at_95pct_strong'], '.1%')}{reference})",
                    ours is not None and ours > target,
                )
            )
            tagged = (mmlu_tagged or {}).get("two_model", {}).get("learners", {}).get(learner, {})
            if tagged:
                value = tagged.get("cost_reduction_at_95pct_strong")
                lines.append(
                    _aim_row(
                        f"3'. the same, the subject passed as a request tag (`tag_buckets={MMLU_TAG_BUCKETS}`, "
                        "opt-in)",
                        _fmt(value, ".1%"),
                        value is not None and value > target,
                    )
                )
    if demo is not None:
        u, best = demo["uniscale"], demo["best"]
        lines.append(
            _aim_row(
                "4. `make demo` (600 requests, seed 0), last half: within 1 point of the best fixed arm at no more cost, or a better reward",
                f"UniScale {100 * u['last_half_accuracy']:.1f}% at {1000 * u['last_half_cost_per_request_usd']:.3f} "
                f"USD/1k vs `{best['name']}` {100 * best['last_half_accuracy']:.1f}% at "
                f"{1000 * best['last_half_cost_per_request_usd']:.3f}; dominated by: "
                + (", ".join(demo["dominating_arms"]) or "none"),
                bool(demo["within_a_point_of_best_fixed"]),
            )
        )
    for name, report in reports.items():
        share = report["policies"]["uniscale"].get("best_arm_share_last_quarter_w0")
        margin = report["most_accurate_arm"]["margin"]
        if share is None or margin is None or margin < 0.02:
            continue  # only where one arm is best by a clear margin (2 points)
        best = report["most_accurate_arm"]
        measured = f"{share:.1%}"
        task_share = report["policies"]["uniscale"].get("task_best_arm_share_last_quarter_w0")
        if best.get("n_tasks", 1) > 1 and task_share is not None:
            # Context tells tasks apart: say where converging to one arm is not the right answer.
            measured += (
                f"; that arm is its task's most accurate on {best['task_best_share']:.0%} of the questions "
                f"({best['n_tasks']} tasks; each task on its own best arm, in hindsight: "
                f"{best['per_task_best_accuracy']:.3f} vs {best['accuracy']:.3f}); share on each question's "
                f"task-best arm {task_share:.1%}"
            )
        own = report["policies"]["uniscale"].get("last_quarter_accuracy_w0")
        arm_own = report["policies"]["uniscale"].get("most_accurate_arm_last_quarter_accuracy_w0")
        if own is not None and arm_own is not None:
            # Spreading picks pays only if the learner beats that arm on the same questions.
            measured += f"; last-quarter accuracy {own:.3f} vs that arm's {arm_own:.3f} on the same questions"
        router = report["policies"].get("full_info_router", {})
        if router.get("best_arm_share_last_quarter_w0") is not None:
            # The same model class shown every arm's outcome: what the features route without exploring.
            measured += (
                f"; with full information, the per-arm ridge router: {router['best_arm_share_last_quarter_w0']:.1%}, "
                f"last-quarter accuracy {router['last_quarter_accuracy_w0']:.3f}"
            )
        lines.append(
            _aim_row(
                f"5. {name}: cost_weight 0, last-quarter share of the most accurate arm (`{best['arm']}`, "
                f"+{margin:.3f}) >= 90%",
                measured,
                share >= 0.9,
            )
        )
    return lines


def ahead_table(reports: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| dataset | UniScale: requests until its cumulative reward stays ahead of the best fixed arm's (per seed) | "
        "last-quarter share of the most accurate arm at cost weight 0 |",
        "|---|---|---:|",
    ]
    for name, report in reports.items():
        entry = report["policies"]["uniscale"]
        per_seed = entry.get("requests_until_ahead_of_best_fixed") or []
        cells = ", ".join("never" if value is None else str(value) for value in per_seed)
        share = entry.get("best_arm_share_last_quarter_w0")
        lines.append(
            f"| {name} | {cells} of {report['n_questions']} | {'' if share is None else f'{share:.1%}'} |"
        )
    return lines


def _demo_figures() -> dict[str, Any]:
    """`make demo`'s run (600 requests, seed 0) as plain data, with the best fixed arm's figures."""
    from uniscale_lc.demo.run import run_demo

    report = run_demo(show_progress=False).to_dict()
    report["best"] = next(
        arm for arm in report["fixed_arms"] if arm["name"] == report["best_fixed_arm_last_half"]
    )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results.md")
    parser.add_argument("--img", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--json-dir", type=Path, default=None, help="also write each JSON report here")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--max-questions",
        type=int,
        default=2000,
        help="replay a seeded subset of at most this many questions per dataset (default 2000)",
    )
    parser.add_argument("--variant-seeds", type=int, default=2, help="seeds of the 'Variants' table")
    parser.add_argument("--mmlu-seeds", type=int, default=2, help="seeds of the full-MMLU run (0: skip it)")
    parser.add_argument("--no-drift", action="store_true", help="skip the drift scenarios")
    parser.add_argument("--no-demo", action="store_true", help="skip the demo run (aim 4)")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="1 seed, 600 questions: a smoke test of the script"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.max_questions, args.variant_seeds, args.mmlu_seeds = 1, 600, 1, 0
        args.no_demo = True

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
        drift=() if args.no_drift else ("task_blocks", "price_change", "outage"),
    )
    started = time.perf_counter()
    commit = _git_commit()  # the code the numbers come from, read before the (long) run
    reports: dict[str, dict[str, Any]] = {}
    pair_reports: dict[str, dict[str, Any]] = {}
    variants: dict[str, dict[str, float]] = {}
    pools: dict[str, dict[str, Any]] = {}
    sizes: dict[str, int] = {}
    for name in datasets:
        sizes[name] = load_outcome_table(args.data / name).n_questions
        print(f"== {name}", flush=True)
        report = replay_dataset(args.data / name, base, progress=True)
        reports[name] = report
        print(format_table(report), flush=True)
        if "two_model" in report:
            pair_reports[name] = report
        if name == "gsm8k":
            pair = replay_dataset(args.data / name, replace(base, arms=GSM8K_PAIR, drift=()), progress=True)
            pair_reports[name] = pair
            print(format_table(pair), flush=True)
        # Before/after of each setting changed (or tried) after looking at data: same questions, fewer seeds.
        default = replace(base, seeds=args.variant_seeds, learners=("uniscale",), drift=())
        env = ReplayEnvironment.from_directory(args.data / name, default)
        variants[name] = {"defaults": replay_dataset(None, default, env=env)["policies"]["uniscale"]["aiq"]}
        for label, change in VARIANTS.items():
            config = replace(default, **change)
            # Tags are context features, so that variant needs its own environment (the others share one).
            variant_env = env if config.tag_buckets == default.tag_buckets else None
            source = None if variant_env is not None else args.data / name
            variants[name][label] = replay_dataset(source, config, env=variant_env)["policies"]["uniscale"][
                "aiq"
            ]
        print(f"variants {name}: {variants[name]}", flush=True)
        if report["n_arms"] > 2:  # with two arms the pool is the whole space
            # The variants' environment: the same questions and features (it does not depend on the seeds).
            pools[name] = compare_with_pool(env, replace(default, seeds=args.seeds), top_k=POOL_TOP_K)
            print(f"arm pool {name}: {pools[name]['aiq']}", flush=True)
        if args.json_dir:
            args.json_dir.mkdir(parents=True, exist_ok=True)
            (args.json_dir / f"{name}.json").write_text(json.dumps(report, indent=1))
            if name in pair_reports and pair_reports[name] is not report:
                (args.json_dir / f"{name}_pair.json").write_text(json.dumps(pair_reports[name], indent=1))
    mmlu_full = mmlu_tagged = mmlu_bound = None
    if args.mmlu_seeds and MMLU in datasets:
        print(f"== {MMLU}, every question", flush=True)
        config = replace(base, seeds=args.mmlu_seeds, max_questions=None, learners=MMLU_LEARNERS, drift=())
        mmlu_full = replay_dataset(args.data / MMLU, config, progress=True)
        print(format_table(mmlu_full), flush=True)
        if args.json_dir:
            (args.json_dir / f"{MMLU}_full.json").write_text(json.dumps(mmlu_full, indent=1))
        print(f"== {MMLU}, every question, subject as a request tag", flush=True)
        mmlu_tagged = replay_dataset(
            args.data / MMLU, replace(config, tag_buckets=MMLU_TAG_BUCKETS), progress=True
        )
        print(format_table(mmlu_tagged), flush=True)
        mmlu_bound = task_router_bounds(ReplayEnvironment.from_directory(args.data / MMLU, config))
        print(f"per-subject router on {MMLU}: {mmlu_bound}", flush=True)
    demo = None if args.no_demo else _demo_figures()
    elapsed = time.perf_counter() - started

    present = [key for key in POLICY_KEYS if all(key in r["policies"] for r in reports.values())]
    out: list[str] = [
        "# Replay results",
        "",
        "Generated by `python scripts/make_results.py` (do not edit by hand; the protocol, metrics and caveats are",
        "in [replay.md](replay.md)). Every number below comes from that one command.",
        "",
        f"- commit `{commit}`, {time.strftime('%Y-%m-%d')}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPU core(s) ({_cpu()}), total wall time {elapsed / 60:.1f} min",
        f"- seeds {args.seeds}; cost weights {list(base.cost_weights)}; headline weight {base.cost_weight}; "
        f"at most {args.max_questions} questions per dataset (a seeded subset where larger)"
        + (f"; the full MMLU run has {args.mmlu_seeds} seed(s)" if mmlu_full else ""),
        f"- learners use the library defaults (LinUCB alpha={ReplayConfig().linucb_alpha}, ridge 1, "
        f"context_ridge 10, arm_ridge 10, per-arm terms; epsilon-greedy epsilon={ReplayConfig().epsilon}); the settings "
        "chosen after looking at data are named in 'What changed this round'",
        "",
        "## Issue 9's aims",
        "",
        *aims(reports, mmlu_full, demo, mmlu_tagged, mmlu_bound),
        "",
        *WHY_SECTION,
        "## Summary: AIQ (RouterBench) per dataset",
        "",
        "`uniscale_warm`, `offline_router`, `best_fixed_arm_heldout` and `best_fixed_arm_labelled` are scored on "
        "the held-out 70% of the questions, every other column on all of them. `best_fixed_arm_heldout` picks "
        "its arm on those same questions; `best_fixed_arm_labelled` on the labelled 30% (what a user without a "
        "router would deploy after the same eval).",
        "",
        "| dataset | questions | arms | " + " | ".join(present) + " |",
        "|---|---:|---:|" + "---:|" * len(present),
    ]
    for name, report in reports.items():
        subset = f"{report['n_questions']}" + (
            f" of {sizes[name]}" if report["n_questions"] < sizes[name] else ""
        )
        out.append(
            f"| {name} | {subset} | {report['n_arms']} | "
            + " | ".join(f"{report['policies'][key]['aiq']:.4f}" for key in present)
            + " |"
        )
    out += ["", "## When UniScale gets ahead, and whether it converges", "", *ahead_table(reports), ""]
    out += [
        "## Variants: UniScale's AIQ with the defaults and with each setting changed or tried this round",
        "",
        f"{args.variant_seeds} seed(s), same questions and weights as above; reported to justify the defaults, "
        "not used for any headline number.",
        "",
        "| dataset | defaults | " + " | ".join(VARIANTS) + " |",
        "|---|---:|" + "---:|" * len(VARIANTS),
    ]
    for name, values in variants.items():
        out.append(
            f"| {name} | {values['defaults']:.4f} | "
            + " | ".join(f"{values[v]:.4f}" for v in VARIANTS)
            + " |"
        )
    out += ["", *pool_section(pools, args.seeds)]
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
    if mmlu_full is not None and "two_model" in mmlu_full:
        out += [f"### {MMLU}, all {mmlu_full['n_questions']} questions ({args.mmlu_seeds} seed(s))", ""]
        out += two_model_table(mmlu_full, ROUTELLM_CLAIMS.get(MMLU))
        out.append("")
    for name, report in pair_reports.items():
        if "two_model" not in report:
            continue
        label = (
            " (generators `routellm_8shot` only)"
            if name == "gsm8k"
            else f" ({report['n_questions']} questions)"
        )
        out += [f"### {name}{label}", ""]
        out += two_model_table(report, ROUTELLM_CLAIMS.get(name))
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
        ]
        if report.get("drift"):
            out += [
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
