"""The demo: the problem generator, the simulated pool, and a small end-to-end run that must show learning."""

from __future__ import annotations

import argparse
import os
import random
import threading
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from uniscale_lc.client import ModelClient, RetryPolicy
from uniscale_lc.demo.pool import DEFAULT_PROFILES, ProblemRegistry, SimulatedPool, worked_solution
from uniscale_lc.demo.problems import DIFFICULTIES, apply_step, generate_problems
from uniscale_lc.demo.run import DemoReport, add_subparser, main, run, run_demo
from uniscale_lc.strategies.aggregate import extract_number

# ---------------------------------------------------------------------------------------------- problems


def test_problems_are_deterministic_per_seed_and_differ_across_seeds() -> None:
    first = generate_problems(50, seed=3)
    again = generate_problems(50, seed=3)
    other = generate_problems(50, seed=4)
    assert first == again
    assert [p.question for p in first] != [p.question for p in other]
    # A longer list starts with the shorter one: callers can grow a workload without changing its head.
    assert generate_problems(80, seed=3)[:50] == first


def test_problem_answers_follow_their_steps_and_difficulty_sets_step_count() -> None:
    problems = generate_problems(300, seed=0)
    assert {p.difficulty for p in problems} == set(DIFFICULTIES)
    assert len({p.question for p in problems}) == len(problems)
    for problem in problems:
        assert len(problem.steps) == problem.difficulty
        value = problem.start
        for step in problem.steps:
            if step.op == "div":  # the story splits things equally: divisions are exact
                assert value % step.operand == 0, problem.question
            value = apply_step(value, step.op, step.operand)
            assert value >= 1, problem.question
            assert step.sentence in problem.question
        assert value == problem.answer
        assert problem.question.endswith("have now?")
        assert f"has {problem.start} " in problem.question


def test_harder_problems_use_larger_numbers() -> None:
    problems = generate_problems(500, seed=1)
    mean_start = {
        d: sum(p.start for p in problems if p.difficulty == d) / sum(p.difficulty == d for p in problems)
        for d in DIFFICULTIES
    }
    assert all(mean_start[d] < mean_start[d + 1] for d in DIFFICULTIES[:-1]), mean_start


def test_problem_generator_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="difficulties"):
        generate_problems(3, difficulties=[6])
    with pytest.raises(ValueError, match="count"):
        generate_problems(-1)
    assert [p.difficulty for p in generate_problems(20, difficulties=[2])] == [2] * 20


# ---------------------------------------------------------------------------------------------- pool, pure


def test_worked_solution_ends_with_the_answer_and_a_slip_makes_it_wrong() -> None:
    problems = generate_problems(200, seed=2)
    for problem in problems:
        text, value = worked_solution(problem, True, random.Random(0))
        assert value == problem.answer
        assert extract_number(text) == str(problem.answer)
        wrong_text, wrong = worked_solution(problem, False, random.Random(problem.id))
        assert wrong != problem.answer
        assert extract_number(wrong_text) == str(wrong)
        assert wrong_text.endswith(f"The answer is {wrong}.")


def test_registry_finds_a_question_inside_a_longer_prompt() -> None:
    problems = generate_problems(30, seed=5)
    registry = ProblemRegistry(problems)
    assert len(registry) == 30
    target = problems[17]
    prompt = f"Solve the problem step by step.\n\nQuestion: {target.question}\nEnd with 'The answer is N.'"
    assert registry.find(prompt) == target
    assert registry.find("What is the capital of France?") is None


def test_default_profiles_order_price_and_accuracy() -> None:
    prices = [p.output_usd_per_mtok for p in DEFAULT_PROFILES]
    assert prices == sorted(prices) and len(set(prices)) == len(prices)
    for difficulty in DIFFICULTIES:
        accuracy = [p.p_correct(difficulty) for p in DEFAULT_PROFILES]
        assert accuracy == sorted(accuracy)
    for profile in DEFAULT_PROFILES:
        assert list(profile.accuracy) == sorted(profile.accuracy, reverse=True)


# ---------------------------------------------------------------------------------------------- pool, live


@pytest.fixture
def client() -> ModelClient:
    return ModelClient(retry=RetryPolicy(max_attempts=1), seed=0)


def _pool_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("openai-server-")}


