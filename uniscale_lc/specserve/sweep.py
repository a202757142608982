"""SIMULATION sweep: every policy on each trace at several loads, and a check of the issue's aims.

Aims (issue 13): the adaptive plan's SLO attainment >= the best static k's in every cell, and its goodput
>= 1.1x the best static k's at the highest load. `check_aims` reports each cell as met or not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .profile import Profile
from .simulate import load_trace, run_comparison

Row = dict[str, float | str]
STATIC = ("static-k1", "static-k3", "static-k5")


@dataclass(frozen=True)
class Cell:
    trace: str
    rate_scale: float
    requests: int
    rows: list[Row]


def run_sweep(
    profile: Profile, slo_tpot_ms: float, traces: Sequence[str], loads: Sequence[float], *,
    traces_dir: Path | None = None, max_k: int = 8, seed: int = 0,
) -> list[Cell]:
    cells = []
    for trace in traces:
        arrivals = load_trace(trace, traces_dir)
        for load in loads:
            rows = run_comparison(profile, arrivals, slo_tpot_ms, max_k=max_k, seed=seed, rate_scale=load)
            cells.append(Cell(trace, load, int(arrivals.size), rows))
    return cells


def _by_policy(rows: list[Row]) -> dict[str, Row]:
    return {str(r["policy"]): r for r in rows}


def check_aims(cells: list[Cell], adaptive: str, high_load: float) -> list[dict[str, object]]:
    """Per cell: the adaptive policy's attainment and goodput against the best static k's."""
    out: list[dict[str, object]] = []
    for cell in cells:
        rows = _by_policy(cell.rows)
        best_att = max(float(rows[s]["slo_attainment"]) for s in STATIC)
        best_good = max(float(rows[s]["goodput_tok_s"]) for s in STATIC)
        att = float(rows[adaptive]["slo_attainment"])
        good = float(rows[adaptive]["goodput_tok_s"])
        ratio = good / best_good if best_good > 0 else float("inf")
        # Control: the best static k behind the same admission cap, so the cap's share of a gain shows.
        same_cap = float(rows["static-k3+cap"]["slo_attainment"]) if "static-k3+cap" in rows else None
        out.append({
            "trace": cell.trace, "rate_scale": cell.rate_scale, "policy": adaptive,
            "attainment": att, "best_static_attainment": best_att, "attainment_met": att >= best_att - 1e-9,
            "goodput_ratio": ratio, "goodput_met": ratio >= 1.1 if cell.rate_scale >= high_load else None,
            "static_k3_cap_attainment": same_cap,
        })
    return out


def markdown(cells: list[Cell], label: str) -> str:
    """One table per cell, each headed with the label (SIMULATION + profile)."""
    lines: list[str] = []
    for cell in cells:
        lines += [f"#### {cell.trace} x{cell.rate_scale:g} ({label})",
                  "| policy | SLO attainment | goodput tok/s | throughput tok/s | mean TPOT ms | p99 TPOT ms "
                  "| mean TTFT ms | mean k |", "|---|---|---|---|---|---|---|---|"]
        for r in cell.rows:
            lines.append(
                f"| {r['policy']} | {float(r['slo_attainment']):.3f} | {float(r['goodput_tok_s']):.0f} "
                f"| {float(r['throughput_tok_s']):.0f} | {float(r['mean_tpot_ms']):.1f} "
                f"| {float(r['p99_tpot_ms']):.1f} | {float(r['mean_ttft_ms']):.0f} | {float(r['mean_k']):.2f} |")
        lines.append("")
    return "\n".join(lines)
