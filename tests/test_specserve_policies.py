"""Per-step drafting, verify trimming to CUDA-graph sizes, the vLLM table policy, admission caps, the sweep."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from uniscale_lc.specserve import cli
from uniscale_lc.specserve.goodput import pad_to_graph, step_time_ms
from uniscale_lc.specserve.planner import plan
from uniscale_lc.specserve.profile import Profile, example_profile
from uniscale_lc.specserve.simulate import make_workload, replay, run_comparison, standard_policies
from uniscale_lc.specserve.step_policies import drafted_length, trim_to_graph, vllm_table_policy
from uniscale_lc.specserve.sweep import Cell, check_aims

pytestmark = pytest.mark.timeout(60)


def flat_profile(draft: float = 1.0, graphs: list[int] | None = None) -> Profile:
    """Verify costs 10 ms up to 8 tokens, then 1 ms per token; a draft step costs `draft` ms."""
    return Profile(provenance="test", synthetic=True, batch_sizes=[1, 64], draft_ms=[draft, draft],
                   verify_tokens=[1, 8, 1008], verify_ms=[10.0, 10.0, 1010.0], acceptance_per_pos=[0.9, 0.5],
                   max_batch_size=64, cuda_graph_sizes=graphs or [])


def test_drafting_stops_where_predicted_goodput_falls() -> None:
    profile = flat_profile(draft=1.0)
    # One request, confident for two positions, then not: goodputs 1/10, 1.9/11, 2.71/12, 2.76/13.
    survival = np.array([[0.9, 0.81, 0.05]])
    assert drafted_length(profile, survival, 3) == 2
    # A draft so dear that one position does not beat none: no speculation this step.
    assert drafted_length(flat_profile(draft=20.0), survival, 3) == 0


def test_verify_is_padded_and_trimmed_to_graph_sizes() -> None:
    profile = flat_profile(draft=0.0, graphs=[1, 2, 4, 8, 16])
    assert pad_to_graph(profile, [3, 8, 9, 17]).tolist() == [4, 8, 16, 17]  # eager past the largest
    # 3 requests x (k=2 + 1) = 9 tokens would run padded to 16 (18 ms); trimmed to 8 it costs 10 ms.
    survival = np.array([[0.9, 0.8], [0.9, 0.1], [0.7, 0.6]])
    kept, ms = trim_to_graph(profile, survival, 2)
    assert ms == pytest.approx(float(step_time_ms(profile, 2, 3, verify_tokens=8)))
    assert kept.tolist() == [2, 1, 2]  # the lowest-confidence slot (second request, second position) went
    # Without graphs there is nothing to trim to.
    assert trim_to_graph(flat_profile(draft=0.0), survival, 2)[0].tolist() == [2, 2, 2]


def test_vllm_table_policy_runs_the_plans_k() -> None:
    profile = example_profile()
    spec_plan = plan(profile, 20.0, max_k=8)
    choose = vllm_table_policy(profile, spec_plan)
    for batch in (1, 30, 50, 200):
        ks, ms = choose(np.full((batch, 8), 0.5))
        assert set(ks.tolist()) == {spec_plan.k_for(batch)}
        assert ms == pytest.approx(float(step_time_ms(profile, spec_plan.k_for(batch), batch)))


def test_admission_cap_holds_tpot_under_a_burst() -> None:
    profile = example_profile()
    arrivals = np.zeros(300)  # everything at once
    workload = make_workload(profile, arrivals, seed=3)
    policies = standard_policies(profile, 20.0)
    (table, _), (capped, cap) = policies["vllm-table"], policies["vllm-table+cap"]
    assert cap == plan(profile, 20.0).max_batch_meeting_slo
    free = replay(profile, workload, table, "free")
    held = replay(profile, workload, capped, "held", cap)
    assert np.mean(held.tpot_ms) < np.mean(free.tpot_ms)  # fewer running requests, faster steps
    assert np.mean(held.ttft_s) > np.mean(free.ttft_s)  # paid for in queueing


def test_comparison_rows_and_aims_check() -> None:
    profile = example_profile()
    arrivals = np.sort(np.random.default_rng(0).uniform(0, 4, 60))
    rows = run_comparison(profile, arrivals, 25.0, rate_scale=4.0, max_k=4)
    names = [r["policy"] for r in rows]
    assert names == list(standard_policies(profile, 25.0, max_k=4))
    for r in rows:
        assert 0 <= float(r["goodput_tok_s"]) <= float(r["throughput_tok_s"]) + 1e-9
        assert 0 <= float(r["slo_attainment"]) <= 1
    aims = check_aims([Cell("t", 4.0, 60, rows)], "vllm-table+cap", high_load=4.0)
    by = {str(r["policy"]): r for r in rows}
    best = max(float(by[s]["slo_attainment"]) for s in ("static-k1", "static-k3", "static-k5"))
    assert aims[0]["attainment_met"] == (float(by["vllm-table+cap"]["slo_attainment"]) >= best)
    assert aims[0]["goodput_met"] is not None


def test_cli_sweep_labels_every_table_with_its_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("Timestamp\n" + "\n".join(str(i * 0.05) for i in range(30)) + "\n")
    out = tmp_path / "sweep.json"
    assert cli.main(["specserve", "sweep", "--traces", str(csv), "--loads", "1,4", "--slo-tpot-ms", "25",
                     "--max-k", "4", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    headings = [line for line in text.splitlines() if line.startswith("#### ")]
    assert len(headings) == 2
    assert all("SIMULATION, profile example_a100_llama8b_draft1b.json" in h for h in headings)
    saved = json.loads(out.read_text())
    assert saved["profile_synthetic"] is True and len(saved["cells"]) == 2 and saved["aims"]
