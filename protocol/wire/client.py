"""The client side: MDP/0.2 requests with ids, timeouts, retries and
PARTIAL streaming.

Two layers, each usable alone:

* :class:`MDPClient` (:mod:`protocol.wire.mdp_client`) — one DEALER socket
  speaking the RFC 18 client sub-protocol; raw frames in and out; one thread.
* :class:`SamClient` — our body codec on top: a request id per call, replies
  for other ids dropped (stale), PARTIALs delivered as they come, a silence
  timeout (reset by each PARTIAL) with retries on a fresh socket (RFC 18's
  recommended strategy; workers are idempotent), the "need image" resend,
  and remote errors raised as :class:`RemoteError`. A request in flight
  when the connection to the broker drops (the broker crashed or was
  restarted: the requests it held are gone) is sent again at once on a
  fresh socket, without waiting out the silence timeout; each resend is
  logged with the request id and counted in :attr:`SamClient.resends`. A reply to the request
  that cannot be decoded (too large, corrupt) is :class:`BadReply` at once,
  never a silent retry of the work.

The typed operations on top of :class:`SamClient` are :mod:`protocol.ops`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import zmq

from protocol.runtime.checkpoints import DEFAULT_MODEL
from protocol.wire import codec, mdp
from protocol.wire.errors import BadReply, ClientError, ProtocolError, RemoteError, RequestTimeout, Superseded
from protocol.wire.image_key import image_key as compute_image_key
from protocol.wire.mdp import DEFAULT_FRONTEND, MMI_CANCEL, MMI_SERVICES
from protocol.wire.mdp_client import MDPClient
from protocol.wire.security import CurveClientKeys

log = logging.getLogger(__name__)

# MDPClient lives in protocol.wire.mdp_client; callers import it from here too.
__all__ = ["ClientConfig", "KnownKeys", "MDPClient", "SamClient"]

_POLL_SLICE_S = 0.05
MAX_RESENDS_AFTER_LOSS = 3
"""Resends of one request after lost connections; past it, only the silence timeout retries."""
_LOST = object()


@dataclass(frozen=True)
class ClientConfig:
    """Tunables of :class:`SamClient`.

    Attributes:
        timeout_s: silence allowed before an attempt counts as lost (each
            PARTIAL restarts it).
        retries: extra attempts, each on a fresh socket, after a timeout.
        known_keys: how many image keys the client remembers having sent
            (those requests go without the image; the worker may still
            answer "need image").
    """

    timeout_s: float = 30.0
    retries: int = 2
    known_keys: int = 64


class KnownKeys:
    """Image keys already sent to a service, newest last, at most ``capacity`` (thread-safe).

    A request for a key in here goes without the image (the worker answers
    "need image" if it no longer holds it). Clients may share one, so that
    an image one of them sent (an ``embed`` ahead of prompts, say) is not
    sent again by another.
    """

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = max(1, int(capacity))
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._keys

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)

    def add(self, key: str) -> None:
        """Remember ``key`` as the most recently sent; forget the oldest past ``capacity``."""
        with self._lock:
            self._keys[key] = None
            self._keys.move_to_end(key)
            while len(self._keys) > self.capacity:
                self._keys.popitem(last=False)


class SamClient:
    """Calls operations of a SAM2 service through the broker.

    Not thread-safe: one call at a time per instance (use one per thread).

    Args:
        endpoint: broker frontend.
        service: model/service name, e.g. ``"sam2.1_hiera_tiny"``.
        config: timeouts and retries.
        limits: bounds applied when decoding replies.
        curve: CurveZMQ keys (see :class:`MDPClient`; default: from the environment).
        known_keys: image keys sent so far, shared with other clients
            (default: this client's own, ``config.known_keys`` of them).
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_FRONTEND,
        service: str = DEFAULT_MODEL,
        *,
        config: ClientConfig = ClientConfig(),
        limits: codec.Limits = codec.DEFAULT_LIMITS,
        context: zmq.Context | None = None,
        curve: CurveClientKeys | None | Literal[False] = None,
        known_keys: KnownKeys | None = None,
    ) -> None:
        self.service = service
        self.config = config
        self.limits = limits
        self.mdp = MDPClient(endpoint, context=context, curve=curve)
        self.known_keys = known_keys if known_keys is not None else KnownKeys(config.known_keys)
        self.resends = 0
        """Requests this client sent again (a lost connection, or a timeout retry), all calls together."""

    @property
    def endpoint(self) -> str:
        return self.mdp.endpoint

    def close(self) -> None:
        self.mdp.close()

    def __enter__(self) -> SamClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- broker queries -------------------------------------------------

    def services(self, timeout_s: float = 2.0) -> dict[str, dict[str, Any]]:
        """Ask the broker (``mmi.services``) which services have workers.

        Returns:
            ``{name: {"workers": n, "idle": n, "queued": n, ...}}``, with ``described`` (n) and
            ``family``, ``description``, ``licence``, ``preprocessing`` and ``ops`` where
            the broker has seen an ``info`` answer of the service (see :meth:`describe_services`).

        Raises:
            RequestTimeout: no broker answered within ``timeout_s``.
        """
        reply = self._raw_call(MMI_SERVICES, [], timeout_s)
        try:
            return dict(json.loads(bytes(reply[0]))["services"])
        except (IndexError, ValueError, KeyError, TypeError) as e:
            raise ProtocolError(f"bad mmi.services reply: {e}") from e

    def describe_services(self, timeout_s: float = 10.0) -> dict[str, dict[str, Any]]:
        """:meth:`services`, completed by one ``info`` per live service the broker cannot describe yet.

        The broker learns a service's ``SERVICE_FIELDS`` from the ``info``
        replies it forwards, so the ``info`` asked here also describes the
        service to every later ``mmi.services``. A service whose ``info``
        fails (timeout, error) is listed without those fields.

        Returns:
            ``{name: {"workers": n, ..., "family": ..., "ops": [...]}}``.

        Raises:
            RequestTimeout: no broker answered ``mmi.services`` within ``timeout_s``.
        """
        services = self.services(timeout_s=min(timeout_s, 2.0))
        own_service = self.service
        try:
            for name, record in services.items():
                if record.get("workers", 0) <= 0 or "family" in record:
                    continue
                self.service = name
                try:
                    reply = self.call("info", timeout_s=timeout_s, retries=0)
                except ClientError as e:
                    log.warning("info of service %s failed: %s", name, e)
                    continue
                result = reply.header.get("result") or {}
                record.update({key: result[key] for key in mdp.SERVICE_FIELDS if key in result})
        finally:
            self.service = own_service
        return services

    def _raw_call(self, service: bytes, body: list[bytes], timeout_s: float) -> list[Any]:
        self.mdp.send(service, body)
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            message = self.mdp.recv(left)
            if message is not None and message.service == service and message.command == mdp.C_FINAL:
                return message.body
        self.mdp.connect()
        raise RequestTimeout(f"no answer from the broker at {self.endpoint} within {timeout_s:.1f} s")

    # -- operations -----------------------------------------------------

    def call(
        self,
        op: str,
        params: Mapping[str, Any] | None = None,
        arrays: Mapping[str, np.ndarray] | None = None,
        *,
        image: np.ndarray | None = None,
        contrast_limits: tuple[float, float] | None = None,
        timeout_s: float | None = None,
        on_partial: Callable[[codec.Message], None] | None = None,
        cancel: threading.Event | None = None,
        retries: int | None = None,
    ) -> codec.Message:
        """Run one operation and return its FINAL reply.

        Args:
            op: operation name (see protocol/README.md).
            params: JSON parameters; ``contrast_limits`` is added when given.
            arrays: extra arrays (e.g. ``mask_input``).
            image: the raw (H, W) or (H, W, C) slice. Its key is computed
                here; the pixels travel only when the worker may not hold
                them (first use of the key, or a "need image" answer).
            contrast_limits: (low, high) for non-uint8 images.
            timeout_s: silence timeout per attempt (default from config).
            on_partial: called with each PARTIAL reply of this request.
            cancel: set it to abandon the call: the broker is asked
                (``mmi.cancel``) to drop the request or stop the worker
                serving it, and :class:`Superseded` is raised at once.
            retries: extra attempts after a silent one (default from config);
                0 for work that must not run twice.

        Raises:
            RemoteError: the worker or broker answered with an error.
            BadReply: a reply to this request could not be decoded (e.g. larger
                than ``limits``); raised at once, the request is not re-run.
            RequestTimeout: every attempt stayed silent past the timeout.
            Superseded: ``cancel`` was set.
        """
        full_params = dict(params or {})
        if contrast_limits is not None:
            full_params["contrast_limits"] = [float(contrast_limits[0]), float(contrast_limits[1])]
        key = None
        if image is not None:
            key = compute_image_key(image, contrast_limits, self.service)
        send_image = image is not None and key not in self.known_keys
        attempts = 1 + (self.config.retries if retries is None else max(0, retries))
        reply = self._call_once(
            op, full_params, arrays, image, key, send_image, timeout_s, on_partial, cancel, attempts
        )
        if reply.status == codec.STATUS_NEED_IMAGE and image is not None and not send_image:
            log.info("worker does not hold %s; resending with the image", key)
            reply = self._call_once(
                op, full_params, arrays, image, key, True, timeout_s, on_partial, cancel, attempts
            )
        if reply.status == codec.STATUS_ERROR:
            error = reply.header.get("error") or {}
            raise RemoteError(
                str(error.get("code", "error")), str(error.get("message", "")), request_id=reply.request_id
            )
        if reply.status == codec.STATUS_NEED_IMAGE:
            raise RemoteError(
                "need_image",
                f"the worker does not hold image {key} and none was sent",
                request_id=reply.request_id,
            )
        if key is not None:
            self.known_keys.add(key)
        return reply

    def _call_once(
        self,
        op: str,
        params: dict[str, Any],
        arrays: Mapping[str, np.ndarray] | None,
        image: np.ndarray | None,
        key: str | None,
        send_image: bool,
        timeout_s: float | None,
        on_partial: Callable[[codec.Message], None] | None,
        cancel: threading.Event | None,
        attempts: int,
    ) -> codec.Message:
        request_id = uuid.uuid4().hex
        header: dict[str, Any] = {"op": op, "request_id": request_id, "params": params}
        if key is not None:
            header["image_key"] = key
        all_arrays = dict(arrays or {})
        if send_image and image is not None:
            all_arrays["image"] = image
        body = codec.encode(header, all_arrays)
        silence_s = self.config.timeout_s if timeout_s is None else timeout_s
        service = self.service.encode()
        self.mdp.connection_lost()  # a loss while idle took nothing of ours with it
        self.mdp.send(service, body)
        attempt = losses = 0
        while True:
            outcome = self._await_final(request_id, silence_s, on_partial, cancel)
            if isinstance(outcome, codec.Message):
                return outcome
            if outcome is _LOST and losses < MAX_RESENDS_AFTER_LOSS:
                losses += 1
                log.warning(
                    "request %s (%s): the connection to the broker at %s dropped (broker restarted?) "
                    "and the request with it; sending it again at once (resend %d after a lost connection)",
                    request_id,
                    op,
                    self.endpoint,
                    losses,
                )
            else:
                attempt += 1
                if attempt >= attempts:
                    break
                log.warning("request %s (%s) timed out; retry %d on a fresh socket", request_id, op, attempt)
            self.resends += 1
            self.mdp.connect()
            self.mdp.send(service, body)
        self.mdp.connect()
        raise RequestTimeout(
            f"{op} got no reply from service {self.service!r} at {self.endpoint} "
            f"within {silence_s:.1f} s, {attempts} attempt{'s' if attempts > 1 else ''}",
            request_id=request_id,
        )

    def _await_final(
        self,
        request_id: str,
        silence_s: float,
        on_partial: Callable[[codec.Message], None] | None,
        cancel: threading.Event | None,
    ) -> codec.Message | object | None:
        """The FINAL for ``request_id``; ``None`` after ``silence_s`` of silence, ``_LOST`` when the
        connection to the broker dropped meanwhile (the request is gone with it)."""
        deadline = time.monotonic() + silence_s
        service = self.service.encode()
        while (left := deadline - time.monotonic()) > 0:
            if cancel is not None and cancel.is_set():
                self._send_cancel(request_id)
                raise Superseded(f"request {request_id} was cancelled", request_id=request_id)
            message = self.mdp.recv(min(left, _POLL_SLICE_S))
            if message is None:
                if self.mdp.connection_lost():
                    return _LOST
                continue
            if message.service != service:  # e.g. the answer to an earlier mmi.cancel
                log.debug("dropping a reply from service %r", message.service)
                continue
            try:
                reply = codec.decode(message.body, self.limits)
            except codec.CodecError as e:
                if _names_request(message.body, request_id):
                    # Ours, but unreadable: the work is done; re-running it would only fail again.
                    kind = "PARTIAL" if message.command == mdp.C_PARTIAL else "reply"
                    raise BadReply(
                        f"the {kind} to this request cannot be decoded: {e}", request_id=request_id
                    ) from e
                log.warning("dropping an undecodable reply for another request: %s", e)
                continue
            if reply.request_id != request_id:
                log.debug("dropping stale reply for request %s", reply.request_id)
                continue
            if message.command == mdp.C_PARTIAL:
                deadline = time.monotonic() + silence_s
                if on_partial is not None:
                    on_partial(reply)
                continue
            return reply
        return None

    def _send_cancel(self, request_id: str) -> None:
        """Ask the broker (``mmi.cancel``) to drop ``request_id`` or stop its worker; best effort.

        Its answer is not awaited: it arrives later and is dropped like any
        reply for another service.
        """
        if self.mdp.socket is None:
            return
        frames = mdp.client_request(MMI_CANCEL, [request_id.encode()], delimited=self.mdp.delimited)
        try:
            self.mdp.socket.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.ZMQError as e:
            log.debug("could not send mmi.cancel for %s: %s", request_id, e)


def _names_request(body: list[Any], request_id: str) -> bool:
    """Whether a reply's header frame mentions ``request_id`` (read as bytes, whatever its size).

    Request ids are fresh random hex strings, so a frame holding one is a
    reply to that request even when it is too large or too broken to parse.
    """
    return bool(body) and request_id.encode() in bytes(body[0])
