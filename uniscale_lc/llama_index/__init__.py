"""LlamaIndex front-end: `UniScaleLLM`, a `llama_index.core.llms` LLM over the learning core (docs/llama_index.md).

Needs the optional extra: `pip install 'uniscale-lc[llama-index]'` (llama-index-core). `import uniscale_lc`
never imports this package, so the rest of the library works without it.
"""

from __future__ import annotations

try:
    import llama_index.core  # noqa: F401  (the extra's one package)
except ImportError as error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "uniscale_lc.llama_index needs llama-index-core, which is not installed; "
        "install the extra: pip install 'uniscale-lc[llama-index]'"
    ) from error

from .llm import UniScaleLLM

__all__ = ["UniScaleLLM"]