@pytest.mark.timeout(60)
def test_pool_answers_over_http_with_n_samples_in_one_call(client: ModelClient) -> None:
    problems = generate_problems(40, seed=7)
    before = _pool_threads()
    with SimulatedPool(problems, seed=1, latency_scale=0.0) as pool:
        specs = pool.specs()
        assert [s.name for s in specs] == ["sim-small", "sim-medium", "sim-large"]
        assert all(s.api_base == pool.api_base and s.model.startswith("hosted_vllm/") for s in specs)
        problem = next(p for p in problems if p.difficulty >= 4)
        messages = [{"role": "user", "content": f"Question: {problem.question}"}]
        completion = client.complete(pool.spec("sim-small"), messages, n=5)
        assert len(completion.texts) == 5
        assert pool.server.request_count("sim-small") == 1
        assert pool.server.last_request("sim-small")["n"] == 5
        assert all(text.endswith(".") and "The answer is" in text for text in completion.texts)
        # Prices are the spec's own: cost is tokens times the made-up per-million rates.
        usage = completion.usage
        expected = (usage["input_tokens"] * 0.10 + usage["output_tokens"] * 0.40) / 1e6
        assert usage["cost_usd"] == pytest.approx(expected)
        # A repeated request draws new samples (a second wave of a vote must not copy the first) ...
        again = client.complete(pool.spec("sim-small"), messages, n=5)
        assert again.texts != completion.texts
        unknown = client.complete(pool.spec("sim-large"), [{"role": "user", "content": "hello"}])
        assert "simulated" in unknown.texts[0] and extract_number(unknown.texts[0]) == "0"
        # ... until a new policy run starts: then the pool answers as it did the first time.
        pool.new_run()
        assert client.complete(pool.spec("sim-small"), messages, n=5).texts == completion.texts
    assert _pool_threads() == before
    # A fresh pool with the same seed repeats the run exactly.
    with SimulatedPool(problems, seed=1, latency_scale=0.0) as pool:
        assert client.complete(pool.spec("sim-small"), messages, n=5).texts == completion.texts


@pytest.mark.timeout(120)
def test_pool_accuracy_tracks_profiles_and_majority_vote_helps_the_medium_model(client: ModelClient) -> None:
    problems = [p for p in generate_problems(400, seed=11) if p.difficulty in (3, 4)][:120]
    with SimulatedPool(problems, seed=0, latency_scale=0.0) as pool:
        spec = pool.spec("sim-medium")
        single_correct = vote_correct = 0
        for problem in problems:
            texts = client.complete(spec, [{"role": "user", "content": problem.question}], n=5).texts
            answers = [extract_number(text) for text in texts]
            single_correct += answers[0] == str(problem.answer)
            top = max(set(answers), key=lambda a: (answers.count(a), -answers.index(a)))
            vote_correct += top == str(problem.answer)
    profile = DEFAULT_PROFILES[1]
    expected_single = sum(profile.p_correct(p.difficulty) for p in problems) / len(problems)
    # 120 Bernoulli draws around p ~ 0.67: 4 standard deviations is about 0.17.
    assert abs(single_correct / len(problems) - expected_single) < 0.17
    assert vote_correct >= single_correct + 12, (single_correct, vote_correct)


# ---------------------------------------------------------------------------------------------- the demo


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory: pytest.TempPathFactory) -> DemoReport:
    plot = tmp_path_factory.mktemp("demo") / "demo.png"
    return run_demo(requests=120, seed=0, plot_path=str(plot), show_progress=False)


@pytest.mark.timeout(300)
def test_demo_compares_uniscale_with_every_fixed_arm(demo_report: DemoReport) -> None:
    names = {result.name for result in demo_report.fixed_arms}
    assert names == {
        f"{model}|{strategy}"
        for model in ("sim-small", "sim-medium", "sim-large")
        for strategy in ("single", "majority_vote(n=5)")
    }
    assert demo_report.uniscale.requests == 120
    assert all(result.requests == 120 for result in demo_report.fixed_arms)
    # Every answer was scored and costed: arms are known and costs positive.
    assert all(o.arm_id in names and o.cost_usd > 0 for o in demo_report.uniscale.outcomes)
    for result in demo_report.fixed_arms:
        assert {o.arm_id for o in result.outcomes} == {result.name}
    table = demo_report.table()
    assert all(name in table for name in names) and "UniScale" in table
    summary = demo_report.summary()
    assert summary.startswith("SIMULATED model pool")
    assert demo_report.to_dict()["simulated"] is True


@pytest.mark.timeout(300)
def test_fixed_arms_meet_the_answers_uniscale_met(demo_report: DemoReport) -> None:
    """Like for like: wherever UniScale chose an arm, that fixed arm's run got the same answer at the same cost."""
    fixed = {result.name: result.outcomes for result in demo_report.fixed_arms}
    for index, outcome in enumerate(demo_report.uniscale.outcomes):
        twin = fixed[outcome.arm_id][index]
        assert twin.problem_id == outcome.problem_id
        assert (twin.correct, twin.cost_usd) == (outcome.correct, pytest.approx(outcome.cost_usd)), outcome


