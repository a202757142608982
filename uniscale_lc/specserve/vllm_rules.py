"""vLLM's own validation of `--speculative-config`, restated as a pure function (no vLLM import needed).

The emitted config targets vLLM main as read at these commits (github.com/vllm-project/vllm):
- `vllm/config/speculative.py` @ 002e77c1f0ef9b19cff8b9e21cfbd6feb3d6b443 (`SpeculativeConfig` fields,
  `__post_init__`, `_verify_args`);
- `vllm/v1/spec_decode/dynamic/utils.py` @ a6f6bb1d3c1707ede85d03a7c7d47a105a1873fc
  (`validate_and_normalize_dynamic_sd_schedule`, `build_dynamic_sd_schedule_lookup`).
A later commit of that utils file (14b450ca) renames the table to `speculative_token_schedule` and adds
context buckets; configs for such a version need that key instead.

The rules here are the subset a JSON config can break without loading model weights; the messages are
vLLM's own, so a refusal here reads the same as the server's.
"""

from __future__ import annotations

from typing import Any

VLLM_TARGET = (
    "vLLM main: vllm/config/speculative.py @ 002e77c, vllm/v1/spec_decode/dynamic/utils.py @ a6f6bb1 "
    "(key num_speculative_tokens_per_batch_size)"
)

# SpeculativeMethod in speculative.py @ 002e77c (MTP model types normalise to "mtp").
METHODS = frozenset({
    "ngram", "medusa", "mlp_speculator", "draft_model", "suffix", "custom_class", "eagle", "eagle3",
    "extract_hidden_states", "mtp", "dflash", "ngram_gpu", "dspark",
})
# Methods whose `model` may be omitted: vLLM fills it (mtp, dspark: the target; ngram etc.: a sentinel).
METHODS_WITHOUT_MODEL = frozenset({"mtp", "dspark", "ngram", "ngram_gpu", "suffix", "extract_hidden_states"})
# `enable_adaptive_verification`: "Currently only supported for method="dspark"." (speculative.py @ 002e77c)
ADAPTIVE_VERIFICATION_METHODS = frozenset({"dspark"})
# The user-settable fields of SpeculativeConfig @ 002e77c; anything else is an unexpected keyword argument
# to the dataclass constructor, which vLLM refuses at startup.
FIELDS = frozenset({
    "enforce_eager", "num_speculative_tokens", "model", "method", "draft_tensor_parallel_size",
    "tensor_parallel_size", "quantization", "moe_backend", "attention_backend", "kv_cache_dtype",
    "max_model_len", "revision", "code_revision", "index_share_for_mtp_iteration",
    "disable_padded_drafter_batch", "disable_eagle_block_drop", "use_local_argmax_reduction",
    "use_heterogeneous_vocab", "prompt_lookup_max", "prompt_lookup_min", "parallel_drafting",
    "num_speculative_tokens_per_batch_size", "suffix_decoding_max_tree_depth",
    "suffix_decoding_max_cached_requests", "suffix_decoding_max_spec_factor", "suffix_decoding_min_token_prob",
    "draft_load_config", "rejection_sample_method", "synthetic_acceptance_rates",
    "synthetic_acceptance_length", "enable_adaptive_verification", "draft_sample_method", "dspark_draft_topk",
})


class SpeculativeConfigError(ValueError):
    """vLLM would refuse this `--speculative-config`; the message is vLLM's."""


def _int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str | float):
        raise SpeculativeConfigError(f"{name} must be an integer, got {value!r}")
    try:
        number = int(value)
    except ValueError as exc:
        raise SpeculativeConfigError(f"{name} must be an integer, got {value!r}") from exc
    if isinstance(value, float) and number != value:
        raise SpeculativeConfigError(f"{name} must be an integer, got {value!r}")
    return number


def normalize_schedule(schedule: object) -> list[tuple[int, int, int]]:
    """`validate_and_normalize_dynamic_sd_schedule` (dynamic/utils.py @ a6f6bb1): sorted inclusive ranges."""
    if schedule is None:
        raise SpeculativeConfigError(
            "num_speculative_tokens_per_batch_size is required for dynamic speculative decoding.")
    if not isinstance(schedule, list):
        raise SpeculativeConfigError(
            "num_speculative_tokens_per_batch_size must be a non-empty list of "
            "(range_start, range_end, num_speculative_tokens) entries.")
    if not schedule:
        raise SpeculativeConfigError("num_speculative_tokens_per_batch_size must not be empty.")
    parsed: list[tuple[int, int, int]] = []
    for entry in schedule:
        if not isinstance(entry, list | tuple) or len(entry) != 3:
            raise SpeculativeConfigError(
                "Each num_speculative_tokens_per_batch_size entry must be a "
                "3-item sequence: (range_start, range_end, num_speculative_tokens).")
        start, end, k = (_int(x, "num_speculative_tokens_per_batch_size entry") for x in entry)
        if start <= 0 or end <= 0:
            raise SpeculativeConfigError(f"Batch-size range ({start}, {end}) must be positive.")
        if start > end:
            raise SpeculativeConfigError(f"Batch-size range start must be <= end for ({start}, {end}, {k}).")
        if k < 0:
            raise SpeculativeConfigError("num_speculative_tokens_per_batch_size values must be >= 0.")
        parsed.append((start, end, k))
    parsed.sort(key=lambda e: e[0])
    previous_end = 0
    for start, end, _ in parsed:
        if start <= previous_end:
            raise SpeculativeConfigError("Batch-size ranges must be non-overlapping and sorted.")
        previous_end = end
    if parsed[0][0] != 1:
        raise SpeculativeConfigError(
            "The first batch-size range must start at 1 so every runtime batch size has a defined schedule.")
    return parsed


