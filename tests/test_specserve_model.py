"""Goodput model against hand-computed cases; planner properties (hypothesis); simulator and CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uniscale_lc.errors import ConfigError
from uniscale_lc.specserve import cli
from uniscale_lc.specserve.goodput import (
    adaptive_verify,
    choose_k,
    expected_accepted_tokens,
    extend_survival,
    goodput_curve,
    smartspec_accepted_length,
    step_time_ms,
    survival_from_conditional,
)
from uniscale_lc.specserve.planner import (
    SpecPlan,
    merge_ranges,
    plan,
    speculative_config,
    static_goodput,
    tail_tpot_curve,
)
from uniscale_lc.specserve.profile import EXAMPLE_PROFILE, Profile, example_profile
from uniscale_lc.specserve.simulate import (
    load_trace,
    make_workload,
    replay,
    run_comparison,
    standard_policies,
    static_policy,
)

pytestmark = pytest.mark.timeout(60)


def make_profile(draft: float = 2.0, verify_base: float = 10.0, verify_slope: float = 0.1,
                 acceptance: tuple[float, ...] = (0.8, 0.6, 0.4), overhead: float = 0.0) -> Profile:
    return Profile(provenance="test", synthetic=True, batch_sizes=[1, 64], draft_ms=[draft, draft],
                   verify_tokens=[1, 1001], verify_ms=[verify_base, verify_base + verify_slope * 1000],
                   acceptance_per_pos=list(acceptance), overhead_ms=overhead, max_batch_size=64)


def test_goodput_by_hand() -> None:
    p = make_profile()
    # E[N](2) for B = 4: 4 * (1 + 0.8 + 0.6) = 9.6.
    assert expected_accepted_tokens(p.acceptance_per_pos, 2, 4) == pytest.approx(9.6)
    # Per request rows: 2 + (0.9 + 0.5) + (0.2 + 0.1).
    assert expected_accepted_tokens([[0.9, 0.5], [0.2, 0.1]], 2, 2) == pytest.approx(3.7)
    # T(2, 4) = 2 * 2 + verify(12 tokens) = 4 + 10 + 0.1 * 11 = 15.1 ms.
    assert float(step_time_ms(p, 2, 4)) == pytest.approx(15.1)
    goodput, tpot = goodput_curve(p, 4, 2)
    assert goodput[2] == pytest.approx(9.6 / 15.1 * 1000)
    assert tpot[0] == pytest.approx(10.3)  # no speculation: verify(4) per token
    assert tpot[2] == pytest.approx(15.1 / 2.4)
    assert smartspec_accepted_length(0.5, 2) == pytest.approx(1.75)
    assert smartspec_accepted_length(1.0, 3) == 4.0
    assert survival_from_conditional([0.5, 0.5]).tolist() == [0.5, 0.25]
    assert extend_survival([0.8, 0.4], 4) == pytest.approx([0.8, 0.4, 0.2, 0.1])


def test_choose_k_respects_slo_and_falls_back_to_lowest_tpot() -> None:
    assert choose_k([10, 30, 20], [5, 50, 8], slo_tpot_ms=10) == 2
    assert choose_k([10, 30, 20], [15, 50, 12], slo_tpot_ms=10) == 2  # none feasible: lowest TPOT
    assert choose_k([10, 10], [5, 5], None) == 0  # ties go to the smaller k


def test_k_zero_when_speculation_cannot_pay() -> None:
    # Compute-bound verifier and a costly draft with poor acceptance: speculation only slows things down.
    p = make_profile(draft=8.0, verify_slope=1.0, acceptance=(0.1, 0.01))
    spec_plan = plan(p, slo_tpot_ms=1000.0, max_k=4)
    assert {k for _, _, k in spec_plan.ranges} == {0}
    assert speculative_config(spec_plan) is None


def test_plan_ranges_and_config() -> None:
    assert merge_ranges([3, 3, 1, 1, 0]) == ((1, 2, 3), (3, 4, 1), (5, 5, 0))
    spec_plan = plan(example_profile(), slo_tpot_ms=20.0, max_k=8)
    config = speculative_config(spec_plan, method="eagle", model="d")
    assert config is not None
    ranges = config["num_speculative_tokens_per_batch_size"]
    assert ranges[0][0] == 1 and ranges[-1][1] == 256
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(ranges))  # contiguous
    assert config["num_speculative_tokens"] == max(r[2] for r in ranges)
    assert [r[2] for r in ranges] == sorted((r[2] for r in ranges), reverse=True)  # k falls with load
    assert config["method"] == "eagle" and config["model"] == "d"
    # The draft comes from the profile when not given; adaptive verification only where vLLM takes it.
    assert speculative_config(spec_plan)["model"] == example_profile().draft_model  # type: ignore[index]
    with pytest.raises(ConfigError, match="only with method"):
        speculative_config(spec_plan, adaptive_verification=True)
    assert speculative_config(spec_plan, method="dspark", adaptive_verification=True)[  # type: ignore[index]
        "enable_adaptive_verification"] is True


def test_draft_model_is_required_with_a_clear_error() -> None:
    profile = example_profile().model_copy(update={"draft_model": ""})
    spec_plan = plan(profile, slo_tpot_ms=40.0, max_k=4)
    with pytest.raises(ConfigError, match="--draft-model"):
        speculative_config(spec_plan)
    assert speculative_config(spec_plan, method="mtp") is not None  # vLLM takes the draft from the target


def test_slo_shapes_the_plan() -> None:
    """Tighter SLOs change k where the goodput-optimal k would miss the tail request's TPOT."""
    profile = example_profile()
    tables = {slo: plan(profile, slo, max_k=8).ranges for slo in (None, 1000.0, 40.0, 20.0, 10.0)}
    assert tables[None] == tables[1000.0]  # an SLO nobody misses changes nothing
    assert len({tables[s] for s in (1000.0, 40.0, 20.0, 10.0)}) == 4
    tight = plan(profile, 10.0, max_k=8)
    loose = plan(profile, None, max_k=8)
    # Where the tight plan's k differs and meets the SLO, the loose plan's k would miss it for the tail request.
    differing = [c for c, o in zip(tight.choices, loose.choices, strict=True) if c.k != o.k and c.meets_slo]
    assert differing
    for choice in differing:
        tail = tail_tpot_curve(profile, choice.batch_size, 8, 0.9)
        assert tail[loose.k_for(choice.batch_size)] > 10.0 >= tail[choice.k]
        assert choice.goodput < loose.choices[choice.batch_size - 1].goodput  # throughput traded for the SLO


