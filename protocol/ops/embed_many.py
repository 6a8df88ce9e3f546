"""Embeddings ahead of prompts: ``embed`` many images over every worker, and how many the caches hold.

:func:`embed_many` sends one ``embed`` per image with as many in flight as
the broker has workers (:func:`protocol.ops.fan_out.fan_out`); each image is
read and converted only in the thread that sends it, so a stack of large
slices is never held whole. Later prompts on those images carry only their
key (when the clients share :class:`~protocol.wire.client.KnownKeys`) and cost a
decoder call.

:func:`cache_room` asks every worker (``info``) how many embeddings its
cache holds, to say when a stack will not fit: an evicted embedding is
computed again at its next prompt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from protocol.ops import requests as ops
from protocol.ops.fan_out import fan_out
from protocol.wire.client import SamClient
from protocol.wire.errors import ClientError, ProtocolError
from protocol.wire.wire_image import WireImage

ImageSource = Callable[[], WireImage]
"""Reads and converts one image for the wire (called in a sending thread)."""


@dataclass(frozen=True)
class EmbedManyResult:
    """How :func:`embed_many` ended.

    Attributes:
        done: images embedded (or found already cached).
        cached: of those, how many a worker already held.
        total: images given.
        in_flight: requests kept in flight (at most the workers).
        seconds: wall time.
        cancelled: stopped early because ``cancel`` was set.
    """

    done: int
    cached: int
    total: int
    in_flight: int
    seconds: float
    cancelled: bool


def embed_many(
    images: Sequence[ImageSource],
    client_factory: Callable[[], SamClient],
    *,
    in_flight: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
    timeout_s: float | None = None,
) -> EmbedManyResult:
    """``embed`` every image, spread over all workers of the service.

    Args:
        images: one callable per image, returning it ready for the wire.
        client_factory: one client per sending thread (share their
            :class:`~protocol.wire.client.KnownKeys` with the clients that will prompt).
        in_flight: requests at once; ``None``: the broker's worker count.
        on_progress: ``on_progress(done, total)`` after each answer (on the calling thread).
        cancel: set it to stop; requests in flight are cancelled (``mmi.cancel``).
        timeout_s: silence allowed per request (default: the client's).

    Raises:
        RemoteError, RequestTimeout, ValueError: an image failed (the others are cancelled first).
    """
    cached = done = 0

    def send(client: SamClient, source: ImageSource, halt: threading.Event) -> ops.EmbedAnswer:
        return ops.embed(client, source(), timeout_s=timeout_s, cancel=halt)

    def count(_source: ImageSource, answer: ops.EmbedAnswer) -> None:
        nonlocal cached, done
        cached += int(answer.cached)
        done += 1
        if on_progress is not None:
            on_progress(done, len(images))

    run = fan_out(images, client_factory, send, count, in_flight=in_flight, cancel=cancel)
    return EmbedManyResult(run.done, cached, run.total, run.in_flight, run.seconds, run.cancelled)


@dataclass(frozen=True)
class CacheRoom:
    """How many embeddings the workers' caches hold together (an estimate).

    Attributes:
        workers: workers the service has.
        answered: distinct workers whose ``info`` said how large their cache is.
        capacity: embeddings all ``workers`` hold at most in memory (the answered ones'
            mean for those that did not answer).
        disk: embeddings their on-disk caches hold at most (``workers/disk_cache.py``: one folder
            shared by the workers of a host counts once), None: no worker has one.
        disk_dirs: the disk caches' folders.
    """

    workers: int
    answered: int
    capacity: int
    disk: int | None = None
    disk_dirs: tuple[str, ...] = ()


def worker_capacity(info: Mapping[str, Any]) -> int | None:
    """Embeddings one worker's cache holds at most, from its ``info`` answer; None when it cannot say.

    ``cache.limit_bytes`` over the size of one entry (``bytes / entries``),
    known once the cache holds something.
    """
    cache = info.get("cache")
    if not isinstance(cache, Mapping):
        return None
    try:
        entries, used, limit = int(cache["entries"]), int(cache["bytes"]), int(cache["limit_bytes"])
    except (KeyError, TypeError, ValueError):
        return None
    if entries <= 0 or used <= 0 or limit < 0:
        return None
    return limit // max(1, used // entries)


def disk_capacity(info: Mapping[str, Any]) -> tuple[str, int] | None:
    """``(folder, embeddings it holds at most)`` of one worker's disk cache, from its ``info``
    answer (``disk_cache.limit_bytes`` over the size of one entry, as :func:`worker_capacity`);
    None when it has none or cannot say."""
    disk, cache = info.get("disk_cache"), info.get("cache")
    if not isinstance(disk, Mapping) or not isinstance(cache, Mapping):
        return None
    try:
        folder, limit = str(disk["dir"]), int(disk["limit_bytes"])
        entries, used = int(cache["entries"]), int(cache["bytes"])
    except (KeyError, TypeError, ValueError):
        return None
    if entries <= 0 or used <= 0 or limit < 0:
        return None
    return folder, limit // max(1, used // entries)


def cache_room(
    client_factory: Callable[[], SamClient], workers: int, timeout_s: float = 5.0
) -> CacheRoom | None:
    """Ask each of the service's ``workers`` for its cache (one ``info`` each, all at once).

    The broker gives simultaneous requests to different idle workers; answers
    from one worker twice count once (by ``worker_id`` and ``pid``). Call it
    when the workers are idle (e.g. after :func:`embed_many`).

    Returns:
        :class:`CacheRoom`, or None when no worker said how large its cache is.
    """
    if workers < 1:
        return None
    answers: dict[tuple[Any, Any], int | None] = {}
    disks: dict[str, int] = {}  # folder -> embeddings it holds (shared by the workers of a host)

    def send(client: SamClient, _index: int, halt: threading.Event) -> dict[str, Any]:
        return ops.info(client, timeout_s=timeout_s, retries=0)

    def keep(_index: int, info: dict[str, Any]) -> None:
        answers[(info.get("worker_id"), info.get("pid"))] = worker_capacity(info)
        disk = disk_capacity(info)
        if disk is not None:
            disks[disk[0]] = disk[1]

    try:
        fan_out(list(range(workers)), client_factory, send, keep, in_flight=workers)
    except (ClientError, ProtocolError):
        if not answers:
            return None
    known = [c for c in answers.values() if c is not None]
    if not known:
        return None
    mean = sum(known) / len(known)
    capacity = int(sum(known) + mean * max(0, workers - len(known)))
    return CacheRoom(
        workers, len(known), capacity, sum(disks.values()) if disks else None, tuple(sorted(disks))
    )
