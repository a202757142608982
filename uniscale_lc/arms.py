"""Arms: (model, strategy) pairs, their stable ids, and feature vectors that let learning transfer.

An arm's features describe it (which model, how expensive, how large, which strategy, what budget), so
a new budget of a known strategy on a known model starts from what its neighbours taught the policy.
"""

from __future__ import annotations

import functools
import math
import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError
from .model_spec import ModelSpec
from .strategies.config import STRATEGY_KINDS, Strategy

__all__ = ["ARM_FEATURE_DIM", "ARM_FEATURE_NAMES", "Arm", "ArmSpace", "ModelSpec", "arm_features"]

_MODEL_HASH_BUCKETS = 6
_SCALED_KINDS = ("best_of_n", "majority_vote", "reflection")

ARM_FEATURE_NAMES: tuple[str, ...] = (
    "bias",
    *(f"model_hash_{i}" for i in range(_MODEL_HASH_BUCKETS)),
    "log_price",
    "log_params",
    "params_unknown",
    *(f"kind={kind}" for kind in STRATEGY_KINDS),
    "log_budget",
    *(f"kind={kind}*log_budget" for kind in _SCALED_KINDS),
    "log_price*log_budget",
    "self_hosted",
)
ARM_FEATURE_DIM = len(ARM_FEATURE_NAMES)


@dataclass(frozen=True)
class Arm:
    """One action: run `strategy` on `model`. The id is readable and stable across processes."""

    model: ModelSpec
    strategy: Strategy

    @functools.cached_property
    def id(self) -> str:
        # Cached: read several times per request for every candidate (both halves are frozen).
        return f"{self.model.display_name}|{self.strategy.label}"


def _model_identity(name: str) -> np.ndarray:
    """Signed feature hashing of the model name: fixed width, so adding a model adds no dimension."""
    vector = np.zeros(_MODEL_HASH_BUCKETS)
    for salt in (b"a", b"b"):
        digest = zlib.crc32(salt + name.encode("utf-8"))
        bucket = digest % _MODEL_HASH_BUCKETS
        sign = 1.0 if (digest >> 16) & 1 else -1.0
        vector[bucket] += sign / math.sqrt(2.0)
    return vector


def arm_features(arm: Arm) -> np.ndarray:
    """The arm's descriptor vector (see `ARM_FEATURE_NAMES`); magnitudes kept near [-1, 1]."""
    model, strategy = arm.model, arm.strategy
    log_price = math.log10(model.blended_usd_per_mtok + 1e-3) / 2.0
    log_params = math.log10(model.params_b) / 2.0 if model.params_b else 0.0
    log_budget = math.log2(strategy.budget) / 4.0
    kind_onehot = [1.0 if strategy.kind == kind else 0.0 for kind in STRATEGY_KINDS]
    kind_budget = [log_budget if strategy.kind == kind else 0.0 for kind in _SCALED_KINDS]
    values = [
        1.0,
        *_model_identity(model.display_name),
        log_price,
        log_params,
        0.0 if model.params_b else 1.0,
        *kind_onehot,
        log_budget,
        *kind_budget,
        log_price * log_budget,
        1.0 if model.self_hosted else 0.0,
    ]
    return np.asarray(values, dtype=np.float64)


