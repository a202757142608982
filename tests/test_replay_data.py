"""Outcome-table loading, validation messages, and arms rebuilt from recorded samples (hand-made tables)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from uniscale_lc.replay.data import OUTCOME_COLUMNS, OutcomeTableError, load_outcome_table
from uniscale_lc.replay.recorded_arms import build_recorded_arms

MODELS = {
    "big": {
        "input_usd_per_mtok": 10.0,
        "output_usd_per_mtok": 30.0,
        "params_b": None,
        "price_source": "test",
    },
    "small": {"input_usd_per_mtok": 0.1, "output_usd_per_mtok": 0.2, "params_b": 7, "price_source": "test"},
}
QUESTIONS = [
    {"qid": "q0", "prompt": "What is 1+1?", "gold": "2", "task": "math"},
    {"qid": "q1", "prompt": "What is 2+2?", "gold": "4", "task": "math"},
    {"qid": "q2", "prompt": "Capital of France?", "gold": None, "task": "geo"},
]


def _row(
    qid: str, model: str, method: str, sample: int, answer: str, correct: float, cost: float
) -> list[str]:
    return [qid, model, method, str(sample), answer, str(correct), "10", "5", "1", str(cost)]


# small:cot has 5 samples on q0 and q1 (votes below), 1 on q2; big:direct has one sample everywhere except q2.
ROWS = [
    # q0 answers 3, 2, 2, 2, 5 -> vote(3) = "2" (correct, winner = sample 1), early stop (wave 2) draws 3.
    _row("q0", "small", "cot", 0, "3", 0, 0.001),
    _row("q0", "small", "cot", 1, "2", 1, 0.002),
    _row("q0", "small", "cot", 2, "2", 1, 0.003),
    _row("q0", "small", "cot", 3, "2", 1, 0.004),
    _row("q0", "small", "cot", 4, "5", 0, 0.005),
    # q1 answers 4, 4, 7, 7, 7 -> vote(3) = "4" (correct) after 2 samples; vote(5) = "7" (wrong).
    _row("q1", "small", "cot", 0, "4", 1, 0.001),
    _row("q1", "small", "cot", 1, "4", 1, 0.001),
    _row("q1", "small", "cot", 2, "7", 0, 0.001),
    _row("q1", "small", "cot", 3, "7", 0, 0.001),
    _row("q1", "small", "cot", 4, "7", 0, 0.001),
    _row("q2", "small", "cot", 0, "Paris", 1, 0.001),
    _row("q0", "big", "direct", 0, "2", 1, 0.05),
    _row("q1", "big", "direct", 0, "5", 0, 0.05),
    _row("q2", "big", "reflexion", 0, "Paris", 1, 0.5),
]


def write_table(
    directory: Path,
    rows: list[list[str]] | None = None,
    questions: list[dict] | None = None,
    models: dict | None = None,
    header: tuple[str, ...] = OUTCOME_COLUMNS,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "questions.jsonl").write_text(
        "".join(json.dumps(question) + "\n" for question in (QUESTIONS if questions is None else questions))
    )
    (directory / "models.json").write_text(json.dumps(MODELS if models is None else models))
    lines = [",".join(header)] + [",".join(row) for row in (ROWS if rows is None else rows)]
    with gzip.open(directory / "outcomes.csv.gz", "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    return directory


def test_load_sorts_rows_by_generator_question_sample(tmp_path: Path) -> None:
    table = load_outcome_table(write_table(tmp_path / "toy"))
    assert table.name == "toy"
    assert table.qids == ("q0", "q1", "q2")
    assert [g.name for g in table.generators] == ["big:direct", "big:reflexion", "small:cot"]
    assert table.n_rows == len(ROWS)
    block = table.generator_rows(table.generator_index("small", "cot"))
    assert table.row_question[block].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2]
    assert table.row_sample[block].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0]
    assert table.models["small"].params_b == 7.0
    assert table.golds[2] is None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda rows: rows.append(_row("q9", "big", "direct", 0, "1", 1, 0.1)),
            r"line 16, field 'qid'.*'q9'",
        ),
        (
            lambda rows: rows.append(_row("q0", "huge", "direct", 0, "1", 1, 0.1)),
            r"line 16, field 'model'.*models\.json",
        ),
        (
            lambda rows: rows.append(_row("q0", "big", "direct", 0, "1", 1, 0.1)),
            r"line 16: duplicate row.*sample=0",
        ),
        (
            lambda rows: rows.append(_row("q2", "big", "direct", 0, "1", 1.5, 0.1)),
            r"line 16, field 'correct'",
        ),
        (
            lambda rows: rows.append(_row("q2", "big", "direct", 0, "1", 1, -0.1)),
            r"line 16, field 'cost_usd'",
        ),
        (lambda rows: rows.append(_row("q2", "big", "direct", -1, "1", 1, 0.1)), r"line 16, field 'sample'"),
        (lambda rows: rows.append(["q2", "big"]), r"line 16: expected 10 fields"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path: Path, mutate, message: str) -> None:
    rows = [list(row) for row in ROWS]
    mutate(rows)
    with pytest.raises(OutcomeTableError, match=r"outcomes\.csv\.gz " + message):
        load_outcome_table(write_table(tmp_path / "bad", rows=rows))


def test_bad_header_questions_and_models_are_reported(tmp_path: Path) -> None:
    with pytest.raises(OutcomeTableError, match="line 1: header must be"):
        load_outcome_table(write_table(tmp_path / "a", header=("qid", "model")))
    duplicate = [*QUESTIONS, QUESTIONS[0]]
    with pytest.raises(OutcomeTableError, match=r"questions\.jsonl line 4, field 'qid': duplicate 'q0'"):
        load_outcome_table(write_table(tmp_path / "b", questions=duplicate))
    no_task = [{key: value for key, value in QUESTIONS[0].items() if key != "task"}]
    with pytest.raises(OutcomeTableError, match=r"questions\.jsonl line 1, field 'task': missing"):
        load_outcome_table(write_table(tmp_path / "c", questions=no_task))
    bad_price = {**MODELS, "big": {**MODELS["big"], "input_usd_per_mtok": "ten"}}
    with pytest.raises(OutcomeTableError, match=r"models\.json: model 'big', field 'input_usd_per_mtok'"):
        load_outcome_table(write_table(tmp_path / "d", models=bad_price))
    with pytest.raises(OutcomeTableError, match=r"missing outcomes\.csv\.gz"):
        (tmp_path / "e").mkdir()
        (tmp_path / "e" / "questions.jsonl").write_text("")
        (tmp_path / "e" / "models.json").write_text("{}")
        load_outcome_table(tmp_path / "e")


def _arms(tmp_path: Path, **kwargs):
    return build_recorded_arms(
        load_outcome_table(write_table(tmp_path / "toy")), vote_ladder=(3, 5), **kwargs
    )


def test_single_arms_take_sample_zero_and_mark_missing_questions(tmp_path: Path) -> None:
    outcomes = _arms(tmp_path)
    single = outcomes.arm_index("small:cot|single")
    assert outcomes.quality[:, single].tolist() == [0.0, 1.0, 1.0]
    assert outcomes.cost_usd[:, single].tolist() == [0.001, 0.001, 0.001]
    big = outcomes.arm_index("big:direct|single")
    assert outcomes.available[:, big].tolist() == [True, True, False]
    assert np.isnan(outcomes.quality[2, big])


def test_majority_vote_arms_use_the_live_vote_and_pay_for_every_sample(tmp_path: Path) -> None:
    outcomes = _arms(tmp_path)
    vote3 = outcomes.arm_index("small:cot|majority_vote(n=3)")
    vote5 = outcomes.arm_index("small:cot|majority_vote(n=5)")
    # q0: 3,2,2 -> "2" correct; q1: 4,4,7 -> "4" correct; q2 has one sample: missing.
    assert outcomes.quality[:2, vote3].tolist() == [1.0, 1.0]
    assert outcomes.cost_usd[0, vote3] == pytest.approx(0.006)
    assert outcomes.calls[:2, vote3].tolist() == [3.0, 3.0]
    assert not outcomes.available[2, vote3]
    # n=5: q0 -> "2" (three votes) correct; q1 -> "7" (three votes) wrong.
    assert outcomes.quality[:2, vote5].tolist() == [1.0, 0.0]
    assert outcomes.cost_usd[0, vote5] == pytest.approx(0.015)
    assert outcomes.input_tokens[0, vote5] == 50.0


def test_early_stop_vote_pays_only_for_the_samples_it_drew(tmp_path: Path) -> None:
    outcomes = _arms(tmp_path)
    early3 = outcomes.arm_index("small:cot|majority_vote(n=3,early_stop)")
    # Wave size for n=3 is 2. q0: 3,2 tie -> draw the third: "2" wins, 3 samples.
    # q1: 4,4 after two samples with one left: 2 > 0 + 1, safe -> stop at 2 samples.
    assert outcomes.calls[:2, early3].tolist() == [3.0, 2.0]
    assert outcomes.cost_usd[:2, early3].tolist() == pytest.approx([0.006, 0.002])
    assert outcomes.quality[:2, early3].tolist() == [1.0, 1.0]
    early5 = outcomes.arm_index("small:cot|majority_vote(n=5,early_stop)")
    # Wave size for n=5 is 2. q1: 4,4 (3 left, not safe), 4,4,7,7 (1 left, not safe), all 5 -> "7".
    assert outcomes.calls[1, early5] == 5.0
    assert outcomes.quality[1, early5] == 0.0


def test_composite_methods_are_recorded_arms_and_no_best_of_n_is_invented(tmp_path: Path) -> None:
    outcomes = _arms(tmp_path)
    reflexion = outcomes.arm_index("big:reflexion|reflection(rounds=1)")
    assert outcomes.arms[reflexion].kind == "composite"
    assert outcomes.cost_usd[2, reflexion] == 0.5
    # Its calls are its strategy's expected calls (1 draft + critique and revision), for the cost model.
    assert outcomes.calls[2, reflexion] == 3.0
    assert not any(arm.strategy.kind == "best_of_n" for arm in outcomes.arms)
    assert any("no BestOfN" in note for note in outcomes.notes)
    # Without early stopping only plain votes are built.
    plain = _arms(tmp_path, early_stop=False)
    assert not any("early_stop" in arm_id for arm_id in plain.arm_ids)


def test_restrict_to_common_drops_thin_arms_then_uncovered_questions(tmp_path: Path) -> None:
    outcomes = _arms(tmp_path)
    common = outcomes.restrict_to_common(min_coverage=0.6)
    # Votes and big:direct cover 2/3; reflexion covers 1/3 and is dropped; q2 lacks votes and big:direct.
    assert "big:reflexion|reflection(rounds=1)" not in common.arm_ids
    assert common.qids == ("q0", "q1")
    assert common.available.all()
    assert any("dropped 1 arm" in note for note in common.notes)
    assert any("dropped 1 question" in note for note in common.notes)


def test_subset_keeps_only_the_chosen_questions(tmp_path: Path) -> None:
    table = load_outcome_table(write_table(tmp_path / "toy"))
    subset = table.subset([2, 0])
    assert subset.qids == ("q2", "q0")
    assert subset.n_rows == 1 + 5 + 1 + 1  # q2: small + reflexion; q0: five small samples + big
    outcomes = build_recorded_arms(subset, vote_ladder=(3,))
    assert outcomes.quality[:, outcomes.arm_index("small:cot|single")].tolist() == [1.0, 0.0]


def test_shared_datasets_load_and_build_arms(shared_data_dir: Path) -> None:
    for name in ("gsm8k", "routellm_mmlu", "llmrouter", "routerarena", "reflexion"):
        table = load_outcome_table(shared_data_dir / name)
        outcomes = build_recorded_arms(table)
        assert outcomes.quality.shape == (table.n_questions, len(outcomes.arms))
        assert np.nanmax(outcomes.quality) <= 1.0
        common = outcomes.restrict_to_common()
        assert common.available.all() and common.n_questions > 0
    gsm8k = build_recorded_arms(load_outcome_table(shared_data_dir / "gsm8k"))
    # GPT-4's MoT runs have 3 samples: their votes exist and cost about three samples.
    vote = gsm8k.arm_index("gpt-4:mot_cot1|majority_vote(n=3)")
    single = gsm8k.arm_index("gpt-4:mot_cot1|single")
    ratio = gsm8k.mean_cost_usd()[vote] / gsm8k.mean_cost_usd()[single]
    assert 2.5 < ratio < 3.5
