"""Hand-made outcome tables (the `../shared/data` format) where the right arm per question is known."""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from uniscale_lc.replay.data import OUTCOME_COLUMNS

_PRICE = {"params_b": None, "price_source": "t"}
BIG_SMALL_MODELS = {
    "big": {"input_usd_per_mtok": 50.0, "output_usd_per_mtok": 100.0, **_PRICE},
    "small": {"input_usd_per_mtok": 0.5, "output_usd_per_mtok": 1.0, **_PRICE},  # 100x cheaper
}


def write_big_small_table(
    directory: Path, questions: Sequence[dict[str, Any]], correct: Sequence[tuple[bool, bool]]
) -> Path:
    """One direct answer of `big` and of `small` per question; `correct[i]` = (big right, small right)."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for question, (big_right, small_right) in zip(questions, correct, strict=True):
        for model, right, cost in (("big", big_right, "0.01"), ("small", small_right, "0.0001")):
            rows.append(
                [question["qid"], model, "direct", "0", "a", "1" if right else "0", "100", "50", "1", cost]
            )
    (directory / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    (directory / "models.json").write_text(json.dumps(BIG_SMALL_MODELS))
    with gzip.open(directory / "outcomes.csv.gz", "wt") as handle:
        handle.write("\n".join([",".join(OUTCOME_COLUMNS)] + [",".join(row) for row in rows]) + "\n")
    return directory
