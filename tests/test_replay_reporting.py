"""Report fields on learning progress (ahead of the best fixed arm, convergence), progress lines, CLI paths."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import pytest
from test_replay_runner import write_two_task_table

import uniscale_lc.replay.cli as cli_module
from uniscale_lc.progress import LineProgress, progress_bar
from uniscale_lc.replay import ReplayConfig, replay_dataset
from uniscale_lc.replay.cli import add_subparser, run
from uniscale_lc.replay.metrics import arm_share, last_fraction_mean, steps_until_ahead, task_best_arms


def test_steps_until_ahead_is_the_step_after_the_last_time_behind() -> None:
    assert steps_until_ahead(np.array([0.5, 0.2, -0.1, 0.1, -0.2, -0.3])) == 4
    assert steps_until_ahead(np.array([-0.1, -0.2])) == 0
    assert steps_until_ahead(np.array([-0.1, 0.2])) is None
    assert steps_until_ahead(np.array([])) is None


def test_arm_share_counts_the_last_quarter_only() -> None:
    chosen = np.array([1] * 6 + [0, 0, 0, 1])
    assert arm_share(chosen, 0, 0.25) == pytest.approx(2 / 3)  # the last ceil(2.5) = 3 steps
    assert arm_share(chosen, 1, 1.0) == pytest.approx(0.7)
    with pytest.raises(ValueError):
        arm_share(chosen, 0, 0.0)


def test_last_fraction_mean_averages_the_steps_arm_share_counts() -> None:
    quality = np.array([0.0] * 6 + [1.0, 1.0, 0.0, 1.0])
    assert last_fraction_mean(quality, 0.25) == pytest.approx(2 / 3)  # the last ceil(2.5) = 3 steps
    assert last_fraction_mean(quality, 1.0) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="fraction"):
        last_fraction_mean(quality, 1.5)
    with pytest.raises(ValueError, match="no steps"):
        last_fraction_mean(np.array([]))


def test_task_best_arms_picks_each_tasks_most_accurate_arm() -> None:
    quality = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [1, 1]], dtype=float)
    best = task_best_arms(quality, ["a", "a", "b", "b", "b"])
    assert best.tolist() == [0, 0, 1, 1, 1]  # arm 0 wins task a (1.0 vs 0), arm 1 task b (1.0 vs 1/3)
    # One target per step: steps 0-2 and 4 chose their task's best arm, step 3 did not.
    assert arm_share(np.array([0, 0, 1, 0, 1]), best, 1.0) == pytest.approx(0.8)
    assert arm_share(np.array([0, 0, 1, 0, 1]), best, 0.4) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="one per step"):
        arm_share(np.array([0, 1, 0]), best, 1.0)
    with pytest.raises(ValueError, match="one task per row"):
        task_best_arms(quality, ["a", "b"])


def test_a_cost_blind_learner_converges_to_the_clearly_best_arm(tmp_path: Path) -> None:
    """Toy table: `big` is right on every question, `small` on half; ignoring cost, pick `big`."""
    directory = write_two_task_table(tmp_path / "toy")
    report = replay_dataset(directory, ReplayConfig(seeds=2, vote_ladder=(3,), workers=1))
    assert report["most_accurate_arm"]["arm"] == "big:direct|single"
    assert report["most_accurate_arm"]["margin"] == pytest.approx(0.5)
    uniscale = report["policies"]["uniscale"]
    assert uniscale["best_arm_share_last_quarter_w0"] >= 0.9
    assert report["policies"]["random"]["best_arm_share_last_quarter_w0"] < 0.6
    assert len(uniscale["requests_until_ahead_of_best_fixed"]) == 2
    # `big` is (one of) the most accurate on both tasks: routing by task buys nothing over it here.
    assert report["most_accurate_arm"]["per_task_best_accuracy"] == pytest.approx(1.0)
    assert report["most_accurate_arm"]["n_tasks"] == 2
    assert uniscale["task_best_arm_share_last_quarter_w0"] >= 0.45  # at least the maths half
    # `big` is right everywhere, so its last quarter is 1.0; random's picks are not, the learner's nearly.
    assert uniscale["most_accurate_arm_last_quarter_accuracy_w0"] == pytest.approx(1.0)
    assert uniscale["last_quarter_accuracy_w0"] >= 0.9
    random = report["policies"]["random"]
    assert random["last_quarter_accuracy_w0"] < random["most_accurate_arm_last_quarter_accuracy_w0"] - 0.1


def test_line_progress_prints_lines_not_carriage_returns() -> None:
    stream = io.StringIO()
    bar = LineProgress(4, "replay toy", "run", interval_s=0.0, stream=stream)
    for _ in range(4):
        bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("replay toy: 4/4 run (100%)") and "\r" not in stream.getvalue()


def test_line_progress_names_the_phase_and_a_disabled_bar_prints_nothing(capsys) -> None:
    stream = io.StringIO()
    bar = LineProgress(2, "demo", "req", interval_s=0.0, stream=stream)
    bar.update(1)
    bar.set_postfix_str("fixed arm big|single")
    bar.update(1)
    lines = stream.getvalue().splitlines()
    assert not lines[0].endswith("big|single") and lines[1].endswith(", fixed arm big|single")
    silent = progress_bar(5, "demo", "req", enabled=False)
    silent.update(5)
    silent.set_postfix_str("x")
    silent.close()
    assert capsys.readouterr() == ("", "")


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_subparser(parser.add_subparsers())
    return parser.parse_args(["replay", *argv])


@pytest.mark.parametrize("flag", ["--json", "--plot"])
def test_an_unwritable_output_path_fails_before_the_replay(
    tmp_path: Path, flag: str, monkeypatch, capsys
) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("x")
    monkeypatch.setattr(cli_module, "replay_dataset", lambda *a, **k: pytest.fail("replay ran"))
    assert run(_parse([str(tmp_path), flag, str(not_a_directory / "out")])) == 2
    assert f"{flag}: " in capsys.readouterr().err
    assert run(_parse([str(tmp_path), flag, str(tmp_path)])) == 2
    assert "is a directory" in capsys.readouterr().err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, which refuses new files")
def test_a_path_the_kernel_refuses_fails_before_the_replay(tmp_path: Path, monkeypatch, capsys) -> None:
    # Root passes permission checks, but /proc takes no new file: only trying to write finds that out.
    monkeypatch.setattr(cli_module, "replay_dataset", lambda *a, **k: pytest.fail("replay ran"))
    assert run(_parse([str(tmp_path), "--json", "/proc/uniscale-report.json"])) == 2
    assert "--json: cannot write /proc/uniscale-report.json" in capsys.readouterr().err


def test_the_output_check_leaves_no_file_behind_and_keeps_an_existing_one(tmp_path: Path) -> None:
    fresh = tmp_path / "new" / "deeper" / "report.json"
    cli_module.check_output_path(fresh, "--json")
    assert not fresh.exists() and fresh.parent.is_dir()
    kept = tmp_path / "old.json"
    kept.write_text("earlier report")
    cli_module.check_output_path(kept, "--json")
    assert kept.read_text() == "earlier report"


def test_a_missing_matplotlib_fails_before_the_replay(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    monkeypatch.setattr(cli_module, "replay_dataset", lambda *a, **k: pytest.fail("replay ran"))
    assert run(_parse([str(tmp_path), "--plot", str(tmp_path / "out.png")])) == 2
    assert "matplotlib is not installed" in capsys.readouterr().err


def test_a_write_that_fails_after_the_replay_is_a_clean_error(tmp_path: Path, monkeypatch, capsys) -> None:
    target = tmp_path / "report.json"
    monkeypatch.setattr(cli_module, "replay_dataset", lambda *a, **k: {"stub": True})
    monkeypatch.setattr(cli_module, "format_table", lambda report: "the table")

    def refuse(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", refuse)
    assert run(_parse([str(tmp_path), "--json", str(target)])) == 2
    captured = capsys.readouterr()
    assert "the table" in captured.out  # the results were printed before the write failed
    assert "--json: cannot write" in captured.err and "No space left on device" in captured.err


def test_every_reported_row_has_its_own_plot_style() -> None:
    from uniscale_lc.replay import POLICY_KEYS
    from uniscale_lc.replay.plots import _STYLE

    assert set(POLICY_KEYS) <= set(_STYLE), "a row without a style is drawn in the fallback brown"
    colours = [_STYLE[key][0] for key in POLICY_KEYS]
    assert len(set(colours)) == len(colours), "two rows of one plot share a colour"
