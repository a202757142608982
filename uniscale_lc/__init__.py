"""uniscale-lc: a LangChain chat model that learns which (model x strategy x budget) to run per request."""

from .errors import (
    AllArmsFailedError,
    ConfigError,
    FeedbackError,
    ModelCallError,
    ModelTimeoutError,
    RateLimitedError,
    StateError,
    UniScaleError,
)
from .model_spec import ModelSpec
from .strategies import BestOfN, JudgeScorer, MajorityVote, Reflection, Single

__version__ = "0.1.0"

__all__ = [
    "AllArmsFailedError",
    "BestOfN",
    "ConfigError",
    "FeedbackError",
    "JudgeScorer",
    "MajorityVote",
    "ModelCallError",
    "ModelSpec",
    "ModelTimeoutError",
    "RateLimitedError",
    "Reflection",
    "Single",
    "StateError",
    "UniScaleError",
    "__version__",
]
