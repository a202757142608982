"""Featurizers: deterministic (also across processes), bounded, fixed size, any unicode text."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.embeddings import DeterministicFakeEmbedding

from uniscale_lc.errors import ConfigError
from uniscale_lc.features import STAT_NAMES, EmbeddingsFeaturizer, HashingFeaturizer

# Any code point, lone surrogates included (they reach us from JSON such as "\ud800").
ANY_TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=300)
# Hashed block has norm <= 1; each of the 8 statistics is in [0, 1.5] (see the docstring).
NORM_BOUND = float(np.sqrt(1.0 + 3 * 1.5**2 + 5 * 1.0**2))


@settings(max_examples=150, deadline=None)
@given(ANY_TEXT)
def test_hashing_featurizer_is_deterministic_bounded_and_fixed_size(text):
    featurizer = HashingFeaturizer(dim=48)
    first, second = featurizer.transform(text), HashingFeaturizer(dim=48).transform(text)
    assert first.shape == (48,)
    assert np.isfinite(first).all()
    assert np.array_equal(first, second)
    assert np.linalg.norm(first) <= NORM_BOUND
    assert np.linalg.norm(first[len(STAT_NAMES) :]) <= 1.0 + 1e-12


def test_typical_prompts_stay_below_norm_two_and_the_documented_bound_holds():
    featurizer = HashingFeaturizer()
    typical = ["What is 2+2?", "Write a haiku about the sea.", "def f(x):\n    return x * 2\n# fix the bug"]
    assert all(np.linalg.norm(featurizer.transform(t)) < 2.0 for t in typical)
    # A pathological prompt (long, many lines of numbers, code, maths, options) reaches the bound's region.
    worst = "What?\n" + "\n".join(
        f"({c}) x = {i} + {i}/3; def f(): return {i}" for i, c in zip(range(400), "ABCD" * 100, strict=True)
    )
    vector = featurizer.transform(worst)
    assert 2.0 < np.linalg.norm(vector) <= NORM_BOUND


def test_empty_prompt_is_valid():
    vector = HashingFeaturizer(dim=16).transform("")
    assert vector.shape == (16,) and not vector.any()
    assert HashingFeaturizer(dim=16).transform_batch([]).shape == (0, 16)


def test_lone_surrogates_do_not_crash():
    vector = HashingFeaturizer().transform("answer \ud800 is 4 \udfff")
    assert np.isfinite(vector).all() and np.linalg.norm(vector[len(STAT_NAMES) :]) > 0


def test_hashing_is_the_same_across_processes_with_different_hash_seeds():
    texts = ["What is 2+2?", "héllo wörld ∑ 🙂", "", "def f():\n  return 1\n(A) x\n(B) y"]
    script = (
        "import json, sys\n"
        "from uniscale_lc.features import HashingFeaturizer\n"
        "texts = json.loads(sys.argv[1])\n"
        "print(json.dumps([HashingFeaturizer(dim=32).transform(t).tolist() for t in texts]))\n"
    )
    results = []
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        output = subprocess.run(
            [sys.executable, "-c", script, json.dumps(texts)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        results.append(json.loads(output))
    here = [HashingFeaturizer(dim=32).transform(t).tolist() for t in texts]
    assert results[0] == results[1] == here


def test_batch_equals_one_by_one_and_bad_input_names_the_field():
    featurizer = HashingFeaturizer(dim=24)
    texts = ["a", "b c", ""]
    assert np.array_equal(
        featurizer.transform_batch(texts), np.stack([featurizer.transform(t) for t in texts])
    )
    with pytest.raises(ConfigError, match=r"HashingFeaturizer\.dim"):
        HashingFeaturizer(dim=4)
    with pytest.raises(ConfigError, match=r"transform\.text"):
        featurizer.transform(None)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(max_size=80), min_size=1, max_size=4))
def test_embeddings_featurizer_projection_is_seeded_and_normalised(texts):
    embedder = DeterministicFakeEmbedding(size=40)
    one = EmbeddingsFeaturizer(embedder, dim=12, seed=3)
    two = EmbeddingsFeaturizer(DeterministicFakeEmbedding(size=40), dim=12, seed=3)
    other = EmbeddingsFeaturizer(DeterministicFakeEmbedding(size=40), dim=12, seed=4)
    batch = one.transform_batch(texts)
    assert batch.shape == (len(texts), 12)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0)
    assert np.allclose(batch[0], two.transform(texts[0]))
    assert np.allclose(batch, two.transform_batch(texts))
    assert not np.allclose(other.transform(texts[0]), batch[0])


def test_embeddings_featurizer_without_projection_and_errors():
    featurizer = EmbeddingsFeaturizer(DeterministicFakeEmbedding(size=16))
    assert featurizer.dim == 16
    vector = featurizer.transform("")
    assert vector.shape == (16,) and np.isclose(np.linalg.norm(vector), 1.0)
    with pytest.raises(ConfigError, match=r"EmbeddingsFeaturizer\.embeddings"):
        EmbeddingsFeaturizer(object())
    with pytest.raises(ConfigError, match=r"EmbeddingsFeaturizer\.dim"):
        EmbeddingsFeaturizer(DeterministicFakeEmbedding(size=8), dim=0)
