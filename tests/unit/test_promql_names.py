"""The PromQL name extractor and the scrape-side family mapping behind tests/integration/test_dashboards.py.

If the extractor misses a name, a dashboard querying a metric nobody exports passes; if it reports a function, label,
keyword, string or duration as a metric, a correct dashboard fails. Both directions are pinned here.
"""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary, generate_latest

from support.promql import Exported, Query, dashboard_queries, references, variable_query

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("expr", "metrics", "labels"),
    [
        (
            'histogram_quantile(0.99, sum by (le, variant) (rate(x_bucket{a="b"}[5m])))',
            {"x_bucket"},
            {"le", "variant", "a"},
        ),
        ("sum(rate(a_total[1m])) / ignoring(x) group_left sum(b)", {"a_total", "b"}, {"x"}),
        ("sum(rate(a_total[1m])) / on(x, y) group_left(z) sum by (x, y) (b)", {"a_total", "b"}, {"x", "y", "z"}),
        ('sum(rate(vigil_http_requests_total{service=~"$service"}[$__rate_interval]))', {"vigil_http_requests_total"},
         {"service"}),
        ('rate(m{service=~"${service}", route="${route:regex}"}[$__rate_interval])', {"m"}, {"service", "route"}),
        ("sum(rate(m[[interval]])) by (job)", {"m"}, {"job"}),
        ("sum(rate(a[5m])) by (x) / ignoring(y) group_left b offset 1h > bool 1e3", {"a", "b"}, {"x", "y"}),
        ("max_over_time(g[10m:1m] offset -5m) and on() vector(1) unless c @ start()", {"g", "c"}, set()),
        ("count without (instance) (up == 0) or absent(vigil_outbox_pending)", {"up", "vigil_outbox_pending"},
         {"instance"}),
        ("topk(5, sum by (reason) (increase(vigil_dlq_total[$__range])))", {"vigil_dlq_total"}, {"reason"}),
        ("quantile(0.5, rate(a:recorded:rate5m[1m])) + inf - nan", {"a:recorded:rate5m"}, set()),
        ('{__name__="vigil_consumer_lag", topic!~"vigil\\\\.dlq"}', {"vigil_consumer_lag"}, {"topic"}),
        ('{"utf8.metric.name", job="x"}', {"utf8.metric.name"}, {"job"}),
        ("sum(rate(a_total[5m]))  # a comment naming not_a_metric\n", {"a_total"}, set()),
        ('sum(m{l="sum by (fake) (also_not_a_metric)"})', {"m"}, {"l"}),
        ("SUM BY (x) (m)", {"m"}, {"x"}),
    ],
)  # fmt: skip
def test_references(expr: str, metrics: set[str], labels: set[str]) -> None:
    refs = references(expr)
    assert refs.metrics == metrics
    assert refs.labels == labels


def test_label_replace_strings_are_labels_not_metrics() -> None:
    refs = references('label_replace(sum by (topic) (vigil_consumer_lag), "short", "$1", "topic", "vigil\\\\.(.*)")')
    assert refs.metrics == {"vigil_consumer_lag"}
    assert refs.created_labels == {"short"}
    assert refs.labels == {"topic"}  # the source label; the regex and replacement are not labels


def test_label_join_and_count_values_create_labels() -> None:
    refs = references('count_values("n", label_join(m, "both", "-", "a", "b"))')
    assert refs.metrics == {"m"}
    assert refs.created_labels == {"n", "both"}
    assert refs.labels == {"a", "b"}


def test_name_regex_is_kept_for_the_scrape() -> None:
    refs = references('sum by (__name__) ({__name__=~"vigil_.*_total"})')
    assert refs.metrics == set()
    assert refs.name_patterns == {"vigil_.*_total"}


def test_untokenizable_input_is_an_error() -> None:
    with pytest.raises(ValueError, match="cannot tokenize"):
        references("sum(a) ; b")


def test_variable_queries_unwrap_grafana_functions() -> None:
    lv = variable_query({"type": "query", "name": "topic", "query": {"query": 'label_values(lag{s="x"}, topic)'}})
    assert lv == Query("variable 'topic'", 'lag{s="x"}', "topic")
    assert references(lv.expr).metrics == {"lag"}
    qr = variable_query({"type": "query", "name": "v", "query": "query_result(topk(3, sum by (v) (rate(m[5m]))))"})
    assert qr is not None and references(qr.expr).metrics == {"m"}
    bare = variable_query({"type": "query", "name": "l", "query": "label_values(service)"})
    assert bare == Query("variable 'l'", "", "service")
    assert variable_query({"type": "custom", "name": "c", "query": "a,b"}) is None


def test_dashboard_queries_reach_rows_and_variables() -> None:
    dashboard = {
        "panels": [
            {"type": "timeseries", "title": "top", "targets": [{"refId": "A", "expr": "a"}]},
            {
                "type": "row",
                "collapsed": True,
                "panels": [{"title": "inner", "targets": [{"refId": "B", "expr": "b"}, {"refId": "C"}]}],
            },
        ],
        "templating": {"list": [{"type": "query", "name": "v", "query": "label_values(c, x)"}]},
    }
    assert [q.expr for q in dashboard_queries(dashboard)] == ["a", "b", "c"]


def _scrape() -> Exported:
    registry = CollectorRegistry()
    Counter("c_total", "labelled counter, no samples yet", ["x"], registry=registry)
    Counter("plain", "unlabelled counter", registry=registry).inc()
    Gauge("g", "gauge", ["y"], registry=registry).labels("1").set(2)
    Histogram("h_seconds", "histogram, no samples yet", ["z"], registry=registry)
    Summary("s", "summary", registry=registry)
    exported = Exported()
    exported.add_scrape(generate_latest(registry).decode())
    return exported


@pytest.mark.parametrize(
    "series",
    ["c_total", "c_created", "plain_total", "g", "h_seconds_bucket", "h_seconds_count", "h_seconds_sum", "s",
     "s_count", "s_sum"],
)  # fmt: skip
def test_declared_families_provide_their_series(series: str) -> None:
    assert _scrape().provides(series)


@pytest.mark.parametrize(
    "series",
    # a counter's bare name, suffixes that belong to another type, and a name nobody declared
    ["c", "plain", "g_total", "g_bucket", "c_bucket", "h_seconds", "c_total_total", "nobody_exports_this_total"],
)
def test_wrong_suffixes_and_unknown_names_are_not_provided(series: str) -> None:
    assert not _scrape().provides(series)


def test_labels_are_known_only_from_samples() -> None:
    exported = _scrape()
    assert exported.labels_of("g") == {"y"}
    assert exported.labels_of("c_total") is None
    assert exported.family_of("h_seconds_bucket") == "h_seconds"
