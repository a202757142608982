"""`Profile`: what the planner needs to know about one draft/target pair on one machine (JSON on disk)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import ConfigError, field_error


class Profile(BaseModel):
    """Profiled step times and acceptance statistics of a speculative-decoding pair.

    Step-time model (SpecServe): T(k, B) = k * draft_ms(B) + verify_ms((k + 1) * B) + B * verify_ms_per_request
    + overhead_ms, with
    draft_ms tabulated per batch size and verify_ms per number of tokens in the target's forward pass;
    values between grid points are interpolated linearly, values past the last point extrapolated linearly.

    `acceptance_per_pos[j-1]` is P(draft positions 1..j are all accepted), which is exactly what vLLM's
    `spec_decode_num_accepted_tokens_per_pos_total{position=j-1}` / `spec_decode_num_drafts_total` measures.
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    description: str = ""
    provenance: str = Field(min_length=1, description="how the numbers were obtained (measured/synthetic)")
    synthetic: bool = Field(description="True when the numbers are not measurements")
    target: str = ""
    draft: str = ""
    draft_model: str = Field(
        default="", description="the draft vLLM loads (`model` in --speculative-config), e.g. a Hugging Face id"
    )
    method: str = Field(default="draft_model", description="vLLM speculative method the numbers belong to")
    hardware: str = ""
    context_len: int = Field(default=1024, ge=1, description="context length the times were taken at")
    batch_sizes: list[int] = Field(min_length=1)
    draft_ms: list[float] = Field(min_length=1, description="one draft step, per batch size")
    verify_tokens: list[int] = Field(min_length=1)
    verify_ms: list[float] = Field(min_length=1, description="one target forward, per tokens in it")
    overhead_ms: float = Field(default=0.0, ge=0, description="per-step scheduling/sampling overhead")
    verify_ms_per_request: float = Field(
        default=0.0, ge=0, description="per running request per target step, independent of k (KV-cache read)"
    )
    acceptance_per_pos: list[float] = Field(min_length=1)
    max_batch_size: int = Field(default=256, ge=1, description="vLLM --max-num-seqs the plan covers")
    prefill_ms_per_request: float = Field(default=0.0, ge=0, description="simulator only: admission cost")
    acceptance_spread: float = Field(
        default=0.4, ge=0, le=3,
        description="sigma of log e_i, where request i accepts position j with rate c_j ** e_i (c_j: the "
        "profile's conditional rate); the planner holds the SLO for the request at `slo_quantile` of it",
    )
    cuda_graph_sizes: list[int] = Field(
        default_factory=list,
        description="token counts with a captured CUDA graph: a verify of n tokens runs padded to the next "
        "one (empty: no padding); vLLM v1's default capture list for max_num_seqs 256",
    )

    @model_validator(mode="after")
    def _check(self) -> Profile:
        pairs = (("batch_sizes", "draft_ms"), ("verify_tokens", "verify_ms"))
        for grid_name, values_name in pairs:
            grid, values = getattr(self, grid_name), getattr(self, values_name)
            if len(grid) != len(values):
                raise ValueError(f"{grid_name} and {values_name} must have the same length")
            if any(b <= a for a, b in itertools.pairwise(grid)) or grid[0] < 1:
                raise ValueError(f"{grid_name} must be strictly increasing positive integers")
            if any(not np.isfinite(v) or v < 0 for v in values):
                raise ValueError(f"{values_name} must be finite and >= 0")
        sizes = self.cuda_graph_sizes
        if any(b <= a for a, b in itertools.pairwise(sizes)) or (sizes and sizes[0] < 1):
            raise ValueError("cuda_graph_sizes must be strictly increasing positive integers")
        acc = self.acceptance_per_pos
        if any(not 0.0 <= a <= 1.0 for a in acc) or any(b > a + 1e-9 for a, b in itertools.pairwise(acc)):
            raise ValueError(
                "acceptance_per_pos must be non-increasing probabilities in [0, 1] "
                "(P(positions 1..j all accepted)); convert per-position conditional rates with cumprod"
            )
        return self

    @property
    def alpha(self) -> float:
        """SmartSpec's one global per-token acceptance rate: the i.i.d. rate whose expected accepted length
        at the profiled depth equals the measured one (fair to SmartSpec: right on average, wrong in shape)."""
        return fit_alpha(self.acceptance_per_pos)

    def to_json(self, path: Path | str) -> None:
        Path(path).write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_json(cls, path: Path | str) -> Profile:
        """Load and validate; errors name the file and the field."""
        source = Path(path)
        data = read_json("Profile", source, "no such file; run `specserve profile` first")
        try:
            return cls.model_validate(data)
        except ValueError as exc:
            raise ConfigError(f"Profile {source}: {exc}") from exc


def read_json(owner: str, source: Path, missing_fix: str) -> object:
    """Parsed JSON of a file; a missing or malformed file is a ConfigError naming `owner.path`."""
    try:
        return json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise field_error(owner, "path", str(source), missing_fix) from exc
    except json.JSONDecodeError as exc:
        raise field_error(owner, "path", str(source), f"not valid JSON ({exc})") from exc


def fit_alpha(survival: list[float]) -> float:
    """Solve sum_{j=1..K} alpha^j = sum_j survival_j for alpha in [0, 1] by bisection."""
    target = float(np.sum(survival))
    depth = len(survival)
    if target >= depth - 1e-12:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if float(np.sum(mid ** np.arange(1, depth + 1))) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


EXAMPLE_PROFILE = Path(__file__).with_name("profiles") / "example_a100_llama8b_draft1b.json"


def example_profile() -> Profile:
    """The shipped synthetic example (illustrative roofline numbers, not a measurement)."""
    return Profile.from_json(EXAMPLE_PROFILE)
