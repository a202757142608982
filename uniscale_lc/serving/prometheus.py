"""A parser for the Prometheus text exposition format (what vLLM serves on /metrics): a pure function."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


class PrometheusParseError(ValueError):
    """A /metrics line is not valid exposition text; the message quotes the line number and the line."""


@dataclass(frozen=True)
class Sample:
    """One line of a metric: its full name (with any _bucket/_sum/_count suffix), labels and value."""

    name: str
    labels: Mapping[str, str]
    value: float
    timestamp_ms: int | None = None


@dataclass
class ParsedMetrics:
    """All samples of one scrape, with the declared TYPE and HELP of each family."""

    samples: list[Sample] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)

    def select(self, name: str, **labels: str) -> list[Sample]:
        """Samples called `name` whose labels include every given label."""
        return [
            s for s in self.samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def total(self, name: str, **labels: str) -> float | None:
        """Sum over label sets (vLLM labels by model and engine); None when the metric is absent.

        NaN samples are skipped: a NaN gauge means "no value yet", not "poison the sum".
        """
        found = [s.value for s in self.select(name, **labels) if not math.isnan(s.value)]
        return float(sum(found)) if found else None

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """Sum of `name` grouped by one label's value (e.g. per-position acceptance by `position`)."""
        grouped: dict[str, float] = {}
        for s in self.samples:
            if s.name == name and label in s.labels and not math.isnan(s.value):
                grouped[s.labels[label]] = grouped.get(s.labels[label], 0.0) + s.value
        return grouped

    def first_present(self, names: Iterable[str]) -> str | None:
        """The first name in `names` with at least one sample: for metrics renamed across vLLM versions."""
        present = {s.name for s in self.samples}
        return next((n for n in names if n in present), None)


def parse_value(text: str) -> float:
    """Parse a sample value, including the spellings +Inf, -Inf and NaN."""
    lowered = text.lower()
    if lowered in ("+inf", "inf"):
        return math.inf
    if lowered == "-inf":
        return -math.inf
    if lowered == "nan":
        return math.nan
    return float(text)


def _unescape(text: str, escapes: Mapping[str, str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in escapes:
            out.append(escapes[text[i + 1]])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _parse_labels(line: str, start: int, lineno: int) -> tuple[dict[str, str], int]:
    """Parse `{a="x",b="y\\"z"}` from line[start] == '{'; return the labels and the index after '}'."""
    labels: dict[str, str] = {}
    i = start + 1
    while True:
        while i < len(line) and line[i] in " \t":
            i += 1
        if i < len(line) and line[i] == "}":
            return labels, i + 1
        match = _LABEL_NAME.match(line, i)
        if not match:
            raise PrometheusParseError(f"line {lineno}: bad label name in {line!r}")
        key = match.group(0)
        i = match.end()
        while i < len(line) and line[i] in " \t":
            i += 1
        if line[i : i + 2] != '="':
            raise PrometheusParseError(f"line {lineno}: expected =\" after label {key!r} in {line!r}")
        i += 2
        chars: list[str] = []
        while True:
            if i >= len(line):
                raise PrometheusParseError(f"line {lineno}: unterminated label value in {line!r}")
            ch = line[i]
            if ch == "\\" and i + 1 < len(line):
                chars.append(_ESCAPES.get(line[i + 1], "\\" + line[i + 1]))
                i += 2
                continue
            if ch == '"':
                i += 1
                break
            chars.append(ch)
            i += 1
        labels[key] = "".join(chars)
        while i < len(line) and line[i] in " \t":
            i += 1
        if i < len(line) and line[i] == ",":
            i += 1
        elif i < len(line) and line[i] == "}":
            continue
        else:
            raise PrometheusParseError(f"line {lineno}: expected ',' or '}}' in labels of {line!r}")


def parse_prometheus_text(text: str) -> ParsedMetrics:
    """Parse exposition text: HELP/TYPE comments, samples with escaped labels, +Inf/NaN, timestamps.

    Raises PrometheusParseError on a malformed sample line, so a broken endpoint is reported rather than
    silently read as "no load".
    """
    parsed = ParsedMetrics()
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line[1:].strip().split(None, 2)
            if len(parts) >= 2 and parts[0] == "HELP":
                parsed.helps[parts[1]] = _unescape(parts[2] if len(parts) > 2 else "", {"\\": "\\", "n": "\n"})
            elif len(parts) >= 3 and parts[0] == "TYPE":
                parsed.types[parts[1]] = parts[2].strip()
            continue
        match = _NAME.match(line)
        if not match:
            raise PrometheusParseError(f"line {lineno}: bad metric name in {raw!r}")
        name = match.group(0)
        i = match.end()
        labels: dict[str, str] = {}
        if i < len(line) and line[i] == "{":
            labels, i = _parse_labels(line, i, lineno)
        rest = line[i:].split()
        if not rest or len(rest) > 2:
            raise PrometheusParseError(f"line {lineno}: expected 'value [timestamp]' in {raw!r}")
        try:
            value = parse_value(rest[0])
            timestamp = int(rest[1]) if len(rest) == 2 else None
        except ValueError as exc:
            raise PrometheusParseError(f"line {lineno}: bad number in {raw!r}") from exc
        parsed.samples.append(Sample(name=name, labels=labels, value=value, timestamp_ms=timestamp))
    return parsed
