"""Which metric names and labels a Grafana dashboard's PromQL refers to, and which series a /metrics scrape provides.

Why a tokenizer instead of a few regexes: dashboard queries mix PromQL with Grafana's own syntax (``$service``,
``${var:regex}``, ``$__rate_interval``, ``[[var]]``), strings that look like names (``label_replace(…, "dst", …)``),
grouping clauses whose identifiers are labels (``sum by (le, variant) (…)``), durations (``[5m]``, ``offset 1h``) and
aggregation keywords. Each of these must be skipped for the right reason, or a dashboard that names a metric nobody
exports slips through (or a correct one fails). The scrape side maps suffixed series (``_bucket``, ``_count``,
``_sum``, ``_total``, ``_created``) back to the family its ``# TYPE`` line declares, so a labelled family that has no
samples yet still counts as exported.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

#: Aggregation operators: keywords, whether followed by ``(`` or by ``by``/``without``.
AGGREGATIONS = frozenset(
    {
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
        "quantile", "limitk", "limit_ratio",
    }
)  # fmt: skip
#: Clauses whose parenthesised list holds label names.
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
#: Words that are never metric names when they stand alone.
KEYWORDS = frozenset({"offset", "bool", "and", "or", "unless", "atan2", "inf", "nan"}) | AGGREGATIONS | GROUPING
#: Functions that create a label: which argument (0-based) is its name, and from which argument on strings name the
#: labels they read.
LABEL_CREATORS: dict[str, tuple[int, int | None]] = {
    "label_replace": (1, 3),  # label_replace(v, dst, replacement, src, regex): src only (regex is arg 4)
    "label_join": (1, 3),  # label_join(v, dst, separator, src_1, src_2, …)
    "count_values": (0, None),  # count_values("value_label", v)
}

_TOKEN = re.compile(
    r"""
      (?P<ws>\s+|\#[^\n]*)
    | (?P<var>\$\{[^}]*\}|\$\w+|\[\[[^\]]*\]\])
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<range>\[[^\]]*\])
    | (?P<number>(?:0x[0-9a-fA-F]+|\d[\w.]*|\.\d[\w.]*)(?:[eE][+-]?\d+)?)
    | (?P<ident>[A-Za-z_:][\w:]*)
    | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}@])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str


def tokenize(expr: str) -> list[Token]:
    """PromQL (with Grafana variables) as tokens; whitespace, comments and range/subquery brackets dropped."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise ValueError(f"cannot tokenize {expr[pos : pos + 20]!r} in {expr!r}")
        kind = m.lastgroup
        assert kind is not None
        if kind not in ("ws", "range"):
            tokens.append(Token(kind, m.group()))
        pos = m.end()
    return tokens


@dataclass
class References:
    """What one expression refers to: metric (series) names, labels it reads, labels it creates."""

    metrics: set[str] = field(default_factory=set)
    #: Regexes from ``{__name__=~"…"}``: the names they select are only known against a scrape.
    name_patterns: set[str] = field(default_factory=set)
    labels: set[str] = field(default_factory=set)
    created_labels: set[str] = field(default_factory=set)


def _unquote(text: str) -> str:
    """A PromQL string literal's value (Go-style escapes; raw strings in backticks keep their backslashes)."""
    body = text[1:-1]
    if text.startswith("`"):
        return body
    if text.startswith("'"):
        body = body.replace("\\'", "'").replace('"', '\\"')
    try:
        value: str = json.loads(f'"{body}"')
    except json.JSONDecodeError:
        return body
    return value


def references(expr: str) -> References:
    """The metric names and label names a PromQL expression uses (see the module docstring for what is skipped)."""
    tokens = tokenize(expr)
    refs = References()
    i = 0
    # Stack of open parens: for each, whether its contents are a label list and, for label creators, the arg index.
    parens: list[tuple[str, int]] = []
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if tok.kind == "op" and tok.text == "{":
            i = _matchers(tokens, i + 1, refs)
            continue
        if tok.kind == "ident":
            word = tok.text
            if word.lower() in GROUPING and nxt is not None and nxt.text == "(":
                close = _find(tokens, i + 2, ")")
                refs.labels |= {t.text for t in tokens[i + 2 : close] if t.kind == "ident"}
                i = close + 1
                continue
            if nxt is not None and nxt.text == "(":
                parens.append((word, 0))
                i += 2
                continue
            if word.lower() not in KEYWORDS:
                refs.metrics.add(word)
        elif tok.kind == "op" and tok.text == "(":
            parens.append(("", 0))
        elif tok.kind == "op" and tok.text == ")":
            if parens:
                parens.pop()
        elif tok.kind == "op" and tok.text == "," and parens:
            name, arg = parens[-1]
            parens[-1] = (name, arg + 1)
        elif tok.kind == "string" and parens and parens[-1][0] in LABEL_CREATORS:
            name, arg = parens[-1]
            created, sources = LABEL_CREATORS[name]
            if arg == created:
                refs.created_labels.add(_unquote(tok.text))
            elif sources is not None and arg >= sources and not (name == "label_replace" and arg > sources):
                refs.labels.add(_unquote(tok.text))
        i += 1
    return refs