def test_plan_round_trips_through_json(tmp_path: Path) -> None:
    spec_plan = plan(example_profile(), 25.0, max_k=6)
    spec_plan.to_json(tmp_path / "plan.json")
    assert SpecPlan.from_json(tmp_path / "plan.json") == spec_plan
    (tmp_path / "bad.json").write_text('{"schema_version": 99}')
    with pytest.raises(ConfigError, match="schema_version"):
        SpecPlan.from_json(tmp_path / "bad.json")


@st.composite
def profiles(draw: st.DrawFn) -> Profile:
    conditional = draw(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6))
    survival = np.round(survival_from_conditional(conditional), 6)
    survival = np.minimum.accumulate(survival).tolist()
    base = draw(st.floats(1.0, 50.0))
    knee = draw(st.integers(1, 512))
    slope = draw(st.floats(0.0, 1.0))
    tokens = [1, knee + 1, knee + 2048]
    verify = [base, base + slope * knee * 0.01, base + slope * knee * 0.01 + slope * 2048]
    return Profile(provenance="hypothesis", synthetic=True, batch_sizes=[1, 32, 128],
                   draft_ms=sorted(draw(st.lists(st.floats(0.1, 20.0), min_size=3, max_size=3))),
                   verify_tokens=tokens, verify_ms=verify, acceptance_per_pos=survival,
                   overhead_ms=draw(st.floats(0.0, 5.0)), max_batch_size=draw(st.integers(1, 48)))


