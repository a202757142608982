"""SpecServe: SLO-aware adaptive speculative decoding plans for vLLM (goodput model, planner, simulator)."""

from .goodput import (
    accepted_length,
    adaptive_verify,
    choose_k,
    expected_accepted_tokens,
    goodput_curve,
    smartspec_accepted_length,
    step_time_ms,
    survival_from_conditional,
)
from .planner import BatchChoice, SpecPlan, merge_ranges, plan, speculative_config
from .profile import EXAMPLE_PROFILE, Profile, example_profile

__all__ = [
    "EXAMPLE_PROFILE",
    "BatchChoice",
    "Profile",
    "SpecPlan",
    "accepted_length",
    "adaptive_verify",
    "choose_k",
    "example_profile",
    "expected_accepted_tokens",
    "goodput_curve",
    "merge_ranges",
    "plan",
    "smartspec_accepted_length",
    "speculative_config",
    "step_time_ms",
    "survival_from_conditional",
]
