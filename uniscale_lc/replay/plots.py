"""PNG plots of a replay report (matplotlib is optional: `pip install uniscale-lc[plot]`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["plot_frontiers", "plot_learning_curves"]

_STYLE = {
    "uniscale": ("tab:red", "o", "-"),
    "routing_only": ("tab:blue", "s", "-"),
    "tts_only": ("tab:green", "^", "-"),
    "epsilon_greedy": ("tab:purple", "v", "--"),
    "random": ("tab:gray", "x", ":"),
    "best_fixed_arm": ("black", "D", "--"),
    "oracle": ("tab:orange", "*", ":"),
    # Scored on the held-out 70 % (replay/warm.py): their own colours, so no two rows look alike.
    "uniscale_warm": ("tab:pink", "P", "-"),
    "offline_router": ("tab:olive", "h", "-."),
    "best_fixed_arm_heldout": ("tab:cyan", "d", "--"),
    "best_fixed_arm_labelled": ("tab:brown", "<", ":"),
    # References that see every arm's outcome (replay/full_information.py): dark tones, dotted.
    "full_info_leader": ("darkslategray", ">", ":"),
    "full_info_router": ("darkgoldenrod", "p", "-."),
}


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot: matplotlib is not installed; pip install 'uniscale-lc[plot]'") from None
    return plt


def plot_frontiers(report: dict[str, Any], path: str | Path) -> Path:
    """Cost-accuracy frontier of every policy (log cost axis) over the fixed arms as grey dots."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 5.5))
    arms = report["fixed_arms"]
    axis.scatter(
        [arm["cost_usd_per_query"] for arm in arms],
        [arm["accuracy"] for arm in arms],
        s=12,
        color="lightgray",
        label="fixed arms",
        zorder=1,
    )
    for key, entry in report["policies"].items():
        color, marker, line = _STYLE.get(key, ("tab:brown", ".", "-"))
        points = sorted(entry["frontier"], key=lambda point: point["cost_usd_per_query"])
        axis.plot(
            [p["cost_usd_per_query"] for p in points],
            [p["accuracy"] for p in points],
            marker=marker,
            linestyle=line,
            color=color,
            label=f"{key} (AIQ {entry['aiq']:.3f})",
            zorder=2,
        )
    best = report["best_arm_by_accuracy"]
    axis.axhline(
        0.95 * best["accuracy"], color="black", linewidth=0.6, linestyle=":", label="95% of best arm"
    )
    axis.set_xscale("log")
    axis.set_xlabel("cost per query (USD, log scale)")
    axis.set_ylabel("accuracy")
    axis.set_title(f"{report['dataset']}: cost-weight sweep, {report['settings']['seeds']} seed(s)")
    axis.legend(fontsize=7, loc="lower right")
    axis.grid(alpha=0.3)
    return _save(figure, plt, path)


def plot_learning_curves(report: dict[str, Any], path: str | Path) -> Path:
    """Windowed reward and cumulative regret over steps at the headline cost weight."""
    plt = _pyplot()
    figure, (reward_axis, regret_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for key, entry in report["policies"].items():
        curve = entry.get("learning_curve")
        if not curve:
            continue
        color, _, line = _STYLE.get(key, ("tab:brown", ".", "-"))
        reward_axis.plot(curve["step"], curve["reward"], color=color, linestyle=line, label=key)
        regret_axis.plot(curve["step"], curve["cumulative_regret"], color=color, linestyle=line, label=key)
    reward_axis.set_xlabel("step")
    reward_axis.set_ylabel("reward (trailing window mean)")
    regret_axis.set_xlabel("step")
    regret_axis.set_ylabel("cumulative regret vs best fixed arm")
    regret_axis.axhline(0.0, color="black", linewidth=0.6)
    reward_axis.legend(fontsize=7)
    figure.suptitle(f"{report['dataset']}: learning at cost weight {report['settings']['cost_weight']}")
    for axis in (reward_axis, regret_axis):
        axis.grid(alpha=0.3)
    return _save(figure, plt, path)


def _save(figure: Any, plt: Any, path: str | Path) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(target, dpi=110)
    plt.close(figure)
    return target
