"""Policies: LinUCB over joint context x arm features, and baselines behind the same protocol."""

from .base import ArmScore, Decision, Policy
from .baselines import EpsilonGreedy, FixedArm, UniformRandom
from .linucb import LinUCB

__all__ = ["ArmScore", "Decision", "EpsilonGreedy", "FixedArm", "LinUCB", "Policy", "UniformRandom"]
