"""`EngineParts`: the learning parts of one router (arm space, featurizer, policy, cost model, pacer,
pending decisions, breakers, client), built from a validated `RouterConfig`, and the locks over them."""

from __future__ import annotations

import logging
import threading
from typing import Any

from .. import client as client_module
from ..arms import ArmSpace
from ..autosave import Autosaver
from ..breaker import CircuitBreakers
from ..costs import BudgetPacer, CostModel
from ..errors import ConfigError
from ..feedback import FeedbackStore
from ..model_spec import ModelSpec
from .config import (
    RouterConfig,
    check_load_signals,
    check_numbers,
    resolve_arm_space,
    resolve_client,
    resolve_featurizer,
    resolve_policy,
)
from .stats import RouterStats

__all__ = ["EngineParts", "unavailable_models"]

logger = logging.getLogger("uniscale_lc.core.engine")


def unavailable_models(arm_space: ArmSpace, label: str) -> dict[str, str]:
    """Models whose key variable is unset (display name -> why), warned about once; every model -> error.

    A request that picked such a model could only fail with a ConfigError, so it is left out of selection
    from the start (a loopback server needs no key and stays in).
    """
    missing: dict[str, str] = {}
    for spec in arm_space.models:
        if spec.key_missing and not client_module.is_loopback(spec.api_base):
            missing[spec.display_name] = (
                f"ModelSpec.api_key_env names {spec.api_key_env!r}, which is not set; export it "
                "(or pass api_key=SecretStr(...)) and rebuild"
            )
    if missing and len(missing) == len(arm_space.models):
        raise ConfigError(
            f"{label}.models: no model is usable: " + "; ".join(f"{n}: {why}" for n, why in missing.items())
        )
    for name, why in missing.items():
        logger.warning("uniscale: %s: model %s is left out of selection: %s", label, name, why)
    return missing


class EngineParts:
    """The learning parts of one router; `RoutingEngine` adds the request and feedback paths."""

    def __init__(self, config: RouterConfig, label: str):
        self.config = config
        self.label = label
        self._build_parts()
        # The state lock: every change that spans parts (stats, pending decisions, policy, cost model) holds it,
        # and so does taking a snapshot for saving, so a saved file is one consistent cut of all of them.
        self._lock = threading.RLock()
        # Held from taking a pending decision to recording it as scored, so that a duplicate arriving in that
        # window (a retry from another thread) sees the first result instead of "no pending decision".
        self._feedback_lock = threading.Lock()
        self._stats = RouterStats()
        self._specs: dict[str, ModelSpec] = {}
        self._autosaver: Autosaver | None = None  # set by the Router when state_path is configured
        self._shared: Any = None  # a shared_state.RouterLink once the Router joined its store

    def _build_parts(self) -> None:
        """Validate the configuration and build the learning parts; errors name the field and the fix."""
        config, label = self.config, self.label
        self._arm_space = resolve_arm_space(config, label)
        self._unavailable = unavailable_models(self._arm_space, label)
        check_numbers(config, label)
        self._featurizer = resolve_featurizer(config, label)
        self._policy = resolve_policy(config, label)
        load_dim = check_load_signals(config, label)
        self._policy.bind(self._arm_space, int(self._featurizer.dim) + config.tag_buckets + load_dim)
        self._cost_model = CostModel(self._arm_space)
        budget = config.budget_usd_per_request
        self._pacer = BudgetPacer(budget) if budget is not None else None
        self._feedback = FeedbackStore(ttl_s=config.feedback_ttl_s, max_pending=config.max_pending)
        self._breakers = CircuitBreakers(config.breaker) if config.breaker is not None else None
        self._client = resolve_client(config, label)
        self._policy_name = str(getattr(self._policy, "name", type(self._policy).__name__))

    @property
    def arm_space(self) -> ArmSpace:
        return self._arm_space

    @property
    def policy(self) -> Any:
        return self._policy

    @property
    def featurizer(self) -> Any:
        return self._featurizer

    @property
    def cost_model(self) -> CostModel:
        return self._cost_model

    @property
    def pacer(self) -> BudgetPacer | None:
        """The budget pacer when `budget_usd_per_request` is set (it adapts the cost weight)."""
        return self._pacer

    @property
    def client(self) -> Any:
        return self._client

    @property
    def pending_decisions(self) -> FeedbackStore:
        """The store of decisions waiting for feedback."""
        return self._feedback

    def cost_weight_now(self) -> float:
        return self._pacer.cost_weight if self._pacer is not None else self.config.cost_weight
