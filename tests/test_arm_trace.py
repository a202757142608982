"""scripts/arm_trace.py: the pulls and score lines it prints are those of the replay run it traces."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from script_loader import load_script
from test_replay_runner import write_two_task_table

from uniscale_lc.replay.runner import ReplayConfig, ReplayEnvironment, question_order, run_learner


def test_trace_counts_the_runs_own_choices_and_scores_watched_arms(tmp_path: Path) -> None:
    directory = write_two_task_table(tmp_path / "toy")
    lines = load_script("arm_trace").trace(directory, 0.0, 1, ["big:*", "small:cot|single"], [1, 5])
    # The same run without the tracer: its choices are what the counts must add up to.
    config = ReplayConfig(seeds=1)
    env = ReplayEnvironment.from_directory(directory, config)
    run = run_learner(env, "uniscale", 1, 0.0, question_order(env.n_questions, 1), config)
    counted = {
        match.group(2): int(match.group(1))
        for line in lines
        if (match := re.match(r"\s+chosen\s+(\d+) times: (\S+)", line))
    }
    columns = {arm.arm_id: column for column, arm in enumerate(env.outcomes.arms)}
    assert set(counted) == {"big:direct|single", "small:cot|single"}
    for arm_id, pulls in counted.items():
        assert pulls == int(np.sum(run.arm == columns[arm_id]))
    assert [line for line in lines if line.startswith("step ")] == ["step 1:", "step 5:"]
    watched = [line for line in lines if line.strip().startswith("watched")]
    assert len(watched) == 4  # two arms at two steps
    assert f"accuracy {run.accuracy:.4f}" in lines[-3]


def test_context_ridge_override_reaches_the_policy(tmp_path: Path) -> None:
    directory = write_two_task_table(tmp_path / "toy")
    default = load_script("arm_trace").trace(directory, 0.0, 0, ["small:*"], [30])
    pinned = load_script("arm_trace").trace(directory, 0.0, 0, ["small:*"], [30], context_ridge=1e6)
    assert default != pinned  # the prompt weights are what tells maths from trivia here
