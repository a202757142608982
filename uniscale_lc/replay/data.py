"""Load a recorded outcome-table directory (see ../shared/data/README.md) into compact numpy arrays.

Nothing here knows any particular dataset: every directory with `questions.jsonl`, `outcomes.csv.gz` and
`models.json` in the documented format loads the same way, and every malformed value is reported with its
file, line and field so that a broken table fails at load time rather than as a wrong number later.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UniScaleError

__all__ = [
    "OUTCOME_COLUMNS",
    "Generator",
    "ModelPrice",
    "OutcomeTable",
    "OutcomeTableError",
    "load_outcome_table",
]

OUTCOME_COLUMNS: tuple[str, ...] = (
    "qid",
    "model",
    "method",
    "sample",
    "answer",
    "correct",
    "input_tokens",
    "output_tokens",
    "tokens_estimated",
    "cost_usd",
)
_QUESTION_FIELDS = ("qid", "prompt", "gold", "task")
_MODEL_FIELDS = ("input_usd_per_mtok", "output_usd_per_mtok", "params_b", "price_source")
# Correctness may carry float rounding from graded metrics; anything further out is a broken row.
_CORRECT_TOLERANCE = 1e-9


class OutcomeTableError(UniScaleError, ValueError):
    """An outcome table is missing a file or holds a malformed value; the message names file, line, field."""


@dataclass(frozen=True)
class ModelPrice:
    """A model's row in `models.json`: token prices, size if known, and where the price came from."""

    input_usd_per_mtok: float
    output_usd_per_mtok: float
    params_b: float | None
    price_source: str


@dataclass(frozen=True, order=True)
class Generator:
    """A (model, method) pair: one way of producing answers whose samples are interchangeable."""

    model: str
    method: str

    @property
    def name(self) -> str:
        """`model:method`, the readable name used in arm ids (no `|`, which separates arm id parts)."""
        return f"{self.model}:{self.method}"


@dataclass(frozen=True, eq=False)
class OutcomeTable:
    """One dataset: questions, prices, generators and one array entry per recorded answer (row).

    Rows are sorted by (generator, question, sample), so one generator's rows are a contiguous block
    (`generator_rows`). Answers stay Python strings because voting compares them as strings.
    """

    name: str
    path: Path
    qids: tuple[str, ...]
    prompts: tuple[str, ...]
    golds: tuple[str | None, ...]
    tasks: tuple[str, ...]
    models: dict[str, ModelPrice]
    generators: tuple[Generator, ...]
    row_question: np.ndarray  # int32 index into qids
    row_generator: np.ndarray  # int32 index into generators
    row_sample: np.ndarray  # int32 sample index as recorded
    row_answer: np.ndarray  # object array of str ("" when none was extracted)
    row_correct: np.ndarray  # float64 in [0, 1]
    row_input_tokens: np.ndarray  # int64
    row_output_tokens: np.ndarray  # int64
    row_tokens_estimated: np.ndarray  # bool
    row_cost_usd: np.ndarray  # float64

    @property
    def n_questions(self) -> int:
        return len(self.qids)

    @property
    def n_rows(self) -> int:
        return int(self.row_question.shape[0])

    def generator_rows(self, generator_index: int) -> slice:
        """The contiguous block of rows recorded for one generator."""
        starts = np.searchsorted(self.row_generator, [generator_index, generator_index + 1])
        return slice(int(starts[0]), int(starts[1]))

    def generator_index(self, model: str, method: str) -> int:
        """Index of a generator; a clear error listing what exists when it is absent."""
        try:
            return self.generators.index(Generator(model, method))
        except ValueError:
            known = [generator.name for generator in self.generators][:10]
            raise OutcomeTableError(
                f"{self.name}: no generator model={model!r} method={method!r}; known (first 10): {known}"
            ) from None

    def subset(self, question_indices: Sequence[int] | np.ndarray) -> OutcomeTable:
        """A table over some questions only (in the given order), e.g. a small CI replay."""
        keep = np.asarray(question_indices, dtype=np.int64)
        if keep.size and (keep.min() < 0 or keep.max() >= self.n_questions):
            raise OutcomeTableError(f"{self.name}: question index out of range 0..{self.n_questions - 1}")
        if np.unique(keep).size != keep.size:
            raise OutcomeTableError(f"{self.name}: subset question indices must be distinct")
        new_index = np.full(self.n_questions, -1, dtype=np.int64)
        new_index[keep] = np.arange(keep.size)
        mask = new_index[self.row_question] >= 0
        row_question = new_index[self.row_question[mask]].astype(np.int32)
        row_generator = self.row_generator[mask]
        row_sample = self.row_sample[mask]
        order = np.lexsort((row_sample, row_question, row_generator))
        return OutcomeTable(
            name=self.name,
            path=self.path,
            qids=tuple(self.qids[i] for i in keep),
            prompts=tuple(self.prompts[i] for i in keep),
            golds=tuple(self.golds[i] for i in keep),
            tasks=tuple(self.tasks[i] for i in keep),
            models=self.models,
            generators=self.generators,
            row_question=row_question[order],
            row_generator=row_generator[order],
            row_sample=row_sample[order],
            row_answer=self.row_answer[mask][order],
            row_correct=self.row_correct[mask][order],
            row_input_tokens=self.row_input_tokens[mask][order],
            row_output_tokens=self.row_output_tokens[mask][order],
            row_tokens_estimated=self.row_tokens_estimated[mask][order],
            row_cost_usd=self.row_cost_usd[mask][order],
        )


