"""`uniscale-lc`: the command line. Each subcommand lives beside the code it drives and registers itself.

Subcommands are imported only when the parser is built, and each keeps its heavy imports (litellm,
matplotlib) inside its own run function, so `uniscale-lc --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# Module that provides `add_subparser(subparsers)`, which sets `func` on its parser.
_SUBCOMMANDS = (
    "uniscale_lc.demo.run",
    "uniscale_lc.replay.cli",
    "uniscale_lc.replay.fit_cli",
    "uniscale_lc.specserve.cli",
    "uniscale_lc.server.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uniscale-lc",
        description="Learn which (model x test-time-scaling strategy x budget) to run per request.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"uniscale-lc {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in _SUBCOMMANDS:
        module = importlib.import_module(module_name)
        module.add_subparser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    # Offline by default: litellm must use its bundled price map, never fetch one at import.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    parser = build_parser()
    args = parser.parse_args(argv)
    code = args.func(args)
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
