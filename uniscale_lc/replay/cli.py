"""`uniscale-lc replay DATA_DIR ...`: replay a recorded outcome table and print / save the report.

The main CLI wires this in with `add_subparser(subparsers)`; `run(args)` returns the exit code.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UniScaleError
from .output_path import check_output_path
from .report import format_table, replay_dataset
from .runner import DEFAULT_COST_WEIGHT, DRIFT_SCENARIOS, LEARNERS, ReplayConfig

__all__ = ["add_subparser", "build_parser", "check_output_path", "config_from_args", "run"]


def add_subparser(subparsers: Any) -> None:
    """Register `replay` on the main CLI's subparsers (argparse `add_subparsers()` result)."""
    parser = subparsers.add_parser(
        "replay",
        help="replay recorded outcomes: learners vs baselines, frontiers, AIQ",
        description=(
            "Prequential bandit-feedback replay of a recorded outcome table (see docs/replay.md). "
            "Prints a table of every learner and baseline; --json writes the full report."
        ),
    )
    _add_arguments(parser)
    parser.set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    """A standalone parser (`python -m uniscale_lc.replay.cli`)."""
    parser = argparse.ArgumentParser(
        prog="uniscale-lc replay", description="Replay a recorded outcome table."
    )
    _add_arguments(parser)
    return parser


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", metavar="DATA_DIR", type=Path, help="an outcome-table directory")
    parser.add_argument(
        "--arms",
        metavar="SPEC",
        default=None,
        help="arms to keep: comma-separated globs over arm ids or kind:single|majority_vote|composite",
    )
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--cost-weight",
        metavar="X",
        type=float,
        default=None,
        help=f"replay at this one cost weight only (default: the sweep, headline {DEFAULT_COST_WEIGHT})",
    )
    weights.add_argument("--sweep", action="store_true", help="sweep the default cost weights (the default)")
    parser.add_argument(
        "--seeds", metavar="N", type=int, default=5, help="question orders to average (default 5)"
    )
    parser.add_argument(
        "--drift",
        metavar="NAME",
        action="append",
        default=[],
        help=f"drift scenario(s): {', '.join(DRIFT_SCENARIOS)} or all; repeat or comma-separate",
    )
    parser.add_argument("--json", metavar="OUT", type=Path, default=None, help="write the JSON report here")
    parser.add_argument(
        "--plot", metavar="OUT.png", type=Path, default=None, help="write the frontier plot here"
    )
    parser.add_argument(
        "--max-questions", metavar="N", type=int, default=None, help="replay a seeded subset of N questions"
    )
    parser.add_argument(
        "--min-coverage",
        metavar="F",
        type=float,
        default=0.9,
        help="drop arms recorded for fewer than this fraction of questions (default 0.9)",
    )
    parser.add_argument(
        "--workers", metavar="N", type=int, default=0, help="processes (default: one per core)"
    )
    parser.add_argument(
        "--featurizer",
        choices=("hashing", "minilm"),
        default="hashing",
        help="prompt features (default hashing)",
    )
    parser.add_argument(
        "--tag-buckets",
        metavar="N",
        type=int,
        default=0,
        help="pass each question's task as a request tag in N hashed features (default 0: no tags)",
    )
    parser.add_argument(
        "--learners",
        metavar="NAMES",
        default=None,
        help=f"comma-separated learners to run (default all: {','.join(LEARNERS)})",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


# The flag that sets each ReplayConfig field, so that an error names what the user typed.
_FLAG_OF_FIELD = {
    "seeds": "--seeds",
    "cost_weights": "--cost-weight",
    "cost_weight": "--cost-weight",
    "learners": "--learners",
    "drift": "--drift",
    "max_questions": "--max-questions",
    "min_coverage": "--min-coverage",
    "workers": "--workers",
    "featurizer": "--featurizer",
    "tag_buckets": "--tag-buckets",
}


def config_from_args(args: argparse.Namespace) -> ReplayConfig:
    """The replay configuration an argument namespace asks for; a bad value's error names its flag."""
    try:
        return _config_from_args(args)
    except ConfigError as error:
        message = re.sub(
            r"ReplayConfig\.(\w+)",
            lambda match: _FLAG_OF_FIELD.get(match.group(1), match.group(0)),
            str(error),
        )
        raise ConfigError(message) from None


def _config_from_args(args: argparse.Namespace) -> ReplayConfig:
    drift: list[str] = []
    for value in args.drift:
        for name in value.split(","):
            name = name.strip()
            if name == "all":
                drift.extend(DRIFT_SCENARIOS)
            elif name:
                drift.append(name)
    changes: dict[str, Any] = {
        "seeds": args.seeds,
        "arms": args.arms,
        "drift": tuple(dict.fromkeys(drift)),
        "max_questions": args.max_questions,
        "min_coverage": args.min_coverage,
        "workers": args.workers,
        "featurizer": args.featurizer,
        "tag_buckets": args.tag_buckets,
    }
    if args.learners is not None:
        changes["learners"] = tuple(name.strip() for name in args.learners.split(",") if name.strip())
    if args.cost_weight is not None:
        changes["cost_weight"] = args.cost_weight
        changes["cost_weights"] = (args.cost_weight,)
    return ReplayConfig(**changes)


def run(args: argparse.Namespace) -> int:
    """Run a replay from parsed arguments; 0 on success, 2 on a configuration or data error."""
    try:
        config = config_from_args(args)
        for flag, path in (("--json", args.json), ("--plot", args.plot)):
            if path is not None:
                check_output_path(path, flag)
        if args.plot is not None:
            from .plots import _pyplot

            _pyplot()  # matplotlib missing: say so now, not after the replay
        report = replay_dataset(args.data_dir, config, progress=not args.no_progress)
    except (UniScaleError, ValueError) as error:
        print(f"uniscale-lc replay: {error}", file=sys.stderr)
        return 2
    print(format_table(report))
    if args.json is not None:
        try:
            args.json.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n", encoding="utf-8")
        except OSError as error:  # the path was writable when checked; say why it no longer is
            print(f"uniscale-lc replay: --json: cannot write {args.json}: {error.strerror}", file=sys.stderr)
            return 2
        print(f"report written to {args.json}")
    if args.plot is not None:
        try:
            from .plots import plot_frontiers

            plot_frontiers(report, args.plot)
        except UniScaleError as error:
            print(f"uniscale-lc replay: {error}", file=sys.stderr)
            return 2
        print(f"plot written to {args.plot}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
