"""Synthetic profiles from a roofline model: illustrative numbers for the CLI and docs, never measurements.

The shipped example profile is `roofline_profile()` with its defaults (an A100-80GB-like GPU, a
Llama-3.1-8B-shaped target and a Llama-3.2-1B-shaped draft); regenerate it with
`python -m uniscale_lc.specserve.synthetic OUT.json`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from .goodput import survival_from_conditional
from .profile import Profile


class GpuSpec(BaseModel):
    """Peak numbers of a GPU and the fraction of them a decode step reaches."""

    model_config = ConfigDict(frozen=True)
    name: str = "A100-80GB-SXM (datasheet peaks)"
    memory_gb_s: float = 2039.0
    bf16_tflops: float = 312.0
    memory_efficiency: float = 0.7
    compute_efficiency: float = 0.45
    launch_ms: float = 0.8


class DecoderShape(BaseModel):
    """What a decoder costs per step: weight bytes, FLOPs per token, KV-cache bytes per context token."""

    model_config = ConfigDict(frozen=True)
    name: str
    params_b: float
    kv_bytes_per_token: float


LLAMA_8B = DecoderShape(name="Llama-3.1-8B-shaped", params_b=8.03, kv_bytes_per_token=32 * 8 * 128 * 2 * 2)
LLAMA_1B = DecoderShape(name="Llama-3.2-1B-shaped", params_b=1.24, kv_bytes_per_token=16 * 8 * 64 * 2 * 2)


def forward_ms(gpu: GpuSpec, shape: DecoderShape, tokens: np.ndarray) -> np.ndarray:
    """One forward over `tokens` new tokens: weight read or compute, whichever binds, plus a launch cost."""
    weights_ms = shape.params_b * 2e9 / (gpu.memory_gb_s * 1e9 * gpu.memory_efficiency) * 1e3
    compute_ms = 2 * shape.params_b * 1e9 * tokens / (gpu.bf16_tflops * 1e12 * gpu.compute_efficiency) * 1e3
    return np.maximum(weights_ms, compute_ms) + gpu.launch_ms


def kv_ms_per_request(gpu: GpuSpec, shape: DecoderShape, context_len: int) -> float:
    return float(shape.kv_bytes_per_token * context_len / (gpu.memory_gb_s * 1e9 * gpu.memory_efficiency) * 1e3)


def roofline_profile(
    gpu: GpuSpec | None = None,
    target: DecoderShape = LLAMA_8B,
    draft: DecoderShape = LLAMA_1B,
    conditional_acceptance: tuple[float, ...] = (0.80, 0.78, 0.76, 0.74, 0.72, 0.70, 0.68, 0.66),
    context_len: int = 1024,
    max_batch_size: int = 256,
) -> Profile:
    """A Profile computed from datasheet peaks; `synthetic=True` and the provenance say so."""
    gpu = gpu or GpuSpec()
    batch_sizes = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256, 512])
    tokens = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192])
    draft_ms = forward_ms(gpu, draft, batch_sizes) + batch_sizes * kv_ms_per_request(gpu, draft, context_len)
    verify_ms = forward_ms(gpu, target, tokens)
    survival = survival_from_conditional(conditional_acceptance)
    return Profile(
        description=f"{target.name} target, {draft.name} draft, on {gpu.name}, context {context_len}",
        provenance=(
            "SYNTHETIC, illustrative only: roofline formulas in uniscale_lc/specserve/synthetic.py "
            f"(memory {gpu.memory_gb_s} GB/s x {gpu.memory_efficiency}, bf16 {gpu.bf16_tflops} TFLOPS x "
            f"{gpu.compute_efficiency}, {gpu.launch_ms} ms launch per forward); acceptance rates "
            f"{list(conditional_acceptance)} per position are assumed, typical of a same-family 1B draft. "
            "Not a measurement: profile your own server with `specserve profile`."
        ),
        synthetic=True,
        target=target.name,
        draft=draft.name,
        method="draft_model",
        hardware=gpu.name,
        context_len=context_len,
        batch_sizes=batch_sizes.tolist(),
        draft_ms=np.round(draft_ms, 4).tolist(),
        verify_tokens=tokens.tolist(),
        verify_ms=np.round(verify_ms, 4).tolist(),
        overhead_ms=1.5,
        verify_ms_per_request=round(kv_ms_per_request(gpu, target, context_len), 5),
        acceptance_per_pos=np.round(survival, 5).tolist(),
        max_batch_size=max_batch_size,
        prefill_ms_per_request=20.0,
    )


if __name__ == "__main__":
    roofline_profile().to_json(Path(sys.argv[1]))