# ----------------------------------------------------------------------------- loading


def _where(file: str, line: int, field: str | None = None) -> str:
    return f"{file} line {line}" + (f", field {field!r}" if field else "")


def _load_questions(path: Path) -> tuple[list[str], list[str], list[str | None], list[str]]:
    qids: list[str] = []
    prompts: list[str] = []
    golds: list[str | None] = []
    tasks: list[str] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise OutcomeTableError(
                    f"{_where(path.name, line_number)}: not valid JSON ({error.msg})"
                ) from None
            if not isinstance(record, dict):
                raise OutcomeTableError(f"{_where(path.name, line_number)}: expected a JSON object")
            for field in _QUESTION_FIELDS:
                if field not in record:
                    raise OutcomeTableError(f"{_where(path.name, line_number, field)}: missing")
            qid, prompt, gold, task = (record[field] for field in _QUESTION_FIELDS)
            for field, value in (("qid", qid), ("prompt", prompt), ("task", task)):
                if not isinstance(value, str):
                    raise OutcomeTableError(
                        f"{_where(path.name, line_number, field)}: expected a string, got {type(value).__name__}"
                    )
            if not qid:
                raise OutcomeTableError(f"{_where(path.name, line_number, 'qid')}: empty")
            if gold is not None and not isinstance(gold, str):
                raise OutcomeTableError(
                    f"{_where(path.name, line_number, 'gold')}: expected a string or null, got {type(gold).__name__}"
                )
            if qid in seen:
                raise OutcomeTableError(
                    f"{_where(path.name, line_number, 'qid')}: duplicate {qid!r} (first on line {seen[qid]})"
                )
            seen[qid] = line_number
            qids.append(qid)
            prompts.append(prompt)
            golds.append(gold)
            tasks.append(task)
    if not qids:
        raise OutcomeTableError(f"{path.name}: no questions")
    return qids, prompts, golds, tasks


def _load_models(path: Path) -> dict[str, ModelPrice]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise OutcomeTableError(f"{path.name} line {error.lineno}: not valid JSON ({error.msg})") from None
    if not isinstance(raw, dict) or not raw:
        raise OutcomeTableError(f"{path.name}: expected a non-empty JSON object {{model: {{prices}}}}")
    models: dict[str, ModelPrice] = {}
    for model, entry in raw.items():
        if not isinstance(entry, dict):
            raise OutcomeTableError(f"{path.name}: model {model!r}: expected an object")
        for field in _MODEL_FIELDS:
            if field not in entry:
                raise OutcomeTableError(f"{path.name}: model {model!r}, field {field!r}: missing")
        prices = []
        for field in ("input_usd_per_mtok", "output_usd_per_mtok"):
            value = entry[field]
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            ):
                raise OutcomeTableError(
                    f"{path.name}: model {model!r}, field {field!r}: expected a finite number >= 0, got {value!r}"
                )
            prices.append(float(value))
        params_b = entry["params_b"]
        if params_b is not None and (
            isinstance(params_b, bool) or not isinstance(params_b, (int, float)) or not params_b > 0
        ):
            raise OutcomeTableError(
                f"{path.name}: model {model!r}, field 'params_b': expected a number > 0 or null, got {params_b!r}"
            )
        models[model] = ModelPrice(
            input_usd_per_mtok=prices[0],
            output_usd_per_mtok=prices[1],
            params_b=None if params_b is None else float(params_b),
            price_source=str(entry["price_source"]),
        )
    return models


def _parse_int(text: str, where: str, minimum: int = 0) -> int:
    try:
        value = int(text)
    except ValueError:
        raise OutcomeTableError(f"{where}: expected an integer, got {text!r}") from None
    if value < minimum:
        raise OutcomeTableError(f"{where}: expected an integer >= {minimum}, got {value}")
    return value


