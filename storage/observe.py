"""A hook for metrics: storage reports what each Valkey call cost, and never
imports a metrics library itself.

Each completed :func:`storage.calls.call` reports ``(kind, seconds, outcome)``:
``kind`` is ``chunk_write``, ``chunk_read``, ``commit`` or ``meta``;
``outcome`` is ``ok`` or the protocol error code the failure maps to
(``unavailable``, ``storage_full``, ``internal``).

Each change event the Store publishes (a commit or a delete that took
effect) is reported as its kind, ``stored`` or ``deleted``.
"""

from __future__ import annotations

from collections.abc import Callable

Observer = Callable[[str, float, str], None]
EventObserver = Callable[[str], None]

_observers: list[Observer] = []
_event_observers: list[EventObserver] = []


def subscribe(observer: Observer) -> None:
    if observer not in _observers:
        _observers.append(observer)


def unsubscribe(observer: Observer) -> None:
    if observer in _observers:
        _observers.remove(observer)


def report(kind: str, seconds: float, outcome: str) -> None:
    for observer in _observers:
        observer(kind, seconds, outcome)


def subscribe_events(observer: EventObserver) -> None:
    if observer not in _event_observers:
        _event_observers.append(observer)


def unsubscribe_events(observer: EventObserver) -> None:
    if observer in _event_observers:
        _event_observers.remove(observer)


def report_event(kind: str) -> None:
    for observer in _event_observers:
        observer(kind)
