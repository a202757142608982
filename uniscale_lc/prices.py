"""Token prices from litellm's bundled price table, read as JSON so that litellm itself is not imported."""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path

_TABLE_FILE = "model_prices_and_context_window_backup.json"


@lru_cache(maxsize=1)
def litellm_price_table() -> dict[str, dict[str, object]]:
    """The price table litellm ships with; empty when litellm is not installed.

    Reading the file avoids litellm's ~3 s import and its network fetch of the live map.
    """
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    for location in spec.submodule_search_locations:
        path = Path(location) / _TABLE_FILE
        if path.is_file():
            with path.open(encoding="utf-8") as handle:
                table = json.load(handle)
            return {key: value for key, value in table.items() if isinstance(value, dict)}
    return {}


def lookup_usd_per_mtok(model: str) -> tuple[float, float] | None:
    """(input, output) USD per million tokens for a litellm model name, or None if unpriced.

    Tries the name as given, then without its provider prefix (`openai/gpt-4o-mini` -> `gpt-4o-mini`).
    """
    table = litellm_price_table()
    candidates = [model]
    if "/" in model:
        candidates.append(model.split("/", 1)[1])
    for name in candidates:
        entry = table.get(name)
        if not entry:
            continue
        input_cost = entry.get("input_cost_per_token")
        output_cost = entry.get("output_cost_per_token")
        if isinstance(input_cost, (int, float)) and isinstance(output_cost, (int, float)):
            return float(input_cost) * 1e6, float(output_cost) * 1e6
    return None
