"""Edge metrics and their Prometheus text exposition (format 0.0.4). Pure.

Counters and histograms live here; gauges that are a view of live state (connections,
subscriptions, hub counters) are passed to :meth:`EdgeMetrics.render` as samples.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Labels = tuple[tuple[str, str], ...]

LATENCY_BUCKETS_S = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
)  # fmt: skip


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}"


def _number(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(int(v)) if float(v).is_integer() else repr(float(v))


class Counter:
    """A monotonically increasing count per label set."""

    def __init__(self, name: str, help_text: str, label_names: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.label_names = tuple(label_names)
        self.values: dict[Labels, float] = {}
        if not self.label_names:
            self.values[()] = 0

    def inc(self, *label_values: str, amount: float = 1) -> None:
        key = tuple(zip(self.label_names, label_values, strict=True))
        self.values[key] = self.values.get(key, 0) + amount

    def get(self, *label_values: str) -> float:
        return self.values.get(tuple(zip(self.label_names, label_values, strict=True)), 0)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for labels, v in sorted(self.values.items()):
            yield f"{self.name}{_labels(labels)} {_number(v)}"


class Histogram:
    """Cumulative buckets (upper bounds in seconds), sum and count."""

    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.help = help_text
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        running = 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            yield f'{self.name}_bucket{{le="{_number(bound)}"}} {running}'
        yield f"{self.name}_sum {_number(self.sum)}"
        yield f"{self.name}_count {self.count}"


@dataclass(frozen=True)
class Sample:
    """One value of live state, rendered as a gauge (or a counter when `counter`)."""

    name: str
    help: str
    value: float
    labels: Labels = ()
    counter: bool = False


class EdgeMetrics:
    def __init__(self) -> None:
        self.publishes = Counter("edgemesh_publishes_total", "Publish requests received.")
        self.acks = Counter("edgemesh_acks_total", "Publishes acknowledged.", ["duplicate"])
        self.region_checks = Counter(
            "edgemesh_region_checks_total",
            "Lookups of a publish's message_id in other regions' copies before storing it, "
            "by outcome (found: acknowledged as that copy; clear: stored; unanswered: a copy "
            "did not answer in time, stored).",
            ["result"],
        )
        self.nacks = Counter("edgemesh_nacks_total", "Publishes refused, by code.", ["code"])
        self.errors = Counter("edgemesh_errors_total", "Error replies sent, by code.", ["code"])
        self.connections_opened = Counter(
            "edgemesh_connections_opened_total", "WebSocket connections accepted."
        )
        self.disconnects = Counter(
            "edgemesh_disconnects_total", "Connections ended, by reason.", ["reason"]
        )
        self.slow_consumers = Counter(
            "edgemesh_slow_consumer_disconnects_total",
            "Connections cut off because their send buffer passed the limit.",
        )
        self.fanout_spills = Counter(
            "edgemesh_fanout_spills_total",
            "Deliveries the kernel took only in part on the direct write path: the rest "
            "waited in the connection's transport (a reader falling behind).",
        )
        self.publish_ack_seconds = Histogram(
            "edgemesh_publish_ack_seconds",
            "Time from receiving a publish to its ack or nack.",
            LATENCY_BUCKETS_S,
        )
        self.delivery_lag_seconds = Histogram(
            "edgemesh_delivery_lag_seconds",
            "Time from a message being stored to its delivery by this edge.",
            LATENCY_BUCKETS_S,
        )
        self._owned: tuple[Counter | Histogram, ...] = (
            self.publishes,
            self.acks,
            self.region_checks,
            self.nacks,
            self.errors,
            self.connections_opened,
            self.disconnects,
            self.slow_consumers,
            self.fanout_spills,
            self.publish_ack_seconds,
            self.delivery_lag_seconds,
        )

    def render(self, samples: Iterable[Sample]) -> str:
        lines: list[str] = []
        for metric in self._owned:
            lines.extend(metric.render())
        seen: set[str] = set()
        for s in samples:
            if s.name not in seen:
                seen.add(s.name)
                lines.append(f"# HELP {s.name} {s.help}")
                lines.append(f"# TYPE {s.name} {'counter' if s.counter else 'gauge'}")
            lines.append(f"{s.name}{_labels(s.labels)} {_number(s.value)}")
        return "\n".join(lines) + "\n"