@settings(max_examples=60, deadline=None)
@given(profile=profiles(), slo=st.floats(1.0, 200.0), max_k=st.integers(0, 6))
def test_plan_never_worse_than_static_and_never_violates_a_feasible_slo(profile: Profile, slo: float,
                                                                        max_k: int) -> None:
    tolerance = 0.01
    spec_plan = plan(profile, slo, max_k, tolerance=tolerance)
    for choice in spec_plan.choices:
        tail = tail_tpot_curve(profile, choice.batch_size, max_k, spec_plan.slo_quantile)
        statics = [(static_goodput(profile, choice.batch_size, k)[0], float(tail[k])) for k in range(max_k + 1)]
        feasible = [(g, t) for g, t in statics if t <= slo]
        if feasible:
            assert choice.tail_tpot_ms <= slo + 1e-9 and choice.meets_slo
            assert choice.goodput >= max(g for g, _ in feasible) * (1 - tolerance) * (1 - 1e-9)
        else:
            assert choice.tail_tpot_ms <= min(t for _, t in statics) * (1 + tolerance) + 1e-9
        assert choice.tail_tpot_ms >= choice.tpot_ms - 1e-9  # the tail request is never faster than the mean
        assert spec_plan.k_for(choice.batch_size) == choice.k


@settings(max_examples=40, deadline=None)
@given(profile=profiles(), rows=st.integers(1, 6), k=st.integers(1, 5), seed=st.integers(0, 1000))
def test_adaptive_verifier_never_lowers_goodput(profile: Profile, rows: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    survival = np.cumprod(rng.uniform(0, 1, size=(rows, k)), axis=1)
    verified, goodput, time_ms = adaptive_verify(profile, survival, k)
    full = (rows + survival.sum()) / float(step_time_ms(profile, k, rows)) * 1000
    assert goodput >= full * (1 - 1e-9)
    assert np.all((verified >= 0) & (verified <= k))
    kept = sum(survival[i, : verified[i]].sum() for i in range(rows))
    assert goodput == pytest.approx((rows + kept) / time_ms * 1000)


def test_profile_validation_and_round_trip(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="non-increasing"):
        make_profile(acceptance=(0.5, 0.9))
    path = tmp_path / "p.json"
    example_profile().to_json(path)
    assert Profile.from_json(path) == example_profile()
    assert example_profile().synthetic and "SYNTHETIC" in example_profile().provenance


def test_simulator_on_a_small_trace_orders_policies_sensibly(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("Timestamp\n" + "\n".join(str(i * 0.5) for i in range(40)) + "\n")
    arrivals = load_trace(str(csv))
    assert arrivals[0] == 0.0 and arrivals.size == 40
    profile = example_profile()
    workload = make_workload(profile, arrivals, max_k=8, seed=1)
    lone = replay(profile, make_workload(profile, arrivals[:1], seed=1), static_policy(profile, 0), "one")
    # A request alone, no speculation: TPOT is exactly one step at batch 1.
    assert lone.tpot_ms[0] == pytest.approx(float(step_time_ms(profile, 0, 1)))
    rows = {r["policy"]: r for r in run_comparison(profile, arrivals, 40.0, seed=1)}
    assert float(rows["static-k3"]["mean_tpot_ms"]) < float(rows["no-spec"]["mean_tpot_ms"])  # light load: speculation pays
    assert rows["specserve-slo"]["slo_attainment"] == 1.0
    assert sum(workload.output_tokens) > 0


def test_cli_plan_and_simulate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["specserve", "plan", str(EXAMPLE_PROFILE), "--slo-tpot-ms", "40", "--max-k", "6"]) == 0
    out, err = capsys.readouterr()
    config = json.loads(out)
    assert config["num_speculative_tokens"] <= 6 and "SYNTHETIC" in err
    csv = tmp_path / "t.csv"
    csv.write_text("Timestamp\n0\n0.1\n0.2\n1.0\n")
    out_json = tmp_path / "r.json"
    assert cli.main(["specserve", "simulate", "--trace", str(csv), "--slo-tpot-ms", "40",
                     "--json", str(out_json)]) == 0
    out, _ = capsys.readouterr()
    assert out.startswith("SIMULATION") and "specserve-slo" in out
    saved = json.loads(out_json.read_text())
    assert saved["label"].startswith("SIMULATION") and saved["profile_synthetic"] is True
    assert [r["policy"] for r in saved["results"]] == list(standard_policies(example_profile(), 40.0))
    assert cli.main(["specserve", "plan", str(tmp_path / "missing.json"), "--slo-tpot-ms", "40"]) == 2


def test_shared_traces_load(shared_data_dir: Path) -> None:
    arrivals = load_trace("code", shared_data_dir / "traces")
    assert arrivals.size == 719 and np.all(np.diff(arrivals) >= 0)
