"""The replay protocol: bandit feedback, determinism, hindsight baselines, drift, report and CLI."""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

import uniscale_lc.replay.runner as runner_module
from uniscale_lc.costs import CostModel
from uniscale_lc.errors import ConfigError
from uniscale_lc.replay import (
    POLICY_KEYS,
    ReplayConfig,
    ReplayEnvironment,
    build_report,
    question_order,
    replay_dataset,
    run_learner,
    run_sweep,
)
from uniscale_lc.replay.cli import add_subparser, run
from uniscale_lc.replay.data import OUTCOME_COLUMNS
from uniscale_lc.replay.runner import DriftEvent, PredictedCosts, hindsight_choice

N_QUESTIONS = 60


def write_two_task_table(directory: Path) -> Path:
    """Maths questions: only `big` is right; trivia: both are right, `small` is 100x cheaper.

    `small:cot` also has 3 samples, so majority-vote arms exist.
    """
    directory.mkdir(parents=True, exist_ok=True)
    questions, rows = [], []
    for index in range(N_QUESTIONS):
        maths = index % 2 == 0
        qid = f"q{index:03d}"
        prompt = (
            f"Compute {index} * 7 + 3 and give the number."
            if maths
            else f"Which city is capital number {index}?"
        )
        questions.append({"qid": qid, "prompt": prompt, "gold": "x", "task": "maths" if maths else "trivia"})
        rows.append([qid, "big", "direct", "0", "a", "1", "100", "50", "1", "0.01"])
        for sample in range(3):
            correct = "0" if maths else "1"
            rows.append(
                [qid, "small", "cot", str(sample), "b" if maths else "a", correct, "100", "50", "1", "0.0001"]
            )
    (directory / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    models = {
        "big": {
            "input_usd_per_mtok": 50.0,
            "output_usd_per_mtok": 100.0,
            "params_b": None,
            "price_source": "t",
        },
        "small": {"input_usd_per_mtok": 0.5, "output_usd_per_mtok": 1.0, "params_b": 7, "price_source": "t"},
    }
    (directory / "models.json").write_text(json.dumps(models))
    with gzip.open(directory / "outcomes.csv.gz", "wt") as handle:
        handle.write("\n".join([",".join(OUTCOME_COLUMNS)] + [",".join(row) for row in rows]) + "\n")
    return directory


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_two_task_table(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="module")
def toy_env(toy_dir: Path) -> ReplayEnvironment:
    return ReplayEnvironment.from_directory(toy_dir, ReplayConfig(vote_ladder=(3,)))


def test_environment_arms_match_live_arm_ids(toy_env: ReplayEnvironment) -> None:
    assert toy_env.outcomes.arm_ids == (
        "big:direct|single",
        "small:cot|single",
        "small:cot|majority_vote(n=3)",
        "small:cot|majority_vote(n=3,early_stop)",
    )
    space = toy_env.arm_space(range(4))
    assert space.ids == toy_env.outcomes.arm_ids
    assert space["big:direct|single"].model.input_usd_per_mtok == 50.0
    assert toy_env.features.shape == (N_QUESTIONS, 64)
    # routing_only: the two Single arms; tts_only: the model with most arms (small).
    assert toy_env.learner_columns("routing_only") == (0, 1)
    assert toy_env.tts_model() == "small"
    assert toy_env.learner_columns("tts_only") == (1, 2, 3)


def _spy_on_updates(monkeypatch) -> list[list[tuple[str, float]]]:
    """Every (arm id, reward) the replay's policy learns, grouped by the decision (step) it followed."""
    steps: list[list[tuple[str, float]]] = []
    original = runner_module.make_policy

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def bind(self, space, dim):
            self.inner.bind(space, dim)

        def select(self, x, arms=None, penalty=None):
            steps.append([])
            return self.inner.select(x, arms, penalty)

        def update(self, decision, reward):
            steps[-1].append((decision.arm_id, reward))
            self.inner.update(decision, reward)

    monkeypatch.setattr(runner_module, "make_policy", lambda *a: Spy(original(*a)))
    return steps


def test_policy_sees_only_the_chosen_arms_quality(toy_env: ReplayEnvironment, monkeypatch) -> None:
    steps = _spy_on_updates(monkeypatch)
    order = question_order(N_QUESTIONS, 3)
    trace = run_learner(toy_env, "uniscale", 3, 0.2, order, ReplayConfig(side_observations=False))
    seen = [update for step in steps for update in step]
    assert len(seen) == N_QUESTIONS
    for step, (arm_id, value) in enumerate(seen):
        column = toy_env.outcomes.arm_index(arm_id)
        assert trace.arm[step] == column
        assert value == toy_env.outcomes.quality[order[step], column]


def test_side_observations_teach_exactly_the_implied_same_answer_arms(
    toy_env: ReplayEnvironment, monkeypatch
) -> None:
    """After each pull, the extra updates are the same model's arms its samples determine and agree with."""
    seen = _spy_on_updates(monkeypatch)
    outcomes = toy_env.outcomes
    order = question_order(N_QUESTIONS, 5)
    trace = run_learner(toy_env, "random", 5, 0.0, order, ReplayConfig(side_observations=True))  # every kind
    side_total = 0
    for step, updates in enumerate(seen):
        question, column = order[step], int(trace.arm[step])
        (own_id, own_value), *side = updates
        assert own_id == outcomes.arm_ids[column]
        expected = {
            outcomes.arm_ids[other]
            for other in range(len(outcomes.arms))
            if other != column
            and outcomes.arms[other].generator == outcomes.arms[column].generator
            and outcomes.calls[question, other] <= outcomes.calls[question, column]
            and outcomes.answers[question, other] == outcomes.answers[question, column]
        }
        assert {arm_id for arm_id, _ in side} == expected
        for arm_id, value in side:
            assert value == own_value == outcomes.quality[question, outcomes.arm_index(arm_id)]
        side_total += len(side)
    # small:cot's vote of 3 implies its Single (sample 0) and, where it stopped early, the early vote.
    assert side_total > 0


def test_replay_is_deterministic_under_a_seed(toy_env: ReplayEnvironment) -> None:
    config = ReplayConfig()
    first = run_learner(toy_env, "uniscale", 1, 0.3, question_order(N_QUESTIONS, 1), config)
    again = run_learner(toy_env, "uniscale", 1, 0.3, question_order(N_QUESTIONS, 1), config)
    other = question_order(N_QUESTIONS, 2)
    assert np.array_equal(first.arm, again.arm) and np.array_equal(first.reward, again.reward)
    assert not np.array_equal(question_order(N_QUESTIONS, 1), other)
    for learner in ("epsilon_greedy", "random"):
        a = run_learner(toy_env, learner, 4, 0.3, other, config)
        b = run_learner(toy_env, learner, 4, 0.3, other, config)
        assert np.array_equal(a.arm, b.arm)


def test_geometric_mean_cost_reference_charges_the_dear_arm_more(toy_env: ReplayEnvironment) -> None:
    """`big` costs 100x `small`: against their geometric mean it pays 10x the weight, so it is picked less."""
    order = question_order(N_QUESTIONS, 0)
    big = next(c for c, arm in enumerate(toy_env.outcomes.arms) if arm.arm_id == "big:direct|single")
    picks = {
        reference: int(
            (
                run_learner(toy_env, "uniscale", 0, 0.3, order, ReplayConfig(cost_reference=reference)).arm
                == big
            ).sum()
        )
        for reference in ("max", "geomean")
    }
    assert picks["geomean"] < picks["max"] / 2, picks
    with pytest.raises(ConfigError, match="cost_reference"):
        ReplayConfig(cost_reference="median")


def test_rewards_use_the_per_question_reference_cost(toy_env: ReplayEnvironment) -> None:
    trace = run_learner(toy_env, "random", 0, 0.5, question_order(N_QUESTIONS, 0), ReplayConfig())
    reference = toy_env.reference_cost[trace.order]
    assert np.allclose(trace.reward, trace.quality - 0.5 * trace.cost_usd / reference)


def test_cached_cost_predictions_equal_the_live_cost_model(toy_env: ReplayEnvironment) -> None:
    space = toy_env.arm_space(range(4))
    live, cached_model = CostModel(space), CostModel(space)
    cached = PredictedCosts(cached_model, space)
    rng = np.random.default_rng(0)
    for step in range(40):
        arm_id = space.ids[int(rng.integers(4))]
        prompt = float(rng.integers(1, 400))
        assert np.allclose(cached.predict(prompt, space.ids), live.predict(prompt).cost_usd, rtol=1e-12)
        usage = {"input_tokens": 500.0 + step, "output_tokens": 90.0 + step, "calls": 3.0, "latency_s": 0.0}
        for model in (live, cached_model):
            model.observe(arm_id, prompt, **usage)
        cached.invalidate(arm_id)


def test_oracle_takes_the_cheapest_correct_arm_and_best_fixed_the_best_mean(
    toy_env: ReplayEnvironment,
) -> None:
    oracle = hindsight_choice(toy_env, 0.0, per_question=True)
    tasks = np.array(toy_env.outcomes.tasks)
    assert (oracle[tasks == "maths"] == 0).all()  # only big is right
    chosen_trivia = oracle[tasks == "trivia"]
    assert (toy_env.outcomes.cost_usd[tasks == "trivia", chosen_trivia] == 0.0001).all()
    assert hindsight_choice(toy_env, 0.0, per_question=False).tolist() == [0]  # accuracy 1.0
    # With cost counting fully, the 100x cheaper arm right half the time wins: 0.5 > 1 - 1.0.
    assert toy_env.outcomes.arms[int(hindsight_choice(toy_env, 1.0, per_question=False)[0])].model == "small"


def test_learner_beats_random_on_a_learnable_split(toy_env: ReplayEnvironment) -> None:
    config = ReplayConfig()
    rewards = {
        learner: np.mean(
            [
                run_learner(toy_env, learner, s, 0.5, question_order(N_QUESTIONS, s), config)
                .reward[-30:]
                .mean()
                for s in range(3)
            ]
        )
        for learner in ("uniscale", "random")
    }
    assert rewards["uniscale"] > rewards["random"]


def test_price_change_and_outage_events(toy_env: ReplayEnvironment) -> None:
    order = question_order(N_QUESTIONS, 0)
    config = ReplayConfig()
    priced = run_learner(
        toy_env, "random", 0, 0.2, order, config, events=[DriftEvent(30, "price", "small", 10.0)]
    )
    plain = run_learner(toy_env, "random", 0, 0.2, order, config)
    assert np.array_equal(priced.arm, plain.arm)  # random ignores prices: same choices, dearer small arms
    small = np.array([toy_env.arm_models[a] == "small" for a in priced.arm])
    after = np.arange(N_QUESTIONS) >= 30
    assert np.allclose(priced.cost_usd[small & after], 10 * plain.cost_usd[small & after])
    assert np.allclose(priced.cost_usd[~(small & after)], plain.cost_usd[~(small & after)])
    events = [DriftEvent(20, "remove", "big"), DriftEvent(40, "add", "big")]
    outage = run_learner(toy_env, "uniscale", 0, 0.2, order, config, events=events)
    assert not any(toy_env.arm_models[a] == "big" for a in outage.arm[20:40])


def test_report_has_every_policy_and_the_documented_fields(toy_env: ReplayEnvironment) -> None:
    config = ReplayConfig(
        seeds=2, cost_weights=(0.0, 0.5, 2.0), cost_weight=0.5, workers=1, drift=("task_blocks",)
    )
    report = replay_dataset("unused", config, env=toy_env)
    json.dumps(report, allow_nan=False)
    assert report["dataset"] == toy_env.name
    assert set(POLICY_KEYS) <= set(report["policies"])
    for key in POLICY_KEYS:
        entry = report["policies"][key]
        assert {"aiq", "cost_at_95pct_best", "accuracy", "cost_usd_per_query", "frontier"} <= set(entry)
        assert [point["cost_weight"] for point in entry["frontier"]] == [0.0, 0.5, 2.0]
        assert 0.0 <= entry["aiq"] <= 1.0
    assert report["policies"]["oracle"]["accuracy"] == 1.0
    assert report["policies"]["best_fixed_arm"]["arm"] in toy_env.outcomes.arm_ids
    # Best arm by accuracy: big (1.0 at $0.01). The best-fixed frontier also holds small (0.5 at $0.0001),
    # so mixing reaches 0.95 at 0.0001 + 0.9 * 0.0099 = 0.00901 on the hull: 0.901 of big's cost.
    assert report["policies"]["best_fixed_arm"]["cost_at_95pct_best"] == pytest.approx(0.901)
    drift = report["drift"]["task_blocks"]
    assert drift["changes_per_seed"] == 1 and "continuing_reward" in drift["mean"]


def test_sweep_in_worker_processes_matches_a_single_process(toy_env: ReplayEnvironment) -> None:
    config = ReplayConfig(
        seeds=2, cost_weights=(0.1,), cost_weight=0.1, learners=("uniscale", "random"), workers=1
    )
    serial = run_sweep(toy_env, config)
    parallel = run_sweep(toy_env, ReplayConfig(**{**config.__dict__, "workers": 2}))
    assert serial.keys() == parallel.keys()
    for key in serial:
        assert np.array_equal(serial[key].arm, parallel[key].arm)
    report = build_report(toy_env, config, serial)
    assert report["policies"]["uniscale"]["aiq_std"] >= 0.0


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="uniscale-lc")
    add_subparser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_prints_a_table_and_writes_json(toy_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report.json"
    args = _parse(
        ["replay", str(toy_dir), "--seeds", "1", "--cost-weight", "0.5", "--json", str(out), "--workers", "1"]
    )
    assert args.func is run
    assert run(args) == 0
    printed = capsys.readouterr().out
    assert "uniscale" in printed and "best_fixed_arm" in printed
    report = json.loads(out.read_text())
    assert report["settings"]["cost_weights"] == [0.5]
    assert set(POLICY_KEYS) <= set(report["policies"])


def test_cli_reports_bad_input_with_exit_code_2(tmp_path: Path, capsys) -> None:
    assert run(_parse(["replay", str(tmp_path / "missing")])) == 2
    assert "not a directory" in capsys.readouterr().err
    assert run(_parse(["replay", str(tmp_path), "--arms", "nothing*"])) == 2


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--seeds", "0"], "--seeds"),
        (["--learners", "nope"], "--learners"),
        (["--tag-buckets", "99999"], "--tag-buckets"),
    ],
)
def test_cli_errors_name_the_flag_not_the_config_field(
    toy_dir: Path, argv: list[str], flag: str, capsys
) -> None:
    assert run(_parse(["replay", str(toy_dir), *argv])) == 2
    error = capsys.readouterr().err
    assert f"uniscale-lc replay: {flag}: " in error and "ReplayConfig." not in error