@pytest.mark.timeout(300)
def test_a_demo_run_repeats_exactly(demo_report: DemoReport) -> None:
    """Same seed, same report: feedback is applied in request order after each chunk, not as answers land."""
    again = run_demo(requests=120, seed=0, show_progress=False)
    assert again.uniscale.outcomes == demo_report.uniscale.outcomes
    assert [r.outcomes for r in again.fixed_arms] == [r.outcomes for r in demo_report.fixed_arms]


@pytest.mark.timeout(300)
def test_demo_shows_learning(demo_report: DemoReport) -> None:
    uni = demo_report.uniscale
    cheapest, dearest = demo_report.cheapest_arm, demo_report.dearest_arm
    assert cheapest.name == "sim-small|single" and dearest.name == "sim-large|majority_vote(n=5)"
    # Learning, not luck: far cheaper than always running the dearest arm, far more accurate than the cheapest.
    assert uni.total_cost_usd < 0.5 * dearest.total_cost_usd, (uni.total_cost_usd, dearest.total_cost_usd)
    assert uni.accuracy > cheapest.accuracy + 0.15, (uni.accuracy, cheapest.accuracy)
    # Contextual: once learnt, hard problems get dearer arms than easy ones.
    half = uni.outcomes[len(uni.outcomes) // 2 :]
    easy = [o.cost_usd for o in half if o.difficulty <= 2]
    hard = [o.cost_usd for o in half if o.difficulty >= 4]
    assert easy and hard
    assert sum(hard) / len(hard) > 1.5 * sum(easy) / len(easy), (easy, hard)


def test_demo_plot_is_written_when_matplotlib_is_installed(demo_report: DemoReport) -> None:
    pytest.importorskip("matplotlib")
    assert demo_report.plot_path is not None
    assert Path(demo_report.plot_path).stat().st_size > 10_000


@pytest.mark.timeout(120)
def test_demo_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--requests", "12", "--seed", "3", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "simulated requests" not in err  # --no-progress: no progress at all
    assert "SIMULATED model pool" in out and "sim-large|majority_vote(n=5)" in out
    assert main(["--requests", "1", "--no-progress"]) == 2


@pytest.mark.timeout(120)
def test_demo_progress_is_plain_lines_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--requests", "12", "--seed", "3"]) == 0  # capsys' stderr is no terminal
    err = capsys.readouterr().err
    assert "\r" not in err
    assert "simulated requests: 84/84 req (100%)" in err  # 12 x (UniScale + 6 fixed arms), closing line


def test_demo_subcommand_registers_on_a_parser() -> None:
    parser = argparse.ArgumentParser()
    add_subparser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo", "--requests", "50", "--seed", "2", "--plot", "x.png"])
    assert (args.requests, args.seed, args.plot, args.func) == (50, 2, "x.png", run)


def _result(name: str, correct_first: list[bool], correct_last: list[bool], cost_last: float) -> Any:
    from uniscale_lc.demo.run import Outcome, PolicyResult

    first = [Outcome(i, 1, name, c, 0.5) for i, c in enumerate(correct_first)]
    last = [Outcome(100 + i, 1, name, c, cost_last) for i, c in enumerate(correct_last)]
    return PolicyResult(name, tuple(first + last))


def test_the_console_compares_the_last_half_like_with_like() -> None:
    """Last-half accuracy and cost of every policy, the best fixed arm by reward, and arms that dominate."""
    uni = _result("UniScale (LinUCB)", [False] * 10, [True] * 9 + [False], 0.002)
    cheap = _result("small|single", [True] * 10, [True] * 6 + [False] * 4, 0.001)
    good = _result("large|single", [True] * 10, [True] * 10, 0.0015)  # dominates UniScale in the last half
    dear = _result("large|vote", [True] * 10, [True] * 10, 0.01)
    report = DemoReport(requests=20, seed=0, uniscale=uni, fixed_arms=[cheap, good, dear], wall_s=1.0)
    assert report.best_fixed_arm_last_half.name == "large|single"
    assert [r.name for r in report.dominating_arms()] == ["large|single"]
    assert not report.within_a_point_of_best_fixed()
    summary = report.summary()
    assert "90.0 % at 2.0000" in summary and "large|single" in summary.split("both accuracy and cost")[1]
    assert "last half: accuracy" in report.table()
    # Matching the best arm's accuracy for less cost meets the aim.
    uni_good = _result("UniScale (LinUCB)", [False] * 10, [True] * 10, 0.0014)
    report = DemoReport(requests=20, seed=0, uniscale=uni_good, fixed_arms=[cheap, good, dear], wall_s=1.0)
    assert report.within_a_point_of_best_fixed() and report.dominating_arms() == []