def _find(tokens: list[Token], start: int, text: str) -> int:
    for j in range(start, len(tokens)):
        if tokens[j].text == text:
            return j
    raise ValueError(f"unbalanced expression: no {text!r} after token {start}")


def _matchers(tokens: list[Token], start: int, refs: References) -> int:
    """Read ``{a="b", c=~"…", "quoted_name", __name__="x"}`` from ``start``; returns the index after ``}``."""
    close = _find(tokens, start, "}")
    j = start
    while j < close:
        tok = tokens[j]
        op = tokens[j + 1] if j + 1 < close else None
        if tok.kind in ("ident", "string") and op is not None and op.text in ("=", "!=", "=~", "!~"):
            label = tok.text if tok.kind == "ident" else _unquote(tok.text)
            value = tokens[j + 2] if j + 2 < close else None
            if label == "__name__" and value is not None and value.kind == "string":
                if op.text == "=":
                    refs.metrics.add(_unquote(value.text))
                elif op.text == "=~":
                    refs.name_patterns.add(_unquote(value.text))
            else:
                refs.labels.add(label)
            j += 3
        elif tok.kind == "string":
            refs.metrics.add(_unquote(tok.text))  # Prometheus 3: {"metric.name", …}
            j += 1
        else:
            j += 1
    return close + 1


# ---------------------------------------------------------------------------------------------------------------------
# Dashboards
# ---------------------------------------------------------------------------------------------------------------------

_LABEL_VALUES = re.compile(r"\s*label_values\(\s*(?:(?P<selector>.*?)\s*,\s*)?(?P<label>\w+)\s*\)\s*", re.DOTALL)
_QUERY_RESULT = re.compile(r"\s*query_result\((?P<expr>.*)\)\s*", re.DOTALL)


@dataclass(frozen=True)
class Query:
    """One PromQL expression in a dashboard and where it sits (for messages)."""

    where: str
    expr: str
    #: A label the query needs on its metrics besides those inside ``expr`` (``label_values(selector, label)``).
    label: str | None = None


def variable_query(var: dict[str, Any]) -> Query | None:
    """The PromQL behind a ``query`` template variable (Grafana's label_values/query_result wrappers unwrapped)."""
    if var.get("type") != "query":
        return None
    raw = var.get("query")
    text = str(raw.get("query", "")) if isinstance(raw, dict) else str(raw or "")
    where = f"variable {var.get('name')!r}"
    if m := _LABEL_VALUES.fullmatch(text):
        return Query(where, m["selector"] or "", m["label"])
    if m := _QUERY_RESULT.fullmatch(text):
        return Query(where, m["expr"])
    return Query(where, text) if text.strip() else None


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[Query]:
    """Every PromQL expression: panel targets (panels nested in rows too) and query-type template variables."""

    def walk(panels: list[dict[str, Any]]) -> Iterator[Query]:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    yield Query(f"panel {panel.get('title')!r} {target.get('refId')}", target["expr"])
            yield from walk(panel.get("panels", []))

    yield from walk(dashboard.get("panels", []))
    for var in dashboard.get("templating", {}).get("list", []):
        if (query := variable_query(var)) is not None:
            yield query


def load_dashboards(directory: Path) -> dict[Path, dict[str, Any]]:
    """Every ``*.json`` dashboard under ``directory`` (recursively), parsed."""
    return {path: json.loads(path.read_text()) for path in sorted(directory.rglob("*.json"))}


# ---------------------------------------------------------------------------------------------------------------------
# Scrapes
# ---------------------------------------------------------------------------------------------------------------------

#: Series a family of each type provides, as suffixes of its normalised name (a counter ``x`` gives ``x_total``).
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "gauge": ("",),
    "untyped": ("",),
    "unknown": ("",),
    "info": ("_info",),
    "stateset": ("",),
}


@dataclass
class Exported:
    """Families (``# TYPE``) and sample names seen in one or more Prometheus text-format scrapes."""

    #: Family name as the parser normalises it (counters without ``_total``) → type.
    families: dict[str, str] = field(default_factory=dict)
    #: Sample name → the label-name sets seen on it.
    samples: dict[str, set[frozenset[str]]] = field(default_factory=dict)

    def add_scrape(self, text: str) -> None:
        """Merge one ``/metrics`` body (Prometheus text format 0.0.4)."""
        for family in text_string_to_metric_families(text):
            self.families[family.name] = family.type
            for sample in family.samples:
                self.samples.setdefault(sample.name, set()).add(frozenset(sample.labels))

    def family_of(self, series: str) -> str | None:
        """The declared family that provides ``series``, honouring its type (``x_bucket`` needs a histogram ``x``)."""
        for family, kind in self.families.items():
            if any(series == family + suffix for suffix in _SUFFIXES.get(kind, ("",))):
                return family
        return None

    def provides(self, series: str) -> bool:
        """Whether a query naming ``series`` can get data from these scrapes."""
        return series in self.samples or self.family_of(series) is not None

    def labels_of(self, series: str) -> frozenset[str] | None:
        """Label names seen on ``series``' samples, or None when it has none yet (labels then unknown)."""
        seen = self.samples.get(series)
        return frozenset().union(*seen) if seen else None
