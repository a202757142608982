"""uniscale-lc: a router that learns which (model x strategy x budget) to run per request.

Front-ends: `UniScaleChat` (LangChain) and `UniScaleLLM` (LlamaIndex, an extra) over the framework-free
core `Router`. The building blocks (arms,
features, policies, costs, store) are imported eagerly; the router, the chat model, the client, the
serving tools and the replay load on first access, so `import uniscale_lc` stays light and never
imports litellm or LangChain.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .arms import Arm, ArmSpace
from .costs import BudgetPacer, CostModel, cost_penalty, reward_from
from .errors import (
    AllArmsFailedError,
    ConfigError,
    FeedbackError,
    ModelCallError,
    ModelTimeoutError,
    RateLimitedError,
    RequestRejectedError,
    StateError,
    UniScaleError,
)
from .features import EmbeddingsFeaturizer, Featurizer, HashingFeaturizer
from .model_spec import ModelSpec
from .policy import Decision, EpsilonGreedy, FixedArm, LinUCB, Policy, UniformRandom
from .store import load_state, save_state
from .strategies import BestOfN, JudgeScorer, MajorityVote, Reflection, Single
from .warm_start import LabelledOutcome

if TYPE_CHECKING:
    from .chat_model import UniScaleChat
    from .client import ModelClient, RetryPolicy
    from .feedback import FeedbackResult, FeedbackStore
    from .llama_index import UniScaleLLM
    from .router import Completion, CompletionChunk, Router, RouterConfig, RouteResult
    from .serving import LoadSignals, ServerMonitor, VLLMServer, VLLMServerConfig, slo_gate
    from .strategies.execute import StrategyResult, run_strategy

__version__ = "0.1.0"

# Public names that live in heavier modules, resolved on first access.
_LAZY = {
    "UniScaleChat": "uniscale_lc.chat_model",
    "UniScaleLLM": "uniscale_lc.llama_index",  # needs the [llama-index] extra
    "ModelClient": "uniscale_lc.client",
    "Router": "uniscale_lc.router",
    "RouterConfig": "uniscale_lc.router",
    "Completion": "uniscale_lc.router",
    "CompletionChunk": "uniscale_lc.router",
    "RouteResult": "uniscale_lc.router",
    "RetryPolicy": "uniscale_lc.client",
    "FeedbackStore": "uniscale_lc.feedback",
    "FeedbackResult": "uniscale_lc.feedback",
    "StrategyResult": "uniscale_lc.strategies.execute",
    "run_strategy": "uniscale_lc.strategies.execute",
    "LoadSignals": "uniscale_lc.serving",
    "ServerMonitor": "uniscale_lc.serving",
    "VLLMServer": "uniscale_lc.serving",
    "VLLMServerConfig": "uniscale_lc.serving",
    "slo_gate": "uniscale_lc.serving",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'uniscale_lc' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


__all__ = [
    "AllArmsFailedError",
    "Arm",
    "ArmSpace",
    "BestOfN",
    "BudgetPacer",
    "Completion",
    "CompletionChunk",
    "ConfigError",
    "CostModel",
    "Decision",
    "EmbeddingsFeaturizer",
    "EpsilonGreedy",
    "Featurizer",
    "FeedbackError",
    "FeedbackResult",
    "FeedbackStore",
    "FixedArm",
    "HashingFeaturizer",
    "JudgeScorer",
    "LabelledOutcome",
    "LinUCB",
    "LoadSignals",
    "MajorityVote",
    "ModelCallError",
    "ModelClient",
    "ModelSpec",
    "ModelTimeoutError",
    "Policy",
    "RateLimitedError",
    "Reflection",
    "RequestRejectedError",
    "RetryPolicy",
    "RouteResult",
    "Router",
    "RouterConfig",
    "ServerMonitor",
    "Single",
    "StateError",
    "StrategyResult",
    "UniScaleChat",
    "UniScaleError",
    "UniScaleLLM",
    "UniformRandom",
    "VLLMServer",
    "VLLMServerConfig",
    "__version__",
    "cost_penalty",
    "load_state",
    "reward_from",
    "run_strategy",
    "save_state",
    "slo_gate",
]
