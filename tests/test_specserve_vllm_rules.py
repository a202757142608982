"""vLLM's `--speculative-config` validation, as encoded in `uniscale_lc.specserve.vllm_rules`.

Every rule below comes from vLLM's source, read at:
- vllm-project/vllm `vllm/config/speculative.py` @ 002e77c1f0ef9b19cff8b9e21cfbd6feb3d6b443
  (`SpeculativeConfig.__post_init__`, `_verify_args`, the `enable_adaptive_verification` docstring);
- vllm-project/vllm `vllm/v1/spec_decode/dynamic/utils.py` @ a6f6bb1d3c1707ede85d03a7c7d47a105a1873fc
  (`validate_and_normalize_dynamic_sd_schedule`, `build_dynamic_sd_schedule_lookup`).
The expected messages are vLLM's. When `vllm` is installed, the last test builds vLLM's own
`SpeculativeConfig` from what the planner emits.
"""

from __future__ import annotations

import pytest

from uniscale_lc.specserve.planner import plan, speculative_config
from uniscale_lc.specserve.profile import example_profile
from uniscale_lc.specserve.vllm_rules import (
    SpeculativeConfigError,
    dense_schedule,
    normalize_schedule,
    validate_speculative_config,
)

pytestmark = pytest.mark.timeout(60)

DRAFT = {"method": "draft_model", "model": "meta-llama/Llama-3.2-1B-Instruct"}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        # speculative.py: a draft method with tokens but no model.
        ({"method": "draft_model", "num_speculative_tokens": 3}, "without speculative model"),
        ({"num_speculative_tokens": 3}, "without speculative model"),  # method defaults to draft_model
        ({"method": "eagle3", "num_speculative_tokens": 3}, "without speculative model"),
        ({"method": "custom_class", "num_speculative_tokens": 3}, "custom proposer module path"),
        # Field(gt=0) and _verify_args.
        ({**DRAFT, "num_speculative_tokens": 0}, "greater than 0"),
        ({**DRAFT}, "num_speculative_tokens must be provided"),
        # "Adaptive verification only supported with DSpark".
        ({**DRAFT, "num_speculative_tokens": 3, "enable_adaptive_verification": True}, "only supported with DSpark"),
        ({"method": "ngram", "num_speculative_tokens": 3, "enable_adaptive_verification": True}, "DSpark"),
        ({**DRAFT, "num_speculative_tokens": 3, "tensor_parallel_size": 2}, "draft_tensor_parallel_size"),
        ({"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 5, "prompt_lookup_max": 2},
         "must be <= prompt_lookup_max"),
        ({"method": "lookahead", "model": "x", "num_speculative_tokens": 3}, "Unsupported speculative method"),
        # A key SpeculativeConfig does not have (e.g. the removed disable_by_batch_size).
        ({**DRAFT, "num_speculative_tokens": 3, "disable_by_batch_size": 8}, "unexpected keyword argument"),
    ],
)
def test_configs_vllm_refuses(config: dict[str, object], message: str) -> None:
    with pytest.raises(SpeculativeConfigError, match=message):
        validate_speculative_config(config)


def test_configs_vllm_accepts_and_what_it_infers() -> None:
    assert validate_speculative_config({"model": "ngram", "num_speculative_tokens": 2})["method"] == "ngram"
    assert validate_speculative_config({"model": "d", "num_speculative_tokens": 2})["method"] == "draft_model"
    for method in ("mtp", "dspark", "ngram", "suffix"):  # vLLM fills in the model for these
        assert validate_speculative_config({"method": method, "num_speculative_tokens": 2})["method"] == method
    assert validate_speculative_config({"method": "suffix"})["method"] == "suffix"  # suffix defaults k
    dspark = {"method": "dspark", "num_speculative_tokens": 4, "enable_adaptive_verification": True}
    assert validate_speculative_config(dspark)["enable_adaptive_verification"] is True


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ([], "must not be empty"),
        ((1, 4, 2), "non-empty list"),
        ([[1, 4]], "3-item sequence"),
        ([[0, 4, 2]], "must be positive"),
        ([[4, 2, 1]], "start must be <= end"),
        ([[1, 4, -1]], "must be >= 0"),
        ([[1, 4, 3], [4, 8, 2]], "non-overlapping"),
        ([[2, 8, 3]], "must start at 1"),
    ],
)
def test_schedules_vllm_refuses(table: object, message: str) -> None:
    with pytest.raises(SpeculativeConfigError, match=message):
        validate_speculative_config({**DRAFT, "num_speculative_tokens": 4, "num_speculative_tokens_per_batch_size":
                                     table})


def test_schedule_normalisation_and_dense_lookup_follow_vllm() -> None:
    assert normalize_schedule([[5, 8, "1"], [1, 2, 4]]) == [(1, 2, 4), (5, 8, 1)]  # sorted, int()-ed
    # Gaps inherit the previous k, the tail the last, index 0 is unused (utils.py docstring example shape).
    assert dense_schedule([[1, 2, 4], [5, 8, 1]], 10, 4) == [0, 4, 4, 4, 4, 1, 1, 1, 1, 1, 1]
    assert dense_schedule([[1, 4, 5]], 4, 3)[1:] == [3, 3, 3, 3]  # capped at num_speculative_tokens
    with pytest.raises(SpeculativeConfigError, match="vllm_num_speculative_tokens must be > 0"):
        dense_schedule([[1, 4, 0]], 4, 0)


def test_every_emitted_plan_passes_vllms_rules() -> None:
    profile = example_profile()
    for slo in (None, 40.0, 20.0, 10.0, 5.0):
        for max_k in (1, 4, 8):
            config = speculative_config(plan(profile, slo, max_k))
            if config is None:
                continue
            checked = validate_speculative_config(config, max_num_seqs=profile.max_batch_size)
            dense = dense_schedule(config["num_speculative_tokens_per_batch_size"], profile.max_batch_size,
                                   config["num_speculative_tokens"])
            # vLLM's scheduler runs exactly the planned k at every batch size.
            planned = plan(profile, slo, max_k)
            assert dense[1:] == [c.k for c in planned.choices]
            assert checked["method"] == "draft_model" and checked["model"]


def test_vllms_own_speculative_config_accepts_the_emitted_table() -> None:
    """Needs vLLM (a CUDA install); skipped here. Uses method ngram so no weights are fetched."""
    pytest.importorskip("vllm")
    from vllm.config import SpeculativeConfig

    config = speculative_config(plan(example_profile(), 40.0, 4))
    assert config is not None
    ngram = {**config, "method": "ngram", "model": None}
    if "num_speculative_tokens_per_batch_size" not in SpeculativeConfig.__dataclass_fields__:
        pytest.skip("this vLLM has no num_speculative_tokens_per_batch_size (older or renamed)")
    built = SpeculativeConfig(**ngram)
    assert built.num_speculative_tokens == config["num_speculative_tokens"]
    from vllm.v1.spec_decode.dynamic.utils import build_dynamic_sd_schedule_lookup

    lookup = build_dynamic_sd_schedule_lookup(config["num_speculative_tokens_per_batch_size"], 256,
                                              config["num_speculative_tokens"])
    assert lookup == dense_schedule(config["num_speculative_tokens_per_batch_size"], 256,
                                    config["num_speculative_tokens"])
    with pytest.raises(ValueError, match="DSpark"):
        SpeculativeConfig(**{**ngram, "enable_adaptive_verification": True})
