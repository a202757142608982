"""Pure aggregation: answer extraction, majority vote, early stopping that never changes the answer."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uniscale_lc.strategies.aggregate import (
    critique_approves,
    early_stop_vote,
    extract_boxed,
    extract_choice,
    extract_number,
    extract_text,
    get_extractor,
    leader_is_safe,
    majority_vote,
    mean_logprob,
    parse_judge_score,
    pick_best,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The total is 1,000 apples.", "1000"),
        ("1000.0", "1000"),
        ("So the answer is 3/4.", "0.75"),
        ("half: 1/2 or 0.5", "0.5"),
        ("It drops to -7 degrees", "-7"),
        ("step 1: 2+2=4\n#### 42", "42"),
        ("#### -3,500", "-3500"),
        ("We get 12 then 15. Therefore, the answer is 18, not 20.", "18"),
        ("x = \\boxed{\\frac{7}{2}} (from 3 and 4)", "2"),
        ("\\boxed{128}", "128"),
        ("no numbers here", None),
        ("answer: 1/0", None),
        ("a .5 chance", "0.5"),
    ],
)
def test_extract_number(text, expected):
    assert extract_number(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is (B).", "B"),
        ("answer: C", "C"),
        ("I think option D is right", "D"),
        ("A) no\nB) yes\n\nC", "C"),
        ("Between (A) and (C) I pick (C)", "C"),
        ("The answer is a prime number, so (C)", "C"),  # the article "a" is not choice A
        ("nothing to pick", None),
    ],
)
def test_extract_choice(text, expected):
    assert extract_choice(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\boxed{42}", "42"),
        ("so \\boxed{\\frac{1}{\\sqrt{2}}} done", "\\frac{1}{\\sqrt{2}}"),
        ("first \\boxed{1}, finally \\boxed{ {a}{b} }", "{a}{b}"),
        ("\\boxed{unbalanced", None),
        ("\\boxed{}", None),
        ("no box", None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


def test_extract_text_and_get_extractor():
    assert extract_text("  Paris.  ") == "paris"
    assert extract_text("The   Eiffel\nTower!") == "the eiffel tower"
    assert extract_text(" ?! ") is None
    assert get_extractor("number") is extract_number
    custom = str.upper
    assert get_extractor(custom) is custom
    with pytest.raises(ValueError, match="extractor: unknown 'roman'"):
        get_extractor("roman")


def test_majority_vote_counts_ties_and_empties():
    result = majority_vote(["4", None, "5", "4", "", "5"])
    assert result.votes == {"4": 2, "5": 2}
    assert result.answer == "4" and result.winner_index == 0  # tie: the answer seen first
    assert majority_vote(["5", "4", "4", "5"]).answer == "5"
    assert majority_vote(["1", "2", "2"]).winner_index == 1
    nothing = majority_vote([None, "", None])
    assert nothing.answer is None and nothing.winner_index == 0 and nothing.samples_used == 3
    assert majority_vote([]).answer is None


def test_leader_is_safe():
    assert leader_is_safe({"a": 3}, 2)
    assert not leader_is_safe({"a": 3, "b": 1}, 2)
    assert leader_is_safe({"a": 4, "b": 1}, 2)
    assert leader_is_safe({}, 0) and not leader_is_safe({}, 1)


ANSWERS = st.lists(st.one_of(st.none(), st.sampled_from(["1", "2", "3", "4"])), min_size=1, max_size=30)


@settings(max_examples=400, deadline=None)
@given(ANSWERS, st.integers(1, 30), st.integers(1, 12))
def test_early_stop_vote_always_agrees_with_the_full_vote(answers, n, wave_size):
    full = majority_vote(answers[:n])
    early = early_stop_vote(answers, n, wave_size)
    assert early.answer == full.answer
    assert early.winner_index == full.winner_index
    assert early.samples_used <= min(n, len(answers))
    assert early.samples_used == min(n, len(answers)) or leader_is_safe(
        early.votes, min(n, len(answers)) - early.samples_used
    )


def test_early_stop_saves_samples_on_a_clear_majority():
    result = early_stop_vote(["7"] * 9, n=9, wave_size=3)
    assert result.answer == "7" and result.samples_used == 6  # 6 votes > 0 + 3 remaining
    with pytest.raises(ValueError):
        early_stop_vote(["1"], n=0, wave_size=1)


def test_pick_best_mean_logprob_judge_and_critique():
    assert pick_best([0.1, 0.9, 0.9]) == 1
    assert pick_best([math.nan, -math.inf, -5.0]) == 2
    assert pick_best([math.nan]) == 0
    assert mean_logprob([-1.0, -3.0, math.nan]) == -2.0
    assert mean_logprob([]) == -math.inf
    assert parse_judge_score("Score: 10", 10) == 1.0
    assert parse_judge_score("rating = 1", 10) == 0.0
    assert parse_judge_score("I'd say 4 out of 7", 7) == pytest.approx(0.5)
    assert parse_judge_score("Score: 99", 10) == 1.0
    assert math.isnan(parse_judge_score("no idea", 10))
    assert critique_approves("Looks right. APPROVED")
    assert critique_approves("no errors found")
    assert not critique_approves("The second step is wrong; fix it.")
