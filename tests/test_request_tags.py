"""Request tags in the core: the pure tag functions, the router's context and errors, the warm-start fit,
the fit CLI, and the replay (a table whose task, not its prompt, decides the best arm)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from outcome_tables import write_big_small_table

from uniscale_lc import ModelSpec, Router
from uniscale_lc.arms import Arm, ArmSpace
from uniscale_lc.errors import ConfigError
from uniscale_lc.replay import ReplayConfig, ReplayEnvironment, question_order, run_learner
from uniscale_lc.replay.cli import add_subparser as add_replay_subparser
from uniscale_lc.replay.cli import config_from_args
from uniscale_lc.replay.fit_cli import add_subparser as add_fit_subparser
from uniscale_lc.replay.fit_cli import recorded_arm_space
from uniscale_lc.replay.runner import task_tag_features
from uniscale_lc.replay.warm import outcome_records
from uniscale_lc.strategies import Single
from uniscale_lc.tags import MAX_TAGS, check_tags, tag_features

ARM_A, ARM_B = "alpha|single", "beta|single"
PROMPT = "Please answer the next question."


def two_arm_space() -> ArmSpace:
    prices = {"alpha": 1.0, "beta": 1.2}  # near-equal, so quality decides
    return ArmSpace(
        [
            Arm(
                ModelSpec(
                    model=f"openai/{name}", name=name, input_usd_per_mtok=price, output_usd_per_mtok=price
                ),
                Single(),
            )
            for name, price in prices.items()
        ]
    )


# ----------------------------------------------------------------------------- pure functions


def test_check_tags_normalises_none_a_string_and_repeats() -> None:
    assert check_tags(None) == ()
    assert check_tags("billing") == ("billing",)
    assert check_tags([" billing ", "refunds", "billing"]) == ("billing", "refunds")
    assert check_tags(("a",)) == ("a",)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (3, r"got int; pass a string or a list of strings"),
        ({"a": 1}, r"got dict"),
        (["ok", ""], r"tags\[1\]: got ''"),
        (["ok", 7], r"tags\[1\]: got 7"),
        (["x" * 201], r"at most 200 characters"),
        ([f"t{i}" for i in range(MAX_TAGS + 1)], rf"pass at most {MAX_TAGS}"),
    ],
)
def test_check_tags_names_the_field_and_the_fix(value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_tags(value, "tags")


def test_tag_features_are_deterministic_signed_unit_blocks() -> None:
    one = tag_features(("billing",), 64)
    assert one.shape == (64,) and np.count_nonzero(one) == 1 and abs(one).max() == 1.0
    assert np.array_equal(one, tag_features(("billing",), 64))  # CRC-32: the same in every process
    two = tag_features(("billing", "refunds"), 64)
    assert np.linalg.norm(two) == pytest.approx(1.0) and not np.allclose(one, two)
    assert not tag_features((), 64).any() and tag_features(("billing",), 0).shape == (0,)
    signs = {float(tag_features((f"tag-{i}",), 64).sum()) for i in range(40)}
    assert signs == {1.0, -1.0}  # signed hashing: collisions cancel on average instead of adding up


# ----------------------------------------------------------------------------- the router


def test_router_context_carries_the_tag_block_and_untagged_requests_a_zero_block() -> None:
    router = Router(arms=two_arm_space(), tag_buckets=16)
    base = router.context([{"role": "user", "content": PROMPT}])
    tagged = router.context([{"role": "user", "content": PROMPT}], ("billing",))
    assert base.shape == tagged.shape and base.shape[0] > 16
    assert np.array_equal(base[:-16], tagged[:-16]) and not base[-16:].any()
    assert np.array_equal(tagged[-16:], tag_features(("billing",), 16))
    route = router.route(PROMPT, tags="billing")  # no model is called
    pending = router.pending_decisions.find(route.decision_id)
    assert pending is not None and np.array_equal(pending.decision.context, tagged)
    router.close()


def test_tags_without_tag_buckets_are_refused_before_anything_is_learnt() -> None:
    router = Router(arms=two_arm_space())
    with pytest.raises(ConfigError, match="tag_buckets is 0"):
        router.route(PROMPT, tags=["billing"])
    with pytest.raises(ConfigError, match="tag_buckets is 0"):
        router.fit([{"prompt": PROMPT, "arm_id": ARM_A, "quality": 1.0, "tags": ["billing"]}])
    assert router.stats()["warm_start_records"] == 0 and len(router.pending_decisions) == 0
    with pytest.raises(ConfigError, match=r"^Router\.tag_buckets: got -1; use 0"):
        Router(arms=two_arm_space(), tag_buckets=-1)
    router.close()


def test_fit_learns_what_only_the_tags_tell_apart() -> None:
    """Same prompt, two tags: alpha is right under 'maths', beta under 'trivia'; the fit sees it."""
    router = Router(arms=two_arm_space(), tag_buckets=16)
    records = [
        {"prompt": f"{PROMPT} #{i}", "arm_id": arm, "quality": float(good), "tags": [tag]}
        for i in range(30)
        for tag, best in (("maths", ARM_A), ("trivia", ARM_B))
        for arm, good in ((ARM_A, best == ARM_A), (ARM_B, best == ARM_B))
    ]
    router.fit(records)

    def predicted(tags: str | None) -> dict[str, float]:
        return {row["arm"]: row["predicted_quality"] for row in router.explain(PROMPT, tags=tags)}

    maths, trivia = predicted("maths"), predicted("trivia")
    assert maths[ARM_A] > maths[ARM_B] + 0.3 and trivia[ARM_B] > trivia[ARM_A] + 0.3
    router.close()


# ----------------------------------------------------------------------------- tables: replay and fit CLI

N_QUESTIONS = 120


def write_tag_table(directory: Path, tasks: tuple[str, ...] = ("maths", "trivia")) -> Path:
    """Prompts say nothing of the task; `big` is right on the first task only, `small` on the others only."""
    questions, correct = [], []
    for index in range(N_QUESTIONS):
        task = tasks[index % len(tasks)]
        questions.append(
            {"qid": f"q{index:03d}", "prompt": f"Question {index}: answer it.", "gold": "x", "task": task}
        )
        correct.append((task == tasks[0], task != tasks[0] or len(tasks) == 1))
    return write_big_small_table(directory, questions, correct)


@pytest.fixture(scope="module")
def tag_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tag_table(tmp_path_factory.mktemp("tag_table"))


def test_replay_with_task_tags_learns_what_the_prompts_hide(tag_table: Path) -> None:
    def last_half_reward(buckets: int) -> float:
        config = ReplayConfig(tag_buckets=buckets)
        env = ReplayEnvironment.from_directory(tag_table, config)
        runs = [
            run_learner(env, "uniscale", seed, 0.2, question_order(N_QUESTIONS, seed), config).reward
            for seed in range(3)
        ]
        return float(np.mean([run[N_QUESTIONS // 2 :].mean() for run in runs]))

    untagged, tagged = last_half_reward(0), last_half_reward(16)
    # Without tags the best is one arm for all (big, right on half); with them each task gets its own.
    assert tagged > untagged + 0.2


def test_replay_tags_are_the_task_and_a_single_task_gives_none(tmp_path: Path, tag_table: Path) -> None:
    env = ReplayEnvironment.from_directory(tag_table, ReplayConfig(tag_buckets=8))
    plain = ReplayEnvironment.from_directory(tag_table, ReplayConfig())
    assert env.features.shape == (N_QUESTIONS, plain.features.shape[1] + 8)
    for row, task in enumerate(env.outcomes.tasks):
        assert np.array_equal(env.features[row, -8:], tag_features((task,), 8))
    assert not task_tag_features(("only",) * 5, 8).any()  # one task: a constant says nothing
    single = write_tag_table(tmp_path / "single", tasks=("only",))
    assert not ReplayEnvironment.from_directory(single, ReplayConfig(tag_buckets=8)).features[:, -8:].any()
    records = outcome_records(env.outcomes, [0, 1], task_tags=True)
    assert [record.tags for record in records] == [("maths",)] * 2 + [("trivia",)] * 2
    with pytest.raises(ConfigError, match=r"ReplayConfig\.tag_buckets"):
        ReplayConfig(tag_buckets=-1)


def test_replay_cli_passes_tag_buckets() -> None:
    parser = argparse.ArgumentParser(prog="uniscale-lc")
    add_replay_subparser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["replay", "some-dir", "--tag-buckets", "32"])
    assert config_from_args(args).tag_buckets == 32


def test_fit_cli_with_tag_buckets_writes_a_state_a_tagged_router_loads(
    tag_table: Path, tmp_path: Path, capsys
) -> None:
    parser = argparse.ArgumentParser(prog="uniscale-lc")
    add_fit_subparser(parser.add_subparsers(dest="command"))
    out = tmp_path / "fit.npz"
    args = parser.parse_args(
        ["fit", str(tag_table), "--out", str(out), "--tag-buckets", "16", "--no-progress"]
    )
    assert args.func(args) == 0
    assert "tag_buckets=16" in capsys.readouterr().out  # the load line says how to build the router
    router = Router(arms=recorded_arm_space(tag_table), tag_buckets=16, state_path=str(out))
    assert router.stats()["warm_start_records"] == 2 * N_QUESTIONS

    def best(tag: str) -> str:
        return str(router.explain("Question 7: answer it.", tags=tag)[0]["arm"])

    assert best("maths") == "big:direct|single" and best("trivia") == "small:direct|single"
    router.close()
    tagged_dir_router = Router(arms=recorded_arm_space(tag_table), tag_buckets=16)
    tagged_dir_router.fit(tag_table)  # a directory fit tags its records when the router has tag_buckets
    assert str(tagged_dir_router.explain("Question 7: answer it.", tags="trivia")[0]["arm"]).startswith(
        "small"
    )
    tagged_dir_router.close()
