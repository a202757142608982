"""Context features of a prompt: what the policy sees about a request before it picks an arm.

The default needs no extra dependency and is deterministic across processes and machines: it hashes
with CRC-32 and a fixed multiplicative hash, never Python's salted `hash()`.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .errors import ConfigError

__all__ = ["STAT_NAMES", "EmbeddingsFeaturizer", "Featurizer", "HashingFeaturizer", "prompt_statistics"]


@runtime_checkable
class Featurizer(Protocol):
    """Maps prompt text to a fixed-size float vector."""

    @property
    def dim(self) -> int: ...

    def transform(self, text: str) -> np.ndarray: ...

    def transform_batch(self, texts: Sequence[str]) -> np.ndarray: ...


_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]", re.IGNORECASE)
_CODE = re.compile(r"```|\bdef |\bclass |\breturn\b|\bfn |;\s*$|\{\s*$|#include|=>|\bimport\b", re.MULTILINE)
_MATHS = re.compile(r"[+\-*/=^<>%]|\\frac|\\sqrt|\bsum\b|\bintegral\b|\bequation\b", re.IGNORECASE)
_QUESTION = re.compile(
    r"^\s*(what|how|why|when|where|which|who|whom|whose|is|are|can|does|do|should)\b", re.I
)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_OPTIONS = re.compile(r"(?:^|\n)\s*\(?[A-D][.)]\s", re.MULTILINE)

STAT_NAMES: tuple[str, ...] = (
    "log_chars",
    "digit_ratio",
    "log_numbers",
    "code",
    "maths_ratio",
    "question_form",
    "multiple_choice",
    "log_lines",
)


def prompt_statistics(text: str) -> np.ndarray:
    """Eight prompt statistics, each scaled to roughly [0, 1] (see `STAT_NAMES`)."""
    chars = len(text)
    if chars == 0:
        return np.zeros(len(STAT_NAMES))
    digits = sum(map(text.count, "0123456789"))  # C-level counts: a per-character loop costs 10x more
    numbers = len(_NUMBER.findall(text))
    maths = len(_MATHS.findall(text))
    stripped = text.strip()
    question = 1.0 if stripped.endswith("?") or _QUESTION.match(stripped) else 0.0
    return np.array(
        [
            min(math.log1p(chars) / 10.0, 1.5),
            digits / chars,
            min(math.log1p(numbers) / 4.0, 1.5),
            1.0 if _CODE.search(text) else 0.0,
            min(maths / max(1.0, chars / 20.0), 1.0),
            question,
            1.0 if len(_OPTIONS.findall(text)) >= 2 else 0.0,
            min(math.log1p(text.count("\n")) / 5.0, 1.5),
        ]
    )


# Odd 32-bit multiplier (Knuth) for the vectorised character n-gram hash.
_MIX = np.uint64(2654435761)
_MASK32 = np.uint64(0xFFFFFFFF)


class HashingFeaturizer:
    """Word 1-2-grams and character 3-grams hashed into `dim - 8` signed buckets, plus 8 statistics.

    The hashed block is L2-normalised (so long prompts do not dominate); each statistic lies in
    [0, 1.5] (five in [0, 1]), so the whole vector's norm is at most sqrt(1 + 11.75 w^2) (3.6 at the
    default stats_weight w = 1), and below 2 for typical prompts. Only the first `max_chars` characters
    are hashed, which bounds the cost of enormous prompts; the statistics see the whole text.
    """

    def __init__(
        self, dim: int = 64, *, char_ngram: int = 3, max_chars: int = 4000, stats_weight: float = 1.0
    ):
        if not isinstance(dim, int) or dim < len(STAT_NAMES) + 4:
            raise ConfigError(f"HashingFeaturizer.dim: got {dim!r}; use an int >= {len(STAT_NAMES) + 4}")
        if char_ngram < 1:
            raise ConfigError(f"HashingFeaturizer.char_ngram: got {char_ngram!r}; use an int >= 1")
        if max_chars < 1:
            raise ConfigError(f"HashingFeaturizer.max_chars: got {max_chars!r}; use an int >= 1")
        self._dim = dim
        self.n_hash = dim - len(STAT_NAMES)
        self.char_ngram = char_ngram
        self.max_chars = max_chars
        self.stats_weight = float(stats_weight)

    @property
    def dim(self) -> int:
        return self._dim

    def config(self) -> dict[str, Any]:
        """Everything that determines the mapping, saved with learnt state to detect mismatches."""
        return {
            "kind": "hashing",
            "dim": self._dim,
            "char_ngram": self.char_ngram,
            "max_chars": self.max_chars,
            "stats_weight": self.stats_weight,
        }

    def _hashed(self, text: str) -> np.ndarray:
        vector = np.zeros(self.n_hash)
        head = text[: self.max_chars].lower()
        words = _WORD.findall(head)
        if words:
            # surrogatepass: a lone surrogate (possible in JSON input) hashes instead of raising.
            unigrams = np.fromiter(
                (zlib.crc32(word.encode("utf-8", "surrogatepass")) for word in words),
                dtype=np.uint64,
                count=len(words),
            )
            # Bigrams hash from their words' codes, without building the bigram strings.
            bigrams = ((unigrams[:-1] * _MIX + unigrams[1:]) & _MASK32) ^ np.uint64(0x5BD1E995)
            self._accumulate(vector, np.concatenate([unigrams, bigrams]))
        raw = np.frombuffer(head.encode("utf-8", errors="surrogatepass"), dtype=np.uint8).astype(np.uint64)
        if raw.size >= self.char_ngram:
            codes = np.zeros(raw.size - self.char_ngram + 1, dtype=np.uint64)
            for offset in range(self.char_ngram):
                codes = (codes * np.uint64(257) + raw[offset : offset + codes.size]) & _MASK32
            codes = ((codes * _MIX) & _MASK32) ^ np.uint64(0x9E3779B9)
            self._accumulate(vector, codes, weight=0.5)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector

    def _accumulate(self, vector: np.ndarray, codes: np.ndarray, weight: float = 1.0) -> None:
        buckets = (codes % np.uint64(self.n_hash)).astype(np.intp)
        signs = np.where((codes >> np.uint64(20)) & np.uint64(1), weight, -weight)
        vector += np.bincount(buckets, weights=signs, minlength=self.n_hash)

    def transform(self, text: str) -> np.ndarray:
        """Feature vector of one prompt; the empty prompt is valid and maps to zeros."""
        if not isinstance(text, str):
            raise ConfigError(
                f"HashingFeaturizer.transform.text: got {type(text).__name__}; pass the prompt as str"
            )
        return np.concatenate([self.stats_weight * prompt_statistics(text), self._hashed(text)])

    def transform_batch(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self._dim))
        return np.stack([self.transform(text) for text in texts])


class EmbeddingsFeaturizer:
    """Any LangChain `Embeddings` as a featurizer, optionally reduced by a seeded random projection.

    Vectors are L2-normalised so that the policy's exploration bonus means the same for any embedder.
    """

    def __init__(self, embeddings: Any, dim: int | None = None, *, seed: int = 0):
        if not hasattr(embeddings, "embed_query") or not hasattr(embeddings, "embed_documents"):
            raise ConfigError(
                "EmbeddingsFeaturizer.embeddings: needs a LangChain Embeddings object "
                "(with embed_query and embed_documents)"
            )
        if dim is not None and (not isinstance(dim, int) or dim < 1):
            raise ConfigError(f"EmbeddingsFeaturizer.dim: got {dim!r}; use a positive int or None")
        self.embeddings = embeddings
        self.seed = seed
        self._target_dim = dim
        self._source_dim: int | None = None
        self._projection: np.ndarray | None = None

    def _ensure_dims(self, source_dim: int) -> None:
        if self._source_dim is None:
            self._source_dim = source_dim
            if self._target_dim is not None and self._target_dim != source_dim:
                rng = np.random.default_rng(self.seed)
                self._projection = rng.standard_normal((source_dim, self._target_dim)) / math.sqrt(
                    self._target_dim
                )
        elif source_dim != self._source_dim:
            raise ConfigError(
                f"EmbeddingsFeaturizer: the embedder returned {source_dim} dims after {self._source_dim}; "
                "use one embedding model per featurizer"
            )

    @property
    def dim(self) -> int:
        if self._target_dim is not None:
            return self._target_dim
        if self._source_dim is None:
            self._ensure_dims(len(self.embeddings.embed_query("dimension probe")))
        assert self._source_dim is not None
        return self._source_dim

    def config(self) -> dict[str, Any]:
        return {
            "kind": "embeddings",
            "dim": self.dim,
            "seed": self.seed,
            "embedder": type(self.embeddings).__name__,
        }

    def _finish(self, matrix: np.ndarray) -> np.ndarray:
        self._ensure_dims(matrix.shape[1])
        if self._projection is not None:
            matrix = matrix @ self._projection
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)

    def transform(self, text: str) -> np.ndarray:
        vector = np.asarray(self.embeddings.embed_query(text), dtype=np.float64)[None, :]
        return self._finish(vector)[0]

    def transform_batch(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim))
        matrix = np.asarray(self.embeddings.embed_documents(list(texts)), dtype=np.float64)
        return self._finish(matrix)
