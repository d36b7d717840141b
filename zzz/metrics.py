"""What a zzz server counts, and its Prometheus face: ``Counters`` (plain ints the I/O layer
bumps; defined beside the per-read loop, ``zzz.readloop``, whose compiled build adds to them as C
fields), ``stats`` (the dict of ``Server.stats()`` / ``App.stats()``) and ``PrometheusExporter``
(``App(metrics_path=...)``, through the ``prometheus-client`` package).

Counting costs nothing per message in Python on the fast path: the I/O layer adds to
``Counters`` once per read, per write and per close (see ``Counters``); what can be read off the
live state (open connections, topics, subscribers) is read when stats are asked for, not counted.

With several worker processes (``PROMETHEUS_MULTIPROC_DIR`` set, by the supervisor, before the
workers start) every worker writes its counts into that directory (prometheus-client's
multiprocess mode) once a second, before it answers a scrape and once its server has closed
(so a worker that exits leaves its final counts), and a scrape of any worker returns the sum of
all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from zzz.http import Request, Response
from zzz.readloop import Counters
from zzz.routing import Route, Router

__all__ = [
    "METRICS",
    "MULTIPROC_ENV",
    "SYNC_INTERVAL",
    "Counters",
    "Metric",
    "PrometheusExporter",
    "channel_endpoints",
    "channel_stats",
    "require_prometheus",
    "stats",
]

logger = logging.getLogger("zzz")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# How often a worker in multiprocess mode writes its counts to the shared directory (seconds):
# a scrape sees the other workers' counts at most this old.
SYNC_INTERVAL = 1.0


@dataclass(frozen=True)
class Metric:
    """One key of ``stats()`` and its Prometheus series.

    Attributes:
        key: the ``stats()`` key.
        name: the Prometheus name (``zzz_<key>``, counters with ``_total``).
        kind: ``"counter"`` or ``"gauge"``.
        label: the label of a ``stats()`` dict value (``code``, ``status``), or None for an int.
        help: the ``# HELP`` text.
    """

    key: str
    name: str
    kind: str
    label: str | None
    help: str


METRICS: tuple[Metric, ...] = (
    Metric("connections_open", "zzz_connections_open", "gauge", None, "Open WebSocket connections."),
    Metric("connections_total", "zzz_connections_total", "counter", None, "WebSocket connections opened."),
    Metric("messages_in", "zzz_messages_in_total", "counter", None, "Data messages received."),
    Metric("messages_out", "zzz_messages_out_total", "counter", None, "Data messages sent."),
    Metric("bytes_in", "zzz_bytes_in_total", "counter", None, "Bytes received on WebSocket connections."),
    Metric("bytes_out", "zzz_bytes_out_total", "counter", None, "Bytes sent on WebSocket connections."),
    Metric("closes", "zzz_closes_total", "counter", "code", "WebSocket connections ended, by close code."),
    Metric(
        "handshake_failures",
        "zzz_handshake_failures_total",
        "counter",
        "status",
        "Refused upgrades on WebSocket routes, by HTTP status.",
    ),
    Metric(
        "backpressure_closes",
        "zzz_backpressure_closes_total",
        "counter",
        None,
        "Connections closed for a send buffer over max_backpressure.",
    ),
    Metric("channel_joins", "zzz_channel_joins_total", "counter", None, "Successful Channels joins."),
    Metric("topics", "zzz_topics", "gauge", None, "Channels topics with at least one subscriber here."),
    Metric("subscribers", "zzz_subscribers", "gauge", None, "Channels subscriptions (socket, topic) here."),
)


def channel_endpoints(routes: Iterable[Any]) -> list[Any]:
    """The Channels endpoints behind WebSocket routes, each once.

    Found by shape, so that this layer imports nothing of ``zzz.channels``: a route's
    ``ws_config.on_message`` bound to an object that has ``sockets`` (each with ``topics``) and a
    ``pubsub`` (``subscriber_count``). Its successful joins are its ``joins`` attribute.
    """
    found: list[Any] = []
    for route in routes:
        on_message = getattr(getattr(route, "ws_config", None), "on_message", None)
        owner = getattr(on_message, "__self__", None)
        if owner is None or not (hasattr(owner, "sockets") and hasattr(owner, "pubsub")):
            continue
        if not any(owner is known for known in found):
            found.append(owner)
    return found


def channel_stats(endpoints: Iterable[Any]) -> dict[str, int]:
    """``channel_joins``, ``topics`` and ``subscribers`` of ``endpoints``, read off their live state.

    A topic counts once per backend however many sockets joined it; its subscribers are the
    backend's ``subscriber_count``.
    """
    joins = 0
    by_backend: dict[int, tuple[Any, set[str]]] = {}
    for endpoint in endpoints:
        joins += int(getattr(endpoint, "joins", 0))
        pubsub = endpoint.pubsub
        _, topics = by_backend.setdefault(id(pubsub), (pubsub, set()))
        for sock in endpoint.sockets:
            topics.update(sock.topics)
    topic_count = subscribers = 0
    for pubsub, topics in by_backend.values():
        topic_count += len(topics)
        subscribers += sum(pubsub.subscriber_count(topic) for topic in topics)
    return {"channel_joins": joins, "topics": topic_count, "subscribers": subscribers}


def stats(counters: Iterable[Counters], connections_open: int, endpoints: Iterable[Any]) -> dict[str, Any]:
    """The ``stats()`` dict: the sum of ``counters``, the open connections, the Channels figures.

    Returns:
        Every key of ``METRICS``: ints, and for ``closes`` / ``handshake_failures`` a dict from
        close code / HTTP status to a count.
    """
    out: dict[str, Any] = {
        "connections_open": connections_open,
        "connections_total": 0,
        "messages_in": 0,
        "messages_out": 0,
        "bytes_in": 0,
        "bytes_out": 0,
        "closes": {},
        "handshake_failures": {},
        "backpressure_closes": 0,
    }
    for c in counters:
        for key in ("connections_total", "messages_in", "messages_out", "bytes_in", "bytes_out"):
            out[key] += getattr(c, key)
        out["backpressure_closes"] += c.backpressure_closes
        for key in ("closes", "handshake_failures"):
            into = out[key]
            for code, n in getattr(c, key).items():
                into[code] = into.get(code, 0) + n
    out.update(channel_stats(endpoints))
    return out


def require_prometheus() -> None:
    """Make sure ``prometheus-client`` can be imported, without importing it yet.

    It is imported only where it serves (a worker), so that a supervisor that sets
    ``PROMETHEUS_MULTIPROC_DIR`` after the app was made still gets the multiprocess mode.

    Raises:
        ImportError: the package is missing, with what to install.
    """
    try:
        found = importlib.util.find_spec("prometheus_client") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ImportError(
            "App(metrics_path=...) needs the prometheus-client package: pip install 'zzz[metrics]'"
        )


class PrometheusExporter:
    """``stats()`` in the Prometheus text format, at ``metrics_path``.

    In one process, a scrape renders the counts of the moment. With ``PROMETHEUS_MULTIPROC_DIR``
    set, this process writes its counts there (``sync``, every ``SYNC_INTERVAL`` while a server
    runs, and before each scrape it answers), and a scrape reads every process's files: counters
    are summed, gauges summed over the live processes (the supervisor removes a dead worker's
    with ``prometheus_client.multiprocess.mark_process_dead(pid)``).

    Args:
        source: the ``stats()`` to export.
    """

    def __init__(self, source: Callable[[], Mapping[str, Any]]) -> None:
        self._source = source
        self._pid = -1
        self._last: dict[tuple[str, Any], int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._timer_pid = -1
        self._warned = False

    @staticmethod
    def multiprocess() -> bool:
        """Whether scrapes sum the processes that share ``PROMETHEUS_MULTIPROC_DIR``."""
        return bool(os.environ.get(MULTIPROC_ENV))

    def route(self, path: str) -> Route:
        """``GET path``, answered with ``render()``."""
        return Router.get(path, self.handle)

    def handle(self, request: Request) -> Response:
        """The route's handler."""
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(self.render(), content_type=CONTENT_TYPE_LATEST)

    def render(self) -> bytes:
        """The text exposition of the stats (summed over processes in multiprocess mode)."""
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        if self.multiprocess():
            from prometheus_client.multiprocess import MultiProcessCollector

            self.sync()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            registry.register(_StatsCollector(self._source))
        return bytes(generate_latest(registry))

    # Multiprocess mode

    def started(self, loop: asyncio.AbstractEventLoop, running: Callable[[], bool]) -> None:
        """A server of this app started on ``loop``: in multiprocess mode, write the counts every
        ``SYNC_INTERVAL`` while ``running()`` (a last time when it turns false)."""
        if not self.multiprocess():
            return
        if self._timer is not None and self._timer_loop is loop and self._timer_pid == os.getpid():
            return  # already ticking for this loop (another server of the app on it)

        def tick() -> None:
            self._timer = None
            self._sync_quietly()
            if running():
                self._timer = loop.call_later(SYNC_INTERVAL, tick)

        self._timer_loop, self._timer_pid = loop, os.getpid()
        self._timer = loop.call_later(SYNC_INTERVAL, tick)

    def closed(self) -> None:
        """A server of this app finished closing: in multiprocess mode, write the counts a last
        time (what the drain counted, the closes above all, would otherwise be lost with a worker
        that exits before its next tick)."""
        if self.multiprocess():
            self._sync_quietly()

    def _sync_quietly(self) -> None:
        try:
            self.sync()
        except Exception as exc:  # noqa: BLE001 - a bad directory must not stop serving
            if not self._warned:
                self._warned = True
                logger.warning(
                    "zzz: cannot write metrics to %s=%r: %r",
                    MULTIPROC_ENV,
                    os.environ.get(MULTIPROC_ENV),
                    exc,
                )

    def sync(self) -> None:
        """Write this process's counts into the multiprocess directory (counters by their
        increase since the last sync, gauges as they are)."""
        if os.getpid() != self._pid:
            # A forked worker: its own files, its own baseline (the parent served nothing here).
            self._pid = os.getpid()
            self._last = {}
        current = self._source()
        with _multiprocess_values():
            for metric in METRICS:
                value = current.get(metric.key, 0)
                series = _series_for(metric)
                if metric.label is None:
                    if metric.kind == "gauge":
                        series.set(value)
                    else:
                        self._add(series, (metric.key, None), int(value))
                    continue
                for label, count in value.items():
                    self._add(series.labels(str(label)), (metric.key, label), int(count))

    def _add(self, series: Any, key: tuple[str, Any], value: int) -> None:
        delta = value - self._last.get(key, 0)
        if delta > 0:
            series.inc(delta)
            self._last[key] = value


