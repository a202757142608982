"""Warm start: record validation, the fit against closed-form ridge, Router.fit persistence, the fit CLI,
the offline ridge router and the replay's warm learners (scored on held-out questions only)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pytest
from outcome_tables import write_big_small_table

import uniscale_lc.replay.warm as warm_module
from uniscale_lc import ModelSpec, Router
from uniscale_lc.arms import Arm, ArmSpace
from uniscale_lc.costs import CostModel
from uniscale_lc.errors import ConfigError
from uniscale_lc.policy import LinUCB
from uniscale_lc.policy.offline import OfflineRidgeRouter, cv_ridge, ridge_fit
from uniscale_lc.replay import ReplayConfig, ReplayEnvironment, replay_dataset
from uniscale_lc.replay.fit_cli import add_subparser, recorded_arm_space
from uniscale_lc.replay.warm import heldout_environment, outcome_records, run_warm_learner, warm_split
from uniscale_lc.strategies import Single
from uniscale_lc.warm_start import FIT_RIDGES, LabelledOutcome, check_outcomes, fit_outcomes, labelled_split

ARM_A, ARM_B = "alpha|single", "beta|single"


def two_arm_space() -> ArmSpace:
    return ArmSpace(
        [
            Arm(
                ModelSpec(
                    model="openai/alpha", name="alpha", input_usd_per_mtok=1.0, output_usd_per_mtok=2.0
                ),
                Single(),
            ),
            Arm(
                ModelSpec(model="openai/beta", name="beta", input_usd_per_mtok=9.0, output_usd_per_mtok=9.0),
                Single(),
            ),
        ]
    )


def lookup_featurizer(rng: np.random.Generator, prompts: list[str], dim: int = 3):
    table = {prompt: rng.normal(size=dim) / 2 for prompt in prompts}
    return table, lambda prompt, tags: table[prompt]  # fit_outcomes passes (prompt, tags)


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {"prompt": "p", "arm_id": "nope|single", "quality": 1.0},
            "records[1].arm_id: unknown 'nope|single'",
        ),
        (("p", ARM_A, 1.5), "records[1].quality: got 1.5"),
        (("p", ARM_A, math.nan), "records[1].quality: got nan"),
        (("p", ARM_A, "0.5"), "records[1].quality: got '0.5' (str)"),
        (("p", ARM_A, True), "records[1].quality: got True (bool)"),
        (("p", ARM_A, 0.5, -1.0), "records[1].cost_usd: got -1.0"),
        (("", ARM_A, 0.5), "records[1].prompt"),
        (
            {"prompt": "p", "arm_id": ARM_A, "quality": 1.0, "input_tokens": 3},
            "input_tokens and output_tokens",
        ),
        ({"prompt": "p", "arm_id": ARM_A, "quality": 1.0, "calls": 0}, "records[1].calls: got 0"),
        ({"prompt": "p", "arm_id": ARM_A, "score": 1.0}, "unknown field(s) ['score']"),
        (42, "records[1]: got int"),
    ],
)
def test_check_outcomes_names_the_record_the_field_and_the_fix(record, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        check_outcomes([("fine", ARM_B, 0.0), record], [ARM_A, ARM_B])
    assert message in str(raised.value)


def test_check_outcomes_accepts_every_record_form() -> None:
    checked = check_outcomes(
        [
            LabelledOutcome("a", ARM_A, 1.0, cost_usd=0.1, input_tokens=10, output_tokens=5, calls=1),
            {"prompt": "b", "arm_id": ARM_B, "quality": np.float64(0.25)},
            ("c", ARM_A, 0, 0.5),
        ],
        [ARM_A, ARM_B],
    )
    assert [(r.prompt, r.arm_id, r.quality, r.cost_usd) for r in checked] == [
        ("a", ARM_A, 1.0, 0.1),
        ("b", ARM_B, 0.25, None),
        ("c", ARM_A, 0.0, 0.5),
    ]
    with pytest.raises(ConfigError, match="got none"):
        check_outcomes([], [ARM_A])


# ----------------------------------------------------------------------------- the fit is a ridge fit


def _records(rng: np.random.Generator, prompts: list[str]) -> list[LabelledOutcome]:
    return [
        LabelledOutcome(prompt, arm, float(rng.uniform()), input_tokens=40.0, output_tokens=20.0)
        for prompt in prompts
        for arm in (ARM_A, ARM_B)
    ]


def _fit_random(policy: LinUCB, seed: int, n_prompts: int):
    """Fit `policy` on random qualities of both arms for `n_prompts` prompts with random 3-d features."""
    rng = np.random.default_rng(seed)
    prompts = [f"question {i}" for i in range(n_prompts)]
    table, featurize = lookup_featurizer(rng, prompts)
    records = _records(rng, prompts)
    space = two_arm_space()
    policy.bind(space, 3)
    summary = fit_outcomes(policy, CostModel(space), featurize, records, choose_ridge=False)
    return rng, table, records, space, summary


def test_disjoint_warm_start_equals_closed_form_ridge_per_arm() -> None:
    policy = LinUCB(shared=False, ridge=2.0)
    rng, table, records, _, summary = _fit_random(policy, 3, 40)
    assert summary["records"] == 80 and summary["arms_taught"] == 2 and summary["cost_observations"] == 80
    probe = rng.normal(size=3)
    ids, mean, _, _ = policy.score(probe)
    for arm in (ARM_A, ARM_B):
        rows = [r for r in records if r.arm_id == arm]
        x_aug = np.array([[1.0, *table[r.prompt]] for r in rows])
        y = np.array([r.quality for r in rows])
        # The prior: ridge on the arm's mean (disjoint: nothing else predicts it), context_ridge (10 x ridge by
        # default) on prompt weights.
        prior = np.diag([2.0, 20.0, 20.0, 20.0])
        weights = np.linalg.solve(x_aug.T @ x_aug + prior, x_aug.T @ y)
        assert mean[ids.index(arm)] == pytest.approx(float(np.array([1.0, *probe]) @ weights), abs=1e-6)


def test_shared_warm_start_equals_closed_form_ridge_on_joint_features() -> None:
    policy = LinUCB(per_arm=False)  # context_dim 3 + bias <= shared_context_dim: no projection
    rng, table, records, space, _ = _fit_random(policy, 4, 30)
    arm_features = dict(zip(space.ids, space.features(space.ids), strict=True))

    def joint(prompt_vector: np.ndarray, arm: str) -> np.ndarray:
        return np.outer(np.array([1.0, *prompt_vector]), arm_features[arm]).ravel()

    design = np.array([joint(table[r.prompt], r.arm_id) for r in records])
    y = np.array([r.quality for r in records])
    # The prior: ridge (1) on the bias x arm-feature block, context_ridge (10) on prompt x arm features.
    n_arm_features = len(next(iter(arm_features.values())))
    prior = np.full(design.shape[1], 10.0)
    prior[:n_arm_features] = 1.0
    weights = np.linalg.solve(design.T @ design + np.diag(prior), design.T @ y)
    probe = rng.normal(size=3)
    ids, mean, _, _ = policy.score(probe)
    for arm in ids:
        assert mean[ids.index(arm)] == pytest.approx(float(joint(probe, arm) @ weights), abs=1e-6)


def test_fit_chooses_the_context_ridge_by_cross_validation_only_on_a_policy_that_learnt_nothing() -> None:
    rng = np.random.default_rng(5)
    prompts = [f"question {i}" for i in range(60)]
    table, featurize = lookup_featurizer(rng, prompts, dim=12)
    # Pure noise: the best prediction is each arm's mean, so the heaviest ridge wins cross-validation.
    records = _records(rng, prompts)
    space = two_arm_space()
    policy = LinUCB()
    policy.bind(space, 12)
    summary = fit_outcomes(policy, CostModel(space), featurize, records)
    design = np.array([table[p] for p in prompts])
    quality = np.array([[r.quality for r in records if r.prompt == p] for p in prompts])
    expected, errors = cv_ridge(design, quality, FIT_RIDGES, 3)
    assert summary["context_ridge_chosen_by_cv"]
    assert summary["context_ridge"] == expected == policy.context_ridge == 100.0 and policy.ridge == 1.0
    assert errors.argmin() == 2
    # A signal in one feature with many samples: a lighter prior than for noise fits best.
    signal = [LabelledOutcome(p, arm, float(table[p][0] > 0)) for p in prompts for arm in (ARM_A, ARM_B)]
    fresh = LinUCB()
    fresh.bind(space, 12)
    assert fit_outcomes(fresh, CostModel(space), featurize, signal)["context_ridge"] < 100.0
    # Already taught: re-binding would lose what it learnt, so the prior is kept.
    again = fit_outcomes(policy, CostModel(space), featurize, signal)
    assert not again["context_ridge_chosen_by_cv"] and policy.context_ridge == 100.0
    assert policy.state_dict()["shared"]["updates"] == 2 * len(records)


def test_a_bad_record_teaches_nothing() -> None:
    router = Router(arms=two_arm_space())
    before = router.policy.state_dict()
    cost_before = router.cost_model.state_dict()
    good = [("what is 2 + 2?", ARM_A, 1.0, 0.001)] * 5
    with pytest.raises(ConfigError, match=r"records\[5\].quality"):
        router.fit([*good, ("what is 3 + 3?", ARM_B, 7.0)])
    after = router.policy.state_dict()
    assert after["per_arm"].keys() == before["per_arm"].keys()
    assert np.array_equal(after["shared"]["gram"], before["shared"]["gram"])
    assert router.cost_model.state_dict() == cost_before
    assert router.stats()["warm_start_records"] == 0


def test_fit_save_load_round_trip(tmp_path: Path) -> None:
    state = tmp_path / "state.npz"
    router = Router(arms=two_arm_space(), state_path=str(state), autosave_interval_s=0)
    records = [
        {
            "prompt": f"maths {i}: {i} * 3",
            "arm_id": ARM_B,
            "quality": 1.0,
            "input_tokens": 30,
            "output_tokens": 90,
        }
        for i in range(20)
    ] + [{"prompt": f"maths {i}: {i} * 3", "arm_id": ARM_A, "quality": 0.0} for i in range(20)]
    summary = router.fit(records)
    assert summary["arms"][ARM_B]["mean_quality"] == 1.0 and summary["arms"][ARM_A]["records"] == 20
    assert router.stats()["warm_start_records"] == 40
    router.close()
    explained = {row["arm"]: row for row in router.explain("maths 7: 7 * 3")}
    assert explained[ARM_B]["predicted_quality"] > explained[ARM_A]["predicted_quality"] + 0.3  # shrunk by the priors
    loaded = Router(arms=two_arm_space(), state_path=str(state))
    assert loaded.stats()["warm_start_records"] == 40
    reloaded = {row["arm"]: row for row in loaded.explain("maths 7: 7 * 3")}
    for arm in (ARM_A, ARM_B):
        assert reloaded[arm]["predicted_quality"] == pytest.approx(
            explained[arm]["predicted_quality"], abs=1e-9
        )
        assert reloaded[arm]["predicted_cost_usd"] == pytest.approx(explained[arm]["predicted_cost_usd"])
    loaded.close()


def test_the_chat_model_fits_through_its_router() -> None:
    from uniscale_lc import UniScaleChat

    chat = UniScaleChat(arms=two_arm_space())
    summary = chat.fit([("What is 2 + 2?", ARM_A, 1.0), ("What is 2 + 2?", ARM_B, 0.0)] * 4)
    assert summary["records"] == 8 and chat.stats()["warm_start_records"] == 8
    assert chat.core.stats()["warm_start_records"] == 8
    chat.close()


# ----------------------------------------------------------------------------- tables and the CLI


N_QUESTIONS = 40


def write_table(directory: Path) -> Path:
    """Maths (even questions): only `big` is right; trivia: both are right and `small` is 100x cheaper."""
    questions, correct = [], []
    for index in range(N_QUESTIONS):
        maths = index % 2 == 0
        prompt = (
            f"Compute {index} * 7 + 3 and give the number." if maths else f"Which city is capital {index}?"
        )
        task = "maths" if maths else "trivia"
        questions.append({"qid": f"q{index:03d}", "prompt": prompt, "gold": "x", "task": task})
        correct.append((True, not maths))
    return write_big_small_table(directory, questions, correct)


@pytest.fixture(scope="module")
def table_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_table(tmp_path_factory.mktemp("warm_table"))


def test_router_fits_a_table_directory(table_dir: Path) -> None:
    router = Router(arms=recorded_arm_space(table_dir))
    summary = router.fit(table_dir)
    assert summary["records"] == 2 * N_QUESTIONS and summary["prompts"] == N_QUESTIONS
    assert summary["arms"]["small:direct|single"]["mean_quality"] == 0.5
    other = Router(arms=two_arm_space())
    with pytest.raises(ConfigError, match="no arm this router is configured with"):
        other.fit(str(table_dir))


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="uniscale-lc")
    add_subparser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_fit_cli_writes_a_state_the_router_loads(table_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "states" / "fit.npz"
    args = _cli(["fit", str(table_dir), "--out", str(out), "--questions-fraction", "0.5"])
    assert args.func(args) == 0
    printed = capsys.readouterr()
    assert "fitted 40 outcomes of 2 arms on 20 questions" in printed.out
    assert "fit: 40/40 records" in printed.err  # not a terminal: plain progress lines
    router = Router(arms=recorded_arm_space(table_dir), state_path=str(out))
    assert router.stats()["warm_start_records"] == 40 and router.load_report == []
    maths = {
        row["arm"]: row["predicted_quality"]
        for row in router.explain("Compute 2 * 7 + 3 and give the number.")
    }
    assert maths["big:direct|single"] > maths["small:direct|single"]
    router.close()


def test_fit_cli_refuses_a_bad_out_path_before_the_work(tmp_path: Path, capsys) -> None:
    missing_table = tmp_path / "no-such-table"
    args = _cli(["fit", str(missing_table), "--out", str(tmp_path)])
    assert args.func(args) == 2
    assert "--out" in capsys.readouterr().err  # the path is checked before the table is read
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    args = _cli(["fit", str(missing_table), "--out", str(blocker / "state.npz")])
    assert args.func(args) == 2
    assert "not a directory" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the offline router


def test_offline_router_fits_ridge_with_cross_validation_and_routes_by_context() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 2))
    quality = np.column_stack([(x[:, 0] > 0).astype(float), (x[:, 0] <= 0).astype(float)])
    cost = np.column_stack([np.full(120, 1.0), np.full(120, 1.0)])
    router = OfflineRidgeRouter().fit(x, quality, cost, ["left", "right"])
    assert set(router.chosen_ridge.tolist()) <= {0.1, 1.0, 10.0, 100.0}
    x_aug = np.hstack([np.ones((120, 1)), x])
    expected = ridge_fit(x_aug, quality[:, :1], float(router.chosen_ridge[0]))
    assert np.allclose(router.weights[:, :1], expected)
    assert router.select(np.array([2.0, 0.0]), 0.0) == "left"
    assert router.select(np.array([-2.0, 0.0]), 0.0) == "right"
    # A dearer 'left': at a high cost weight the cheap arm wins everywhere.
    dear = OfflineRidgeRouter().fit(
        x, quality, np.column_stack([np.full(120, 10.0), np.full(120, 0.1)]), ["left", "right"]
    )
    assert dear.select(np.array([2.0, 0.0]), 0.0) == "left"
    assert dear.select(np.array([2.0, 0.0]), 5.0) == "right"
    with pytest.raises(ConfigError, match="not fitted"):
        OfflineRidgeRouter().select(np.zeros(2), 0.0)


# ----------------------------------------------------------------------------- the replay's warm learners


def test_labelled_split_is_seeded_disjoint_and_complete() -> None:
    labelled, heldout = labelled_split(100)
    assert labelled.size == 30 and heldout.size == 70
    assert np.array_equal(np.sort(np.concatenate([labelled, heldout])), np.arange(100))
    again, _ = labelled_split(100)
    assert np.array_equal(labelled, again)
    with pytest.raises(ConfigError, match="fraction"):
        labelled_split(10, 1.0)


def test_warm_learners_are_scored_on_held_out_questions_only(table_dir: Path) -> None:
    env = ReplayEnvironment.from_directory(table_dir, ReplayConfig())
    labelled, heldout = warm_split(env)
    config = ReplayConfig(seeds=2, cost_weights=(0.0, 0.5), cost_weight=0.5, workers=1)
    for learner in ("uniscale_warm", "offline_router"):
        for seed in (0, 1):
            trace = run_warm_learner(env, learner, seed, 0.5, config)
            assert sorted(trace.order.tolist()) == heldout.tolist()
    # Full information on the labelled part: the offline router knows maths needs big, trivia small.
    offline = run_warm_learner(env, "offline_router", 0, 0.5, config)
    assert offline.accuracy == 1.0
    assert offline.cost_usd_per_query < 0.006
    records = outcome_records(env.outcomes, labelled)
    assert len(records) == 2 * labelled.size
    report = replay_dataset("unused", config, env=env)
    policies = report["policies"]
    held = heldout_environment(env)
    assert policies["best_fixed_arm_heldout"]["accuracy"] == pytest.approx(
        float(held.outcomes.quality.mean(axis=0).max())
    )
    assert policies["uniscale_warm"]["n_arms"] == 2
    assert policies["offline_router"]["accuracy"] == 1.0
    assert policies["offline_router"]["aiq"] >= policies["best_fixed_arm_heldout"]["aiq"]
    # RouteLLM's two-model measures for the warm learners use the held-out anchors: big only where needed.
    reduction = report["two_model"]["learners"]["offline_router"]["cost_reduction_at_95pct_strong"]
    assert 0.4 < reduction < 0.6


def test_the_cached_fit_gives_the_same_run_as_a_fresh_fit(table_dir: Path) -> None:
    env = ReplayEnvironment.from_directory(table_dir, ReplayConfig())
    config = ReplayConfig(seeds=1, workers=1)
    warm_module._FITTED.clear()
    first = run_warm_learner(env, "uniscale_warm", 0, 0.0, config)  # fits, then caches
    cached = run_warm_learner(env, "uniscale_warm", 0, 0.0, config)
    warm_module._FITTED.clear()
    refitted = run_warm_learner(env, "uniscale_warm", 0, 0.0, config)
    for trace in (cached, refitted):
        assert np.array_equal(trace.arm, first.arm) and np.array_equal(trace.reward, first.reward)


def test_shared_gsm8k_warm_learners_run_on_held_out_questions(shared_data_dir: Path) -> None:
    """On recorded GSM8K (a seeded subset) both warm learners score the held-out part only, and the
    offline router, fitted with full information, is close to the best fixed arm in hindsight there."""
    config = ReplayConfig(seeds=1, cost_weights=(0.2,), max_questions=400, workers=1)
    env = ReplayEnvironment.from_directory(shared_data_dir / "gsm8k", config)
    warm = run_warm_learner(env, "uniscale_warm", 0, 0.2, config)
    offline = run_warm_learner(env, "offline_router", 0, 0.2, config)
    _, heldout = warm_split(env)
    assert sorted(warm.order.tolist()) == sorted(offline.order.tolist()) == heldout.tolist()
    reference = env.reference_cost[heldout, None]
    fixed_reward = float(
        (env.outcomes.quality[heldout] - 0.2 * env.outcomes.cost_usd[heldout] / reference).mean(0).max()
    )
    assert offline.reward.mean() > fixed_reward - 0.05
    assert 0.0 < warm.accuracy <= 1.0
