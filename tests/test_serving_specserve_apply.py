"""A SpecServe plan launched on a server: `VLLMServer(..., speculative_plan=...)` and `specserve apply`,
against the stand-in, which checks `--speculative-config` the way vLLM does at startup."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from uniscale_lc.serving import (
    ServerExitedError,
    ServerMonitor,
    VLLMServer,
    VLLMServerConfig,
    apply_plan,
    free_port,
)
from uniscale_lc.specserve import cli
from uniscale_lc.specserve.planner import plan, speculative_config
from uniscale_lc.specserve.profile import example_profile
from uniscale_lc.specserve.server_profiler import Observation, fit_profile, observe

pytestmark = pytest.mark.timeout(60)

STANDIN = (sys.executable, "-m", "uniscale_lc.testing.vllm_standin", "--host", "{host}", "--port", "{port}",
           "--model-name", "{served_model_name}", "--step-ms", "1", "--step-ms-per-request", "0.1")


def config(**kwargs: object) -> VLLMServerConfig:
    fields: dict[str, object] = {"model": "meta-llama/Llama-3.1-8B-Instruct", "served_model_name": "target",
                                 "port": free_port(), "command": STANDIN, "startup_timeout_s": 20.0,
                                 "stop_grace_s": 3.0, "health_poll_s": 0.05}
    fields.update(kwargs)
    return VLLMServerConfig(**fields)  # type: ignore[arg-type]


def test_standin_refuses_what_vllm_refuses_at_startup() -> None:
    bad = {"method": "draft_model", "num_speculative_tokens": 3}  # no draft model
    srv = VLLMServer(config(speculative_config=bad))
    with pytest.raises(ServerExitedError, match="without speculative model"):
        srv.start()
    run = subprocess.run(
        [sys.executable, "-m", "uniscale_lc.testing.vllm_standin", "--port", str(free_port()),
         "--speculative-config", json.dumps({"method": "draft_model", "model": "d", "num_speculative_tokens": 2,
                                             "enable_adaptive_verification": True})],
        capture_output=True, text=True, timeout=30, check=False)
    assert run.returncode == 1 and "only supported with DSpark" in run.stderr


def test_server_launched_with_a_plan_runs_its_k_per_batch_size() -> None:
    spec_plan = plan(example_profile(), 20.0, max_k=4)
    server = VLLMServer(config(), speculative_plan=spec_plan)
    argv = server.config.argv()
    emitted = json.loads(argv[argv.index("--speculative-config") + 1])
    assert emitted == speculative_config(spec_plan)
    assert emitted["model"] == "meta-llama/Llama-3.2-1B-Instruct"  # the profile's draft
    assert argv[argv.index("--max-num-seqs") + 1] == str(spec_plan.max_batch_meeting_slo)
    with server:
        assert "speculative config" in server.log_tail()
        with ServerMonitor(server.api_base, timeout_s=5) as monitor:
            monitor.scrape()
            observe(server.base_url, "target", 1, requests_per_worker=2, max_tokens=24, timeout_s=10)
            load = monitor.scrape()
    # One request at a time: every step drafts the plan's k at batch 1 (the stand-in accepts position j
    # with probability 0.7 ** (j + 1)), so the mean acceptance length tells which k ran.
    k1 = spec_plan.k_for(1)
    assert load.mean_acceptance_length == pytest.approx(1 + sum(0.7 ** (j + 1) for j in range(k1)), abs=0.02)
    assert load.acceptance_per_pos[k1:] in ((), tuple([0.0] * (len(load.acceptance_per_pos) - k1)))
    explicit = apply_plan(config(extra_args=("--max-num-seqs", "7")), spec_plan, draft_model="other/draft")
    assert explicit.extra_args == ("--max-num-seqs", "7") and explicit.speculative_config is not None
    assert explicit.speculative_config["model"] == "other/draft"


def test_cli_plan_then_apply_against_the_standin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan_path = tmp_path / "plan.json"
    profile = tmp_path / "profile.json"
    example_profile().model_copy(update={"draft_model": ""}).to_json(profile)
    # No draft model anywhere: a clear error naming the flag.
    assert cli.main(["specserve", "plan", str(profile), "--slo-tpot-ms", "20", "--out", str(plan_path)]) == 2
    assert "--draft-model" in capsys.readouterr().err
    assert cli.main(["specserve", "plan", str(profile), "--slo-tpot-ms", "20", "--draft-model", "d/1b",
                     "--out", str(plan_path)]) == 0
    capsys.readouterr()
    command = " ".join(STANDIN)
    args = ["specserve", "apply", str(plan_path), "--model", "t/8b", "--draft-model", "d/1b", "--port",
            str(free_port()), "--command", command, "--startup-timeout-s", "20"]
    assert cli.main([*args, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "--speculative-config" in printed and "d/1b" in printed and "--max-num-seqs" in printed
    log = tmp_path / "server.log"
    assert cli.main([*args, "--check", "--log", str(log)]) == 0
    assert "speculative config" in log.read_text() and '"model": "d/1b"' in log.read_text()
    args[args.index("--port") + 1] = str(free_port())
    assert cli.main([*args, "--method", "dspark", "--check"]) == 0  # another method the stand-in accepts
    assert cli.main(["specserve", "apply", str(tmp_path / "none.json"), "--model", "t"]) == 2


def linear_server(k: int, levels: list[int], draft_ms: float = 0.6) -> tuple[list[Observation], list[Observation]]:
    """Observations of an ideal server whose verify time is 2 + 0.01 n ms for n tokens."""
    survival = (0.8, 0.6, 0.4)[:k]
    gain = 1 + sum(survival)

    def verify(n: float) -> float:
        return 2.0 + 0.01 * n

    spec = [Observation(b, (k * draft_ms + verify((k + 1) * b)) / gain, 8, survival, gain) for b in levels]
    base = [Observation(b, verify(b), 8, (), None) for b in levels[:3]]
    return spec, base


def test_fit_profile_extrapolates_verify_time_past_the_baseline() -> None:
    spec, base = linear_server(3, [1, 4, 16, 64])
    profile = fit_profile(spec, k=3, baseline_observations=base)
    # The baseline stops at 16 tokens; verifying 4 * 64 = 256 must follow the fitted line, not stay at 16's.
    assert np.interp(256, profile.verify_tokens, profile.verify_ms) == pytest.approx(2.0 + 0.01 * 256, rel=1e-6)
    assert profile.draft_ms == pytest.approx([0.6, 0.6, 0.6, 0.6], abs=1e-3)
