"""Updates held back by a Tally read exactly as prometheus_client's own, at any collect."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from service.metrics import REQUEST_BUCKETS
from service.tally import Tally


class Figures:
    """A counter, a gauge and a histogram, each with a label, counted through a Tally."""

    def __init__(self, *, behind: bool) -> None:
        self.registry = CollectorRegistry()
        self.tally = Tally(self.registry, behind=behind)
        r = self.registry
        self.counter = Counter("c", "c", ["op"], registry=r)
        self.gauge = Gauge("g", "g", ["op"], registry=r)
        self.histogram = Histogram("h", "h", ["op"], buckets=REQUEST_BUCKETS, registry=r)

    def apply(self, step: tuple[str, str, float]) -> None:
        kind, label, amount = step
        if kind == "inc":
            self.tally.inc(self.counter.labels(label), abs(amount))
        elif kind == "gauge":
            self.tally.inc(self.gauge.labels(label), amount)
        elif kind == "observe":
            self.tally.observe(self.histogram.labels(label), abs(amount))
        else:
            generate_latest(self.registry)  # a scrape in the middle


# Sixteenths: sums in any order are exact, so the two sides must match to the bit.
AMOUNTS = st.integers(-(10**6), 10**6).map(lambda n: n / 16) | st.sampled_from(
    [0.0, *REQUEST_BUCKETS, float("inf")]
)
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["inc", "gauge", "observe", "scrape"]), st.sampled_from("ab"), AMOUNTS
    ),
    max_size=60,
)


@given(STEPS)
def test_a_scrape_reads_what_updating_at_once_would(steps: list[tuple[str, str, float]]) -> None:
    direct, behind = Figures(behind=False), Figures(behind=True)
    for step in steps:
        direct.apply(step)
        behind.apply(step)
    assert generate_latest(behind.registry) == generate_latest(direct.registry)


def test_an_update_is_seen_by_the_very_next_read() -> None:
    figures = Figures(behind=True)
    figures.apply(("observe", "a", 0.003))
    figures.apply(("inc", "a", 2))
    sample: Any = figures.registry.get_sample_value
    assert sample("h_bucket", {"op": "a", "le": "0.001"}) == 0
    assert sample("h_bucket", {"op": "a", "le": "0.005"}) == 1
    assert sample("h_sum", {"op": "a"}) == 0.003
    assert sample("c_total", {"op": "a"}) == 2
    figures.apply(("inc", "a", 1))  # and again after a flush
    assert sample("c_total", {"op": "a"}) == 3


def test_held_back_updates_wait_outside_prometheus_until_a_read() -> None:
    figures = Figures(behind=True)
    child = figures.counter.labels("a")
    figures.apply(("inc", "a", 5))
    assert child._value.get() == 0  # not handed over yet: no lock taken per update
    figures.tally.flush()
    assert child._value.get() == 5


def test_not_behind_every_update_goes_through_at_once() -> None:
    figures = Figures(behind=False)
    figures.apply(("inc", "a", 5))
    assert figures.counter.labels("a")._value.get() == 5
