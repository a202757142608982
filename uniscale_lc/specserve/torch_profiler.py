"""Profile draft and target step times from torch forward passes (torch is optional: imported lazily).

A small decoder with a preallocated KV cache at `context_len` stands in for each model, with random
weights: the step time of a decoder depends on its shapes, not its weights. A draft step is one forward of
B tokens (one per request); a verify step is one target forward of B * (k + 1) tokens.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from .profile import Profile


@dataclass(frozen=True)
class DecoderDims:
    """Shape of a Llama-style decoder (random weights)."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int


LLAMA_8B_DIMS = DecoderDims("Llama-3.1-8B-shaped", 4096, 32, 32, 8, 14336, 128256)
LLAMA_1B_DIMS = DecoderDims("Llama-3.2-1B-shaped", 2048, 16, 32, 8, 8192, 128256)


def require_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise ConfigError("the torch profiler needs torch: pip install 'uniscale-lc[torch]'") from exc
    return torch


def build_decoder(dims: DecoderDims, device: str, dtype: Any) -> Callable[[Any, int], Any]:
    """A decoder step function f(input_ids (B, q), context_len) -> logits, with random weights."""
    torch = require_torch()
    functional = torch.nn.functional
    head_dim = dims.hidden // dims.heads
    gen = torch.Generator(device="cpu").manual_seed(0)

    def weight(*shape: int) -> Any:
        return (torch.randn(*shape, generator=gen) * 0.02).to(device=device, dtype=dtype)

    embed = weight(dims.vocab, dims.hidden)
    layers = [
        {
            "qkv": weight(dims.hidden, (dims.heads + 2 * dims.kv_heads) * head_dim),
            "o": weight(dims.heads * head_dim, dims.hidden),
            "up": weight(dims.hidden, 2 * dims.intermediate),
            "down": weight(dims.intermediate, dims.hidden),
        }
        for _ in range(dims.layers)
    ]
    lm_head = weight(dims.hidden, dims.vocab)
    caches: dict[tuple[int, int], list[tuple[Any, Any]]] = {}

    @torch.inference_mode()
    def step(input_ids: Any, context_len: int) -> Any:
        batch, q = input_ids.shape
        key = (batch, context_len)
        if key not in caches:  # the KV cache a running batch would hold, allocated once per shape
            shape = (batch, dims.kv_heads, context_len, head_dim)
            caches[key] = [(torch.zeros(shape, device=device, dtype=dtype),
                            torch.zeros(shape, device=device, dtype=dtype)) for _ in range(dims.layers)]
        x = embed[input_ids]
        for layer, (past_k, past_v) in zip(layers, caches[key], strict=True):
            qkv = x @ layer["qkv"]
            qh, kh, vh = qkv.split([dims.heads * head_dim, dims.kv_heads * head_dim, dims.kv_heads * head_dim], -1)
            qh = qh.view(batch, q, dims.heads, head_dim).transpose(1, 2)
            kh = torch.cat([past_k, kh.view(batch, q, dims.kv_heads, head_dim).transpose(1, 2)], dim=2)
            vh = torch.cat([past_v, vh.view(batch, q, dims.kv_heads, head_dim).transpose(1, 2)], dim=2)
            repeat = dims.heads // dims.kv_heads
            attn = functional.scaled_dot_product_attention(
                qh, kh.repeat_interleave(repeat, 1), vh.repeat_interleave(repeat, 1))
            x = x + attn.transpose(1, 2).reshape(batch, q, -1) @ layer["o"]
            gate, up = (x @ layer["up"]).chunk(2, dim=-1)
            x = x + (functional.silu(gate) * up) @ layer["down"]
        return x[:, -1:] @ lm_head

    return step


def time_ms(fn: Callable[[], Any], sync: Callable[[], None], warmup: int, iters: int) -> float:
    """Median wall time of fn in ms after warm-up (median: robust to one slow iteration)."""
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(samples))


def profile_pair(
    target: DecoderDims,
    draft: DecoderDims,
    acceptance_per_pos: Sequence[float],
    *,
    batch_sizes: Sequence[int] = (1, 4, 16, 64),
    max_k: int = 4,
    context_len: int = 1024,
    device: str = "cpu",
    dtype: str = "float32",
    warmup: int = 1,
    iters: int = 3,
    max_batch_size: int = 256,
) -> Profile:
    """Time draft steps at each batch size and target forwards at each B * (k + 1) tokens; build a Profile.

    Acceptance cannot come from random weights: pass what the real pair accepts (e.g. from /metrics).
    """
    torch = require_torch()
    torch_dtype = getattr(torch, dtype)
    sync: Callable[[], None] = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    target_step = build_decoder(target, device, torch_dtype)
    draft_step = build_decoder(draft, device, torch_dtype)

    def ids(batch: int, q: int) -> Any:
        return torch.zeros((batch, q), dtype=torch.long, device=device)

    def forward(step: Callable[[Any, int], Any], batch: int, q: int) -> Callable[[], Any]:
        return lambda: step(ids(batch, q), context_len)

    draft_ms = [time_ms(forward(draft_step, b, 1), sync, warmup, iters) for b in batch_sizes]
    verify: dict[int, list[float]] = {}
    for b in batch_sizes:
        for k in range(max_k + 1):
            verify.setdefault(b * (k + 1), []).append(time_ms(forward(target_step, b, k + 1), sync, warmup, iters))
    tokens = sorted(verify)
    verify_ms = [float(np.mean(verify[n])) for n in tokens]
    # Token counts reached by several (B, k) pairs are averaged; enforce monotone time in tokens.
    verify_ms = np.maximum.accumulate(np.array(verify_ms)).tolist()
    device_name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    return Profile(
        description=f"{target.name} target, {draft.name} draft, random weights, {dtype}, context {context_len}",
        provenance=(f"measured with torch forward passes (uniscale_lc/specserve/torch_profiler.py) on {device_name}; "
                    "decoder shapes with random weights; acceptance supplied by the caller"),
        synthetic=False,
        target=target.name,
        draft=draft.name,
        hardware=device_name,
        context_len=context_len,
        batch_sizes=list(batch_sizes),
        draft_ms=[round(x, 4) for x in draft_ms],
        verify_tokens=tokens,
        verify_ms=[round(x, 4) for x in verify_ms],
        acceptance_per_pos=list(acceptance_per_pos),
        max_batch_size=max_batch_size,
    )