def dense_schedule(schedule: object, max_batch_size: int, num_speculative_tokens: int) -> list[int]:
    """`build_dynamic_sd_schedule_lookup`: index = running batch size (0 unused) -> k the scheduler uses.

    Gaps inherit the previous range's k, the tail inherits the last, and every k is capped at
    `num_speculative_tokens`.
    """
    if max_batch_size <= 0:
        raise SpeculativeConfigError("vllm_max_batch_size must be > 0.")
    if num_speculative_tokens <= 0:
        raise SpeculativeConfigError("vllm_num_speculative_tokens must be > 0.")
    dense = [0] * (max_batch_size + 1)
    next_bs = 1
    last_k: int | None = None
    for start, end, k in normalize_schedule(schedule):
        if start > next_bs and last_k is not None:
            for bs in range(next_bs, min(start, max_batch_size + 1)):
                dense[bs] = min(num_speculative_tokens, last_k)
        for bs in range(max(start, next_bs), min(end, max_batch_size) + 1):
            dense[bs] = min(num_speculative_tokens, k)
        next_bs = max(next_bs, end + 1)
        last_k = k
        if next_bs > max_batch_size:
            break
    for bs in range(next_bs, max_batch_size + 1):
        dense[bs] = min(num_speculative_tokens, last_k or 0)
    return dense


def validate_speculative_config(config: object, *, max_num_seqs: int | None = None) -> dict[str, Any]:
    """Apply vLLM's checks to a `--speculative-config` dict; return it with vLLM's inferred method filled in.

    Raises SpeculativeConfigError with vLLM's message when vLLM would refuse to start. With `max_num_seqs`
    the per-batch-size table is also expanded as the scheduler does at startup.
    """
    if not isinstance(config, dict):
        raise SpeculativeConfigError(f"--speculative-config must be a JSON object, got {type(config).__name__}")
    unknown = sorted(set(config) - FIELDS)
    if unknown:
        raise SpeculativeConfigError(
            f"SpeculativeConfig.__init__() got an unexpected keyword argument {unknown[0]!r}")
    out = dict(config)
    method, model = out.get("method"), out.get("model")
    if method is None:
        method = "ngram" if model in ("ngram", "[ngram]") else "draft_model"
    if method == "[ngram]":
        method = "ngram"
    if method not in METHODS:
        raise SpeculativeConfigError(f"Unsupported speculative method: '{method}'")
    out["method"] = method
    k = out.get("num_speculative_tokens")
    if k is not None:
        k = _int(k, "num_speculative_tokens")
        if k <= 0:  # Field(gt=0): pydantic refuses it before __post_init__ runs
            raise SpeculativeConfigError(f"num_speculative_tokens: Input should be greater than 0 (got {k})")
        out["num_speculative_tokens"] = k
    if model is None and k is not None and method not in METHODS_WITHOUT_MODEL:
        if method == "custom_class":
            raise SpeculativeConfigError(
                "method='custom_class' requires 'model' to contain the custom proposer module path "
                "(e.g., 'my_module.MyProposer').")
        raise SpeculativeConfigError("num_speculative_tokens was provided but without speculative model.")
    if method in ("ngram", "ngram_gpu"):
        low, high = out.get("prompt_lookup_min"), out.get("prompt_lookup_max")
        if low is not None and high is not None and _int(low, "prompt_lookup_min") > _int(high, "prompt_lookup_max"):
            raise SpeculativeConfigError(f"prompt_lookup_min={low} must be <= prompt_lookup_max={high}")
    if out.get("enable_adaptive_verification") and method not in ADAPTIVE_VERIFICATION_METHODS:
        raise SpeculativeConfigError("Adaptive verification only supported with DSpark")
    if out.get("tensor_parallel_size") is not None:
        raise SpeculativeConfigError(
            "'tensor_parallel_size' is not a valid argument in the speculative_config. "
            "Please pass 'draft_tensor_parallel_size' instead.")
    if k is None and method != "suffix":
        raise SpeculativeConfigError(
            "num_speculative_tokens must be provided with speculative model unless the draft model config "
            "contains an n_predict parameter.")
    table = out.get("num_speculative_tokens_per_batch_size")
    if table is not None:
        out["num_speculative_tokens_per_batch_size"] = [list(e) for e in normalize_schedule(table)]
        if max_num_seqs is not None:
            dense_schedule(table, max_num_seqs, k or 0)
    return out
