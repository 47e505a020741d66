"""Prometheus metrics (the official `prometheus_client`), made once per app and handed to what counts.

With `PROMETHEUS_MULTIPROC_DIR` set (required with `hitl serve --workers N`), every worker writes its figures to
that folder and `/metrics`, in whichever worker serves it, reads them all (multiprocess mode); without it, the
app's own registry answers. Labels take bounded values only: a model name the gateway does not declare is
`other`, a route is the matched route's template (or `unmatched`), never a path or anything a client wrote.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own name for it, read by the library too
OTHER = "other"
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_LONG = (1, 5, 15, 30, 60, 120, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)


class Metrics:
    def __init__(self, models: Iterable[str], upstreams: Iterable[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.models = frozenset(models)
        self.upstreams = frozenset(upstreams)
        registry = self.registry
        self.http_requests = Counter(
            "hitl_http_requests", "HTTP requests by matched route, method and status.",
            ["route", "method", "status"], registry=registry,
        )  # fmt: skip
        self.exchanges = Counter(
            "hitl_exchanges", "Answers by dialect, model and route outcome (released, held, audit, reused, failed).",
            ["dialect", "model", "outcome"], registry=registry,
        )  # fmt: skip
        self.upstream_seconds = Histogram(
            "hitl_upstream_seconds", "Upstream call latency.", ["upstream"], buckets=_SECONDS, registry=registry
        )
        self.upstream_errors = Counter(
            "hitl_upstream_errors", "Failed upstream calls by kind.", ["upstream", "kind"], registry=registry
        )
        self.scoring_seconds = Histogram(
            "hitl_scoring_seconds", "Time to score an answer (self-check and consistency included).",
            buckets=_SECONDS, registry=registry,
        )  # fmt: skip
        self.waiting_clients = Gauge(
            "hitl_waiting_clients", "Clients waiting for a decision.", registry=registry, multiprocess_mode="livesum"
        )
        self.decisions = Counter("hitl_decisions", "Decisions by kind.", ["action"], registry=registry)
        self.time_to_decision = Histogram(
            "hitl_time_to_decision_seconds", "From an answer held to its decision.", buckets=_LONG, registry=registry
        )
        self.deadline_outcomes = Counter(
            "hitl_deadline_outcomes", "What waiting clients got when their deadline passed.", ["outcome"],
            registry=registry,
        )  # fmt: skip
        self.webhook_deliveries = Counter(
            "hitl_webhook_deliveries", "Webhook delivery attempts by result (delivered, retry, failed).", ["result"],
            registry=registry,
        )  # fmt: skip

    def model(self, name: str) -> str:
        """A model's label: its name when the gateway declares it, else `other` (apps may send any name)."""
        return name if name in self.models else OTHER

    def upstream(self, name: str) -> str:
        return name if name in self.upstreams else OTHER

    def exposition(self, open_reviews: dict[str, int]) -> bytes:
        """The text format Prometheus scrapes: every process's figures in multiprocess mode, else this app's;
        with the open reviews by tier, counted in the database for this scrape."""
        if os.environ.get(MULTIPROC_DIR):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            registry = self.registry
        reviews = GaugeMetricFamily("hitl_open_reviews", "Reviews waiting for an agent, by tier.", labels=["tier"])
        for tier, count in sorted(open_reviews.items()):
            reviews.add_metric([tier], count)
        return generate_latest(registry) + generate_latest(_Once(reviews))


class _Once(CollectorRegistry):
    """A registry of one metric family already collected."""

    def __init__(self, family: GaugeMetricFamily) -> None:
        super().__init__(auto_describe=False)
        self._family = family

    def collect(self) -> Iterable[GaugeMetricFamily]:
        yield self._family


class CountRequests:
    """ASGI middleware: every HTTP request counted by the template of the route it matched, its method and its
    status (`unmatched` for a path no route serves: the path itself is never a label)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                method = scope["method"] if scope["method"] in _METHODS else OTHER
                self.metrics.http_requests.labels(route, method, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counted)


_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
