"""Synthetic profiles from a roofline model, calibrated to published vLLM measurements (not measurements).

The shipped profiles are `calibrated_profile(A100_40GB)` and `calibrated_profile(H100_SXM)`: a
Llama-3.1-8B-shaped target and a Llama-3.2-1B-shaped draft, with the weight-read efficiency and the
per-request step cost solved so that the non-speculative TPOT matches these published figures
(Llama-3.1-8B-Instruct, BF16, stock vLLM, no speculation):
- A100-40GB: about 75 tokens/s at concurrency 1 (13.3 ms TPOT) and 6.6x that throughput at concurrency 8
  (16.2 ms), 1024-token prompts, vLLM 0.23.0: https://johnmusgrave.com/p/vllm-throughput-latency-sweep-on
- H100-80GB-HBM3: TPOT p50 6.48 / 6.59 / 10.94 ms at concurrency 1 / 4 / 16, vLLM 0.21.0 fp16:
  https://yobitelcomm.github.io/bench/recipes/concurrency-sweep/
The concurrency figures include whatever prefill interference those runs had, so the per-request cost
here is an effective one. Regenerate with `python -m uniscale_lc.specserve.synthetic`.
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


class Calibration(BaseModel):
    """A published non-speculative TPOT curve: (concurrency, TPOT ms) points and where they come from."""

    model_config = ConfigDict(frozen=True)
    points: tuple[tuple[int, float], ...]
    source: str


A100_40GB = GpuSpec(name="A100-40GB", memory_gb_s=1555.0, bf16_tflops=312.0, launch_ms=0.2)
H100_SXM = GpuSpec(name="H100-80GB-SXM", memory_gb_s=3350.0, bf16_tflops=989.0, launch_ms=0.2)
CALIBRATIONS = {
    A100_40GB.name: Calibration(
        points=((1, 13.3), (8, 8 / (6.6 * 75.0) * 1000.0)),
        source="johnmusgrave.com/p/vllm-throughput-latency-sweep-on (A100-40GB, vLLM 0.23.0, Llama-3.1-8B-"
               "Instruct BF16, 1024 in / 128 out: 75 tok/s at C=1, 6.6x at C=8)"),
    H100_SXM.name: Calibration(
        points=((1, 6.48), (4, 6.59), (16, 10.94)),
        source="yobitelcomm.github.io/bench/recipes/concurrency-sweep (H100-80GB-HBM3, vLLM 0.21.0 fp16, "
               "Llama-3.1-8B-Instruct: TPOT p50 6.48/6.59/10.94 ms at C=1/4/16)"),
}
CALIBRATED_OVERHEAD_MS = 0.3  # scheduling + sampling per step with CUDA graphs


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


def calibrated_profile(gpu: GpuSpec, calibration: Calibration | None = None, **kwargs: object) -> Profile:
    """`roofline_profile` with memory efficiency and per-request cost solved from a published TPOT curve.

    TPOT(B) at k = 0 is verify(B) + B * per_request + overhead; below the compute knee verify(B) is the
    weight read. The slope through the first point (least squares) gives per_request; the batch-1 point
    then gives the weight-read time, hence the efficiency; the draft reads its weights at that efficiency.
    """
    cal = calibration or CALIBRATIONS[gpu.name]
    (b1, t1), rest = cal.points[0], cal.points[1:]
    slope = sum((b - b1) * (t - t1) for b, t in rest) / sum((b - b1) ** 2 for b, _ in rest) if rest else 0.0
    weights_ms = t1 - slope * b1 - CALIBRATED_OVERHEAD_MS - gpu.launch_ms
    efficiency = LLAMA_8B.params_b * 2e9 / (gpu.memory_gb_s * 1e9 * weights_ms / 1e3)
    if not 0.05 < efficiency <= 1.0:
        raise ValueError(f"calibration gives memory efficiency {efficiency:.2f}; check the points")
    tuned = gpu.model_copy(update={"memory_efficiency": round(efficiency, 4)})
    base = roofline_profile(tuned, **kwargs)  # type: ignore[arg-type]
    sizes = [1, 2, 4, *range(8, 256, 8), *range(256, 513, 16)]
    return base.model_copy(update={
        "description": f"{base.target} target, {base.draft} draft, on {gpu.name} (calibrated roofline), "
                       f"context {base.context_len}",
        "provenance": (
            f"SYNTHETIC, calibrated: roofline (uniscale_lc/specserve/synthetic.py) with memory efficiency "
            f"{efficiency:.3f} and per-request step cost {slope:.3f} ms solved so that TPOT without speculation "
            f"matches published measurements: {cal.source}. Acceptance per position is assumed "
            "(0.80 falling to 0.66, conditional), typical of a same-family 1B draft; verify padded to vLLM "
            "v1's default CUDA-graph sizes ([1, 2, 4] + 8..248 step 8 + 256..512 step 16, "
            "VllmConfig._set_cudagraph_sizes). Not a measurement of a speculative server: profile your own "
            "with `specserve profile`."),
        "hardware": f"{gpu.name} (calibrated to published vLLM TPOT)",
        "overhead_ms": CALIBRATED_OVERHEAD_MS,
        "verify_ms_per_request": round(slope, 5),
        "cuda_graph_sizes": sizes,
        "draft_model": "meta-llama/Llama-3.2-1B-Instruct",
        "target": "meta-llama/Llama-3.1-8B-Instruct (shape)",
    })


SHIPPED = {"example_a100_llama8b_draft1b.json": A100_40GB, "example_h100_llama8b_draft1b.json": H100_SXM}


if __name__ == "__main__":
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("profiles")
    for file_name, spec in SHIPPED.items():
        calibrated_profile(spec).to_json(out_dir / file_name)
        print(f"wrote {out_dir / file_name}")