def _parse_float(text: str, where: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise OutcomeTableError(f"{where}: expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < low - _CORRECT_TOLERANCE or value > high + _CORRECT_TOLERANCE:
        raise OutcomeTableError(f"{where}: expected a number in [{low}, {high}], got {text!r}")
    return min(max(value, low), high)


def load_outcome_table(data_dir: str | Path, *, name: str | None = None) -> OutcomeTable:
    """Read and validate one outcome-table directory.

    `name` defaults to the directory name. Raises `OutcomeTableError` naming file, line and field for
    any missing file, unknown column, unknown qid or model, duplicate (qid, model, method, sample), or
    value out of range.
    """
    directory = Path(data_dir)
    if not directory.is_dir():
        raise OutcomeTableError(
            f"{directory}: not a directory; pass a dataset directory such as ../shared/data/gsm8k"
        )
    for required in ("questions.jsonl", "outcomes.csv.gz", "models.json"):
        if not (directory / required).is_file():
            raise OutcomeTableError(
                f"{directory}: missing {required}; an outcome table needs questions.jsonl, "
                "outcomes.csv.gz and models.json"
            )
    qids, prompts, golds, tasks = _load_questions(directory / "questions.jsonl")
    models = _load_models(directory / "models.json")
    question_index = {qid: index for index, qid in enumerate(qids)}

    file = "outcomes.csv.gz"
    generator_index: dict[Generator, int] = {}
    columns: dict[str, list] = {column: [] for column in OUTCOME_COLUMNS}
    generator_column: list[int] = []
    question_column: list[int] = []
    seen_keys: set[tuple[int, int, int]] = set()
    with gzip.open(directory / file, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(header) != OUTCOME_COLUMNS:
            raise OutcomeTableError(
                f"{file} line 1: header must be {','.join(OUTCOME_COLUMNS)}; got {header}"
            )
        for record in reader:
            line = reader.line_num
            if len(record) != len(OUTCOME_COLUMNS):
                raise OutcomeTableError(
                    f"{_where(file, line)}: expected {len(OUTCOME_COLUMNS)} fields, got {len(record)}"
                )
            qid, model, method, sample, answer, correct, input_tokens, output_tokens, estimated, cost = record
            if qid not in question_index:
                raise OutcomeTableError(f"{_where(file, line, 'qid')}: {qid!r} is not in questions.jsonl")
            if model not in models:
                raise OutcomeTableError(f"{_where(file, line, 'model')}: {model!r} is not in models.json")
            if not method:
                raise OutcomeTableError(f"{_where(file, line, 'method')}: empty")
            generator = Generator(model, method)
            g_index = generator_index.setdefault(generator, len(generator_index))
            q_index = question_index[qid]
            sample_index = _parse_int(sample, _where(file, line, "sample"))
            key = (g_index, q_index, sample_index)
            if key in seen_keys:
                raise OutcomeTableError(
                    f"{_where(file, line)}: duplicate row for qid={qid!r} model={model!r} method={method!r} "
                    f"sample={sample_index}"
                )
            seen_keys.add(key)
            if estimated not in ("0", "1"):
                raise OutcomeTableError(
                    f"{_where(file, line, 'tokens_estimated')}: expected 0 or 1, got {estimated!r}"
                )
            generator_column.append(g_index)
            question_column.append(q_index)
            columns["sample"].append(sample_index)
            columns["answer"].append(answer)
            columns["correct"].append(_parse_float(correct, _where(file, line, "correct"), 0.0, 1.0))
            columns["input_tokens"].append(_parse_int(input_tokens, _where(file, line, "input_tokens")))
            columns["output_tokens"].append(_parse_int(output_tokens, _where(file, line, "output_tokens")))
            columns["tokens_estimated"].append(estimated == "1")
            columns["cost_usd"].append(_parse_float(cost, _where(file, line, "cost_usd"), 0.0, math.inf))
    if not generator_column:
        raise OutcomeTableError(f"{file}: no outcome rows")

    # Renumber generators in sorted (model, method) order so that indices do not depend on row order.
    generators = sorted(generator_index)
    renumber = np.empty(len(generators), dtype=np.int32)
    for new, generator in enumerate(generators):
        renumber[generator_index[generator]] = new
    row_generator = renumber[np.asarray(generator_column, dtype=np.int32)]
    row_question = np.asarray(question_column, dtype=np.int32)
    row_sample = np.asarray(columns["sample"], dtype=np.int32)
    order = np.lexsort((row_sample, row_question, row_generator))
    answers = np.empty(len(order), dtype=object)
    answers[:] = columns["answer"]
    return OutcomeTable(
        name=name or directory.resolve().name,
        path=directory,
        qids=tuple(qids),
        prompts=tuple(prompts),
        golds=tuple(golds),
        tasks=tuple(tasks),
        models=models,
        generators=tuple(generators),
        row_question=row_question[order],
        row_generator=row_generator[order],
        row_sample=row_sample[order],
        row_answer=answers[order],
        row_correct=np.asarray(columns["correct"], dtype=np.float64)[order],
        row_input_tokens=np.asarray(columns["input_tokens"], dtype=np.int64)[order],
        row_output_tokens=np.asarray(columns["output_tokens"], dtype=np.int64)[order],
        row_tokens_estimated=np.asarray(columns["tokens_estimated"], dtype=bool)[order],
        row_cost_usd=np.asarray(columns["cost_usd"], dtype=np.float64)[order],
    )
