"""The project's own exceptions, shared by broker, workers, client and plugin.

Transport and validation failures are turned into these (``raise ... from e``)
so callers never have to know about zmq or blosc2 exception types.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """A message that does not follow MDP/0.2 (RFC 18) framing."""


class AnswerError(ProtocolError):
    """A reply that decodes but does not answer the request (a mask of the wrong
    shape, labels of the wrong dtype): checked by :mod:`protocol.ops`.

    Attributes:
        request_id: the id of the request it answers (for logs).
    """

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class CodecError(ValueError):
    """A body (header + array frames) that fails validation or decoding."""


class ClientError(Exception):
    """Base class for failures seen by a client call.

    Attributes:
        request_id: the id of the request that failed, when known (for logs).
    """

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class RequestTimeout(ClientError):
    """No FINAL reply arrived within the timeout after every retry."""


class Superseded(ClientError):
    """A newer request replaced this one before its reply was used."""


class RemoteError(ClientError):
    """The broker or a worker answered with an error FINAL.

    Attributes:
        code: short machine-readable error code, e.g. ``"bad_request"``.
        message: human-readable explanation from the remote side.
        request_id: the id of the request that failed, when known (for logs).
    """

    def __init__(self, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}", request_id)
        self.code = code
        self.message = message


class BadReply(RemoteError):
    """A reply to this request arrived but cannot be decoded (too large for the
    client's limits, corrupt): the work was done, so it is reported at once
    (code ``bad_reply``) and never re-run."""

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__("bad_reply", message, request_id)


class SecurityError(Exception):
    """CURVE keys that are missing, malformed or unsafe to use."""
