"""The dependency spec refuses the compromised litellm releases and keeps torch/vllm optional."""

from __future__ import annotations

import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _project() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["project"]


def test_litellm_spec_refuses_compromised_releases() -> None:
    (litellm,) = [Requirement(r) for r in _project()["dependencies"] if Requirement(r).name == "litellm"]
    for bad in ("1.82.7", "1.82.8"):
        assert not litellm.specifier.contains(Version(bad)), bad
    assert litellm.specifier.contains(Version("1.83.0"))


def test_every_base_dependency_is_pinned_to_a_range() -> None:
    for text in _project()["dependencies"]:
        requirement = Requirement(text)
        operators = {spec.operator for spec in requirement.specifier}
        assert ">=" in operators and "<" in operators, f"{requirement.name} needs a lower and an upper bound"


def test_heavy_packages_are_optional_extras() -> None:
    base = {Requirement(r).name for r in _project()["dependencies"]}
    assert not base & {"torch", "vllm", "sentence-transformers", "matplotlib"}
    extras = _project()["optional-dependencies"]
    assert {"torch", "vllm", "embeddings", "plot", "test", "dev"} <= set(extras)