# The series this process writes in multiprocess mode, shared by every exporter of the process:
# two objects writing one key of the same file would lose each other's updates.
_process: dict[str, Any] = {"where": None, "series": {}, "values": None}


@contextlib.contextmanager
def _multiprocess_values() -> Iterator[None]:
    """Make the series created (and labelled) inside the block write to the directory, even when
    prometheus-client was imported before ``PROMETHEUS_MULTIPROC_DIR`` was set (an app module that
    imports it, loaded before the supervisor sets the variable): its in-memory value class is
    swapped for a multiprocess one for the length of the block, for zzz's series only."""
    from prometheus_client import values

    where = (os.getpid(), os.environ.get(MULTIPROC_ENV))
    if where != _process["where"]:  # a forked worker, or another directory: files of its own
        _process.update(where=where, series={}, values=None)
    current = values.ValueClass
    if getattr(current, "_multiprocess", False):
        yield  # already the multiprocess class (and its files): use it, never a second writer
        return
    if _process["values"] is None:
        _process["values"] = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    values.ValueClass = _process["values"]
    try:
        yield
    finally:
        values.ValueClass = current


def _series_for(metric: Metric) -> Any:
    series = _process["series"].get(metric.key)
    if series is None:
        from prometheus_client import Counter, Gauge

        labels = [metric.label] if metric.label else []
        if metric.kind == "gauge":
            # livesum: the sum over the workers alive (a dead worker's value goes with it).
            series = Gauge(metric.name, metric.help, labels, registry=None, multiprocess_mode="livesum")
        else:
            series = Counter(metric.name, metric.help, labels, registry=None)
        _process["series"][metric.key] = series
    return series


class _StatsCollector:
    """A prometheus-client collector that reads ``stats()`` at each scrape (one process)."""

    def __init__(self, source: Callable[[], Mapping[str, Any]]) -> None:
        self._source = source

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        current = self._source()
        for metric in METRICS:
            value = current.get(metric.key, 0)
            family_type = GaugeMetricFamily if metric.kind == "gauge" else CounterMetricFamily
            if metric.label is None:
                yield family_type(metric.name, metric.help, value=value)
                continue
            family = family_type(metric.name, metric.help, labels=[metric.label])
            for label, count in sorted(value.items()):
                family.add_metric([str(label)], count)
            yield family
