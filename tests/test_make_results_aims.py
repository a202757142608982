"""Issue 9's aim rows in docs/results.md are computed from the reports, never written by hand."""

from __future__ import annotations

from typing import Any

from script_loader import load_script


def _report(uniscale: float, routing: float, tts: float, tts_arms: int, all_arms: int) -> dict[str, Any]:
    return {
        "policies": {
            "uniscale": {"aiq": uniscale, "n_arms": all_arms},
            "routing_only": {"aiq": routing, "n_arms": 1},
            "tts_only": {"aiq": tts, "n_arms": tts_arms},
            "best_fixed_arm": {"aiq": 0.79},
        },
        "fixed_arms": [{"kind": "single"}, {"kind": "reflection"}],
        "most_accurate_arm": {"margin": None},
    }


def _aim_one(report: dict[str, Any]) -> str:
    rows = load_script("make_results").aims({"data": report}, None, None)
    (row,) = [line for line in rows if line.startswith("| 1. data")]
    return row


def test_tts_comparison_applies_when_tts_only_has_fewer_arms() -> None:
    row = _aim_one(_report(uniscale=0.80, routing=0.78, tts=0.80, tts_arms=3, all_arms=5))
    assert row.endswith("| no |")  # a tie with TTS-only is not "> TTS-only"
    row = _aim_one(_report(uniscale=0.81, routing=0.78, tts=0.80, tts_arms=3, all_arms=5))
    assert row.endswith("| yes |")


def test_tts_comparison_is_void_when_tts_only_is_uniscale_itself() -> None:
    # One model (Reflexion): TTS-only chooses from exactly UniScale's arms, so the two learners are one.
    row = _aim_one(_report(uniscale=0.80, routing=0.78, tts=0.80, tts_arms=2, all_arms=2))
    assert "does not apply" in row and row.endswith("| yes |")
    # The other two halves of the aim still count.
    assert _aim_one(_report(uniscale=0.78, routing=0.78, tts=0.78, tts_arms=2, all_arms=2)).endswith("| no |")
    assert _aim_one(_report(uniscale=0.785, routing=0.78, tts=0.785, tts_arms=2, all_arms=2)).endswith(
        "| no |"
    )


def test_aim_five_row_sets_the_learners_last_quarter_beside_the_arms() -> None:
    report = _report(uniscale=0.80, routing=0.78, tts=0.80, tts_arms=3, all_arms=5)
    report["most_accurate_arm"] = {"margin": 0.06, "arm": "big|single", "n_tasks": 1}
    report["policies"]["uniscale"].update(
        best_arm_share_last_quarter_w0=0.44,
        last_quarter_accuracy_w0=0.614,
        most_accurate_arm_last_quarter_accuracy_w0=0.651,
    )
    rows = load_script("make_results").aims({"data": report}, None, None)
    (row,) = [line for line in rows if line.startswith("| 5. data")]
    assert "44.0%; last-quarter accuracy 0.614 vs that arm's 0.651 on the same questions" in row
    assert row.endswith("| no |")


def test_aim_three_rows_set_the_per_subject_router_beside_the_learners() -> None:
    learners = {
        "uniscale": {"cost_reduction_at_95pct_strong": 0.32},
        "uniscale_warm": {"cost_reduction_at_95pct_strong": 0.61},
        "random": {"cost_reduction_at_95pct_strong": 0.30},
    }
    mmlu = {"n_questions": 100, "two_model": {"learners": learners}}
    bound = {"task_router_hindsight": 0.47, "task_router_heldout": None, "question_oracle": 0.86}
    rows = load_script("make_results").aims({}, mmlu, None, None, bound)
    zero, warm = [line for line in rows if line.startswith("| 3. MMLU")]
    assert "32.0% (random: 30.0%; a per-subject router: 47.0% in hindsight, not reached ranked on" in zero
    assert zero.endswith("| no |") and warm.endswith("| yes |")  # the reference decides nothing
    assert "per-subject" not in "".join(load_script("make_results").aims({}, mmlu, None))


def test_aim_rows_give_the_learners_seed_spread() -> None:
    report = _report(uniscale=0.80, routing=0.78, tts=0.79, tts_arms=3, all_arms=5)
    report["policies"]["uniscale"]["aiq_std"] = 0.004
    assert "| 0.8000 ± 0.0040 vs best fixed 0.7900" in _aim_one(report)
    report["policies"]["uniscale"]["aiq_std"] = 0.0  # one seed: no spread to show
    assert "| 0.8000 vs best fixed 0.7900" in _aim_one(report)


def test_aim_two_row_sets_the_labelled_choice_beside_the_hindsight_one() -> None:
    report = _report(uniscale=0.80, routing=0.78, tts=0.79, tts_arms=3, all_arms=5)
    report["policies"].update(
        uniscale_warm={"aiq": 0.955, "aiq_std": 0.002},
        offline_router={"aiq": 0.958},
        best_fixed_arm_heldout={"aiq": 0.962},
        best_fixed_arm_labelled={"aiq": 0.952},
    )
    rows = load_script("make_results").aims({"data": report}, None, None)
    (row,) = [line for line in rows if line.startswith("| 2. data")]
    assert "0.9550 ± 0.0020 vs 0.9620 and 0.9580 (the arm best on the labelled 30%: 0.9520)" in row
    assert row.endswith("| no |")  # the aim's bar stays the held-out hindsight pick


def test_pool_section_puts_both_uniscale_runs_beside_the_best_fixed_arm() -> None:
    pool = {
        "n_arms": 79,
        "pool": ["a|single", "b|single"],
        "aiq": {"uniscale_all_arms": 0.9486, "uniscale_pool": 0.9529, "best_fixed_arm": 0.9565},
    }
    lines = load_script("make_results").pool_section({"gsm8k": pool}, seeds=5)
    assert "| gsm8k | 79 | 2 | 0.9486 | 0.9529 | 0.9565 |" in lines
    assert "- gsm8k's pool: `a|single`, `b|single`" in lines
    assert "same 5 seed(s)" in "".join(lines)


def test_aim_rows_set_the_full_information_learners_beside_the_bar() -> None:
    report = _report(uniscale=0.80, routing=0.78, tts=0.80, tts_arms=3, all_arms=5)
    # Without the reference rows the aim-1 row says nothing about them.
    assert "full information" not in _aim_one(report) and "no exploration" not in _aim_one(report)
    report["policies"]["full_info_leader"] = {"aiq": 0.7712}
    report["policies"]["full_info_router"] = {
        "aiq": 0.7834,
        "best_arm_share_last_quarter_w0": 0.25,
        "last_quarter_accuracy_w0": 0.6391,
    }
    row = _aim_one(report)
    assert "(no exploration): follow-the-leader 0.7712, per-arm ridge 0.7834" in row
    assert row.endswith("| no |")  # context only: the aim still compares UniScale with the best fixed arm
    report["most_accurate_arm"] = {"margin": 0.06, "arm": "big|single", "n_tasks": 1}
    report["policies"]["uniscale"].update(best_arm_share_last_quarter_w0=0.44)
    rows = load_script("make_results").aims({"data": report}, None, None)
    (five,) = [line for line in rows if line.startswith("| 5. data")]
    assert "with full information, the per-arm ridge router: 25.0%, last-quarter accuracy 0.639" in five