def test_shared_datasets_replay_small(shared_data_dir: Path) -> None:
    """Every shared dataset loads and replays end to end (a seeded subset, one seed, three weights)."""
    config = ReplayConfig(
        seeds=1, cost_weights=(0.0, 0.2, 1.0), max_questions=150, workers=1, drift=("outage",)
    )
    for name in ("gsm8k", "routellm_mmlu", "llmrouter", "routerarena", "reflexion"):
        report = replay_dataset(shared_data_dir / name, config)
        assert report["n_questions"] > 50, name
        for key in POLICY_KEYS:
            assert 0.0 <= report["policies"][key]["accuracy"] <= 1.0
        assert report["policies"]["oracle"]["accuracy"] >= report["policies"]["best_fixed_arm"]["accuracy"]
        if name == "routellm_mmlu":
            assert report["two_model"]["strong_arm"].startswith("gpt-4-1106-preview")


def test_a_sweep_runs_on_one_blas_thread_and_restores_the_setting_after(toy_env: ReplayEnvironment) -> None:
    from threadpoolctl import threadpool_info

    def blas_threads() -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    before = blas_threads()
    if not before:
        pytest.skip("numpy is linked to no BLAS that threadpoolctl can see")
    seen: list[list[int]] = []
    config = ReplayConfig(seeds=1, cost_weights=(0.0,), learners=("uniscale",), workers=1, vote_ladder=(3,))
    run_sweep(toy_env, config, progress=lambda done: seen.append(blas_threads()))
    assert seen and all(threads == [1] * len(before) for threads in seen)
    assert blas_threads() == before
