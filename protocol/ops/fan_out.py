"""Many independent requests spread over every worker of a service, several in flight.

:func:`fan_out` sends one request per item, keeping as many in flight as the
broker has workers for the service (``mmi.services``; the broker routes
them), one :class:`~protocol.wire.client.SamClient` per sending thread. Answers
are handed, one at a time and in the order they arrive, to a callback on the
calling thread (where they may be stitched or counted without locks), through
a bounded queue: when that callback lags, the senders wait instead of piling
answers up in memory. Cancelling stops sending and abandons the requests in
flight (``mmi.cancel``); the first failure does the same and is raised.

Used by :mod:`protocol.ops.tiled` (tiles of ``auto``) and the plugin's
"Encode stack" (``embed`` of every slice or window).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from protocol.wire.client import SamClient
from protocol.wire.errors import ClientError, Superseded

log = logging.getLogger(__name__)

REQUESTS_PER_WORKER = 2
"""Requests kept in flight per worker by tiled ``auto`` (the plugin's and ``sam2-batch``'s): while a
worker computes one, the next is already queued at the broker, so no worker waits for the client's
round trip. See :func:`requests_in_flight`."""

Item = TypeVar("Item")
Answer = TypeVar("Answer")


def worker_count(client: SamClient, timeout_s: float = 2.0) -> int:
    """Workers the broker has for ``client.service`` (``mmi.services``); at least 1."""
    try:
        services = client.services(timeout_s)
    except ClientError as e:
        log.warning("could not ask the broker for its workers (%s); one request in flight", e)
        return 1
    return max(1, int(services.get(client.service, {}).get("workers", 1)))


def requests_in_flight(workers: int) -> int:
    """Requests to keep in flight for ``workers`` workers of a service (the one policy of tiled ``auto``)."""
    return REQUESTS_PER_WORKER * max(1, workers)


class AnyEvent(threading.Event):
    """Set when any of its events is set (what ``SamClient.call``'s ``cancel`` polls)."""

    def __init__(self, *events: threading.Event) -> None:
        super().__init__()
        self._events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self._events)


@dataclass(frozen=True)
class FanOutResult(Generic[Item]):
    """How a :func:`fan_out` ended.

    Attributes:
        done: items whose answer was handed to ``on_answer``.
        total: items given.
        in_flight: requests kept in flight (sending threads).
        seconds: wall time of the whole run.
        cancelled: it stopped early because ``cancel`` was set.
        resends: requests sent again by the clients (lost broker connections, timeouts;
            :attr:`protocol.wire.client.SamClient.resends`).
    """

    done: int
    total: int
    in_flight: int
    seconds: float
    cancelled: bool
    resends: int = 0


def fan_out(
    items: Sequence[Item],
    client_factory: Callable[[], SamClient],
    send: Callable[[SamClient, Item, threading.Event], Answer],
    on_answer: Callable[[Item, Answer], None],
    *,
    in_flight: int | None = None,
    per_worker: int = 1,
    cancel: threading.Event | None = None,
) -> FanOutResult[Item]:
    """Send one request per item over all workers; hand each answer to ``on_answer`` on this thread.

    Args:
        items: the work, taken in order by the sending threads.
        client_factory: makes one connected client per sending thread, e.g.
            ``lambda: SamClient(endpoint, service)``; each is closed at the end.
        send: ``send(client, item, halt)`` runs one request (in a sending
            thread) and returns its answer; it passes ``halt`` as the
            request's ``cancel`` so that a stop abandons it at once.
        on_answer: ``on_answer(item, answer)``, on the calling thread, one at a time.
        in_flight: requests at once; ``None``: ``per_worker`` x the broker's
            worker count for the service. Never more than ``len(items)``.
        per_worker: requests per worker when ``in_flight`` is ``None``.
        cancel: set it to stop: no new item is sent, requests in flight are
            cancelled, answers not yet handed over are dropped.

    Returns:
        :class:`FanOutResult`.

    Raises:
        The first exception of ``send`` (other than ``Superseded``), after
        the other requests were cancelled; any exception of ``on_answer``.
    """
    started = time.monotonic()
    stop = cancel if cancel is not None else threading.Event()
    failed = threading.Event()
    halt = AnyEvent(stop, failed)
    total = len(items)
    if total == 0:
        return FanOutResult(0, 0, 0, time.monotonic() - started, stop.is_set())
    clients = [client_factory()]
    try:
        workers = in_flight if in_flight is not None else per_worker * worker_count(clients[0])
        workers = max(1, min(workers, total))
        clients += [client_factory() for _ in range(workers - 1)]
    except BaseException:
        for client in clients:
            client.close()
        raise
    todo: queue.SimpleQueue[Item] = queue.SimpleQueue()
    for item in items:
        todo.put(item)
    # Bounded: when on_answer lags behind the workers, senders wait instead of piling up answers in memory.
    results: queue.Queue[tuple[Item, Answer | None, BaseException | None]] = queue.Queue(2 * workers)

    def hand_over(entry: tuple[Item, Answer | None, BaseException | None]) -> None:
        while True:
            try:
                results.put(entry, timeout=0.1)
                return
            except queue.Full:
                if halt.is_set():
                    return  # the calling thread has stopped taking answers

    def sender(client: SamClient) -> None:
        try:
            while not halt.is_set():
                try:
                    item = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    hand_over((item, send(client, item, halt), None))
                except BaseException as e:  # handed to the calling thread, which raises it
                    hand_over((item, None, e))
                    return
        finally:
            client.close()

    threads = [
        threading.Thread(target=sender, args=(client,), name=f"fan-out-{k}", daemon=True)
        for k, client in enumerate(clients)
    ]
    for thread in threads:
        thread.start()
    error: BaseException | None = None
    done = 0
    try:
        while done < total:
            if not any(t.is_alive() for t in threads) and results.empty():
                break
            try:
                item, answer, exc = results.get(timeout=0.1)
            except queue.Empty:
                continue
            if exc is not None:
                if not isinstance(exc, Superseded) and error is None:
                    error = exc
                    failed.set()
                continue
            if halt.is_set():
                continue
            on_answer(item, answer)  # type: ignore[arg-type]
            done += 1
    except BaseException:  # a failing callback, or Ctrl-C: stop the senders too
        failed.set()
        raise
    finally:
        for thread in threads:
            thread.join(timeout=30)
    if error is not None:
        raise error
    resends = sum(client.resends for client in clients)
    return FanOutResult(done, total, workers, time.monotonic() - started, stop.is_set(), resends)