class ArmSpace:
    """The set of arms a policy chooses from; arms can be added and removed while serving.

    Policies key what they learn by arm id, so removing an arm and adding it back later (an outage)
    resumes from what was learnt.
    """

    def __init__(self, arms: Iterable[Arm]):
        self._lock = threading.RLock()
        self._arms: dict[str, Arm] = {}
        for arm in arms:
            self._insert(arm)
        if not self._arms:
            raise ConfigError(
                "ArmSpace.arms: got an empty list; pass at least one Arm, "
                "or build it with ArmSpace.product(models, strategies)"
            )
        self.version = 0
        self._feature_cache: dict[tuple[str, ...], np.ndarray] = {}
        self._clear_views()

    def _clear_views(self) -> None:
        # Views read on every request, rebuilt only when the space changes.
        self._ids: tuple[str, ...] | None = None
        self._arm_tuple: tuple[Arm, ...] | None = None
        self._models: tuple[ModelSpec, ...] | None = None
        self._ids_by_model: dict[str, tuple[str, ...]] | None = None

    @classmethod
    def product(cls, models: Sequence[ModelSpec], strategies: Sequence[Strategy]) -> ArmSpace:
        """Every model with every strategy: the unified routing x test-time-scaling space."""
        if not models:
            raise ConfigError("ArmSpace.product.models: got no models; pass at least one ModelSpec")
        if not strategies:
            raise ConfigError("ArmSpace.product.strategies: got no strategies; pass e.g. [Single()]")
        return cls(Arm(model, strategy) for model in models for strategy in strategies)

    def _insert(self, arm: Arm) -> None:
        if not isinstance(arm, Arm):
            raise ConfigError(f"ArmSpace.arms: got {type(arm).__name__}; pass Arm(model, strategy) objects")
        if arm.id in self._arms:
            raise ConfigError(
                f"ArmSpace.arms: duplicate arm id {arm.id!r}; give the ModelSpecs distinct `name`s "
                "or drop the repeated strategy"
            )
        self._arms[arm.id] = arm

    # ---------------------------------------------------------------- mutation (thread-safe)

    def add(self, arm: Arm) -> None:
        """Add an arm while serving; what the policy learnt about other arms is untouched."""
        with self._lock:
            self._insert(arm)
            self._changed()

    def remove(self, arm_id: str) -> Arm:
        """Remove an arm (e.g. an outage); its learnt state stays in the policy for a later re-add."""
        with self._lock:
            if arm_id not in self._arms:
                raise ConfigError(f"ArmSpace.remove.arm_id: unknown {arm_id!r}; known ids: {self.ids[:8]}")
            if len(self._arms) == 1:
                raise ConfigError("ArmSpace.remove: cannot remove the last arm; add its replacement first")
            arm = self._arms.pop(arm_id)
            self._changed()
            return arm

    def _changed(self) -> None:
        self.version += 1
        self._feature_cache.clear()
        self._clear_views()

    # ---------------------------------------------------------------- queries

    @property
    def ids(self) -> tuple[str, ...]:
        ids = self._ids
        if ids is None:
            ids = self._ids = tuple(self._arms)
        return ids

    @property
    def arms(self) -> tuple[Arm, ...]:
        arms = self._arm_tuple
        if arms is None:
            arms = self._arm_tuple = tuple(self._arms.values())
        return arms

    @property
    def models(self) -> tuple[ModelSpec, ...]:
        """Distinct models in the space, in first-seen order."""
        models = self._models
        if models is None:
            seen: dict[str, ModelSpec] = {}
            for arm in self.arms:
                seen.setdefault(arm.model.display_name, arm.model)
            models = self._models = tuple(seen.values())
        return models

    def ids_of_model(self, display_name: str) -> tuple[str, ...]:
        """The ids of the arms that run the model named `display_name` (empty if none)."""
        by_model = self._ids_by_model
        if by_model is None:
            grouped: dict[str, list[str]] = {}
            for arm in self.arms:
                grouped.setdefault(arm.model.display_name, []).append(arm.id)
            by_model = self._ids_by_model = {name: tuple(ids) for name, ids in grouped.items()}
        return by_model.get(display_name, ())

    def __len__(self) -> int:
        return len(self._arms)

    def __iter__(self) -> Iterator[Arm]:
        return iter(self.arms)

    def __contains__(self, arm_id: object) -> bool:
        return arm_id in self._arms

    def __getitem__(self, arm_id: str) -> Arm:
        try:
            return self._arms[arm_id]
        except KeyError:
            raise ConfigError(
                f"arm id {arm_id!r} is not in the arm space; known ids: {list(self._arms)[:8]}"
            ) from None

    def get(self, arm_id: str) -> Arm | None:
        """The arm with this id, or None."""
        return self._arms.get(arm_id)

    def check_ids(self, arm_ids: Sequence[str], owner: str = "arms") -> tuple[str, ...]:
        """Validate a subset of arm ids (non-empty, all known), returned as a tuple."""
        ids = tuple(arm_ids)
        if not ids:
            raise ConfigError(f"{owner}: got an empty subset; pass None for all arms or at least one arm id")
        unknown = [arm_id for arm_id in ids if arm_id not in self._arms]
        if unknown:
            raise ConfigError(f"{owner}: unknown arm ids {unknown[:5]}; known ids: {list(self._arms)[:8]}")
        return ids

    def features(self, arm_ids: Sequence[str] | None = None) -> np.ndarray:
        """(len(arm_ids), ARM_FEATURE_DIM) matrix of arm features; cached per subset."""
        ids = self.ids if arm_ids is None else tuple(arm_ids)
        cached = self._feature_cache.get(ids)
        if cached is None:
            cached = (
                np.stack([arm_features(self[arm_id]) for arm_id in ids])
                if ids
                else np.zeros((0, ARM_FEATURE_DIM))
            )
            cached.setflags(write=False)
            if len(self._feature_cache) > 256:
                self._feature_cache.clear()
            self._feature_cache[ids] = cached
        return cached
