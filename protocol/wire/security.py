"""CurveZMQ keys and the client side of authentication (workers and clients).

With CURVE on, every connection to the broker is encrypted, and the broker
admits only public keys it has been given (``broker/auth.py``). A key
directory made by ``scripts/curve_keys.py`` looks like this::

    curve/
      broker.key              broker public key: give it to every client and worker
      broker.key_secret       broker keypair: stays on the broker machine (mode 0600)
      authorized_clients/     public keys (*.key) admitted on the frontend (clients)
      authorized_workers/     public keys (*.key) admitted on the backend (workers)
      clients/NAME.key[_secret]   keypairs made for clients (hand out the pair)
      workers/NAME.key[_secret]   keypairs made for workers

Key files are ZeroMQ certificates (czmq / ``zmq.auth`` text format): a
``.key`` file holds a public key, a ``.key_secret`` file the public and the
secret key, both Z85-encoded (40 characters).

A client or worker needs its own ``.key_secret`` and the broker's ``.key``.
Clients also read them from the environment (``SAM2_CURVE_CLIENT_KEY``,
``SAM2_CURVE_SERVER_KEY``), so an unchanged program (the napari plugin)
authenticates once those are set.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.utils import z85

from protocol.wire.errors import SecurityError

BROKER_SECRET_KEY = "broker.key_secret"
AUTHORIZED_CLIENTS = "authorized_clients"
AUTHORIZED_WORKERS = "authorized_workers"
CLIENT_KEYS = "clients"
WORKER_KEYS = "workers"

# ZAP (RFC 27) domains of the broker's two sockets; each has its own allowed keys.
CLIENTS_DOMAIN = "sam2.clients"
WORKERS_DOMAIN = "sam2.workers"

ENV_CLIENT_KEY = "SAM2_CURVE_CLIENT_KEY"
ENV_SERVER_KEY = "SAM2_CURVE_SERVER_KEY"

_Z85_KEY_CHARS = 40
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def _check_z85_key(key: bytes, what: str, path: Path) -> bytes:
    if len(key) != _Z85_KEY_CHARS:
        raise SecurityError(f"{path}: {what} must be {_Z85_KEY_CHARS} Z85 characters, got {len(key)}")
    try:
        z85.decode(key)
    except (ValueError, KeyError, IndexError) as e:
        raise SecurityError(f"{path}: {what} is not valid Z85: {e}") from e
    return key


def load_public_key(path: str | os.PathLike[str]) -> bytes:
    """The Z85 public key of a ``.key`` (or ``.key_secret``) file.

    Raises:
        SecurityError: missing file, no key, or a malformed key.
    """
    file = Path(path)
    try:
        public, _ = zmq.auth.load_certificate(file)
    except (OSError, ValueError) as e:
        raise SecurityError(f"cannot read a CURVE public key from {file}: {e}") from e
    return _check_z85_key(public, "public key", file)


def secret_file_is_private(path: str | os.PathLike[str]) -> bool:
    """False when a secret key file can be read by the group or others."""
    mode = Path(path).stat().st_mode
    return not mode & (stat.S_IRWXG | stat.S_IRWXO)


@dataclass(frozen=True, repr=False)
class CurveKeyPair:
    """A CURVE keypair, Z85-encoded (the secret never appears in ``repr``).

    Attributes:
        public: 40-character public key.
        secret: 40-character secret key.
    """

    public: bytes
    secret: bytes

    def __repr__(self) -> str:
        return f"CurveKeyPair(public={self.public.decode()!r}, secret=<hidden>)"

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CurveKeyPair:
        """Read a ``.key_secret`` file.

        Raises:
            SecurityError: missing file, no secret key in it, or malformed keys.
        """
        file = Path(path)
        try:
            public, secret = zmq.auth.load_certificate(file)
        except (OSError, ValueError) as e:
            raise SecurityError(f"cannot read a CURVE keypair from {file}: {e}") from e
        if not secret:
            raise SecurityError(f"{file} holds no secret key (use the .key_secret file, not the .key file)")
        return cls(_check_z85_key(public, "public key", file), _check_z85_key(secret, "secret key", file))


@dataclass(frozen=True)
class CurveClientKeys:
    """What a connecting peer (client or worker) needs: its keypair and the broker's public key.

    Attributes:
        keypair: this peer's own keys.
        server_public: the broker's public key (``broker.key``).
    """

    keypair: CurveKeyPair
    server_public: bytes

    @classmethod
    def load(
        cls, key_file: str | os.PathLike[str], server_key_file: str | os.PathLike[str]
    ) -> CurveClientKeys:
        """Read this peer's ``.key_secret`` file and the broker's ``.key`` file.

        Raises:
            SecurityError: a file is missing or malformed.
        """
        return cls(CurveKeyPair.load(key_file), load_public_key(server_key_file))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> CurveClientKeys | None:
        """Keys named by ``SAM2_CURVE_CLIENT_KEY`` and ``SAM2_CURVE_SERVER_KEY``; None when unset.

        Raises:
            SecurityError: only one of the two is set, or a file is unusable.
        """
        env = os.environ if environ is None else environ
        key_file, server_file = env.get(ENV_CLIENT_KEY, ""), env.get(ENV_SERVER_KEY, "")
        if not key_file and not server_file:
            return None
        if not (key_file and server_file):
            raise SecurityError(f"set both {ENV_CLIENT_KEY} and {ENV_SERVER_KEY} (or neither) for CURVE")
        return cls.load(key_file, server_file)

    def apply(self, socket: zmq.Socket[Any]) -> None:
        """Make ``socket`` a CURVE client of the broker; call before ``connect``."""
        socket.setsockopt(zmq.CURVE_SERVERKEY, self.server_public)
        socket.setsockopt(zmq.CURVE_PUBLICKEY, self.keypair.public)
        socket.setsockopt(zmq.CURVE_SECRETKEY, self.keypair.secret)


def apply_curve_server(socket: zmq.Socket[Any], keypair: CurveKeyPair, zap_domain: str) -> None:
    """Make ``socket`` a CURVE server whose peers are checked by the ZAP handler of ``zap_domain``.

    Call before ``bind``, and only once a ZAP handler is bound in the
    socket's context: without one, libzmq admits every client key.
    """
    socket.setsockopt(zmq.CURVE_SERVER, 1)
    socket.setsockopt(zmq.CURVE_PUBLICKEY, keypair.public)
    socket.setsockopt(zmq.CURVE_SECRETKEY, keypair.secret)
    socket.setsockopt(zmq.ZAP_DOMAIN, zap_domain.encode())


def scan_authorized_keys(directory: str | os.PathLike[str]) -> tuple[dict[bytes, str], list[str]]:
    """Public keys of every ``*.key`` file in ``directory`` and the files that could not be read.

    Returns:
        ``({z85 public key: file stem}, [problems])``; a missing directory gives ``({}, [])``.
    """
    folder = Path(directory)
    keys: dict[bytes, str] = {}
    problems: list[str] = []
    if not folder.is_dir():
        return keys, problems
    for file in sorted(folder.glob("*.key")):
        try:
            keys[load_public_key(file)] = file.stem
        except SecurityError as e:
            problems.append(str(e))
    return keys, problems


def is_loopback_endpoint(endpoint: str) -> bool:
    """True when ``endpoint`` can only be reached from this machine.

    ``ipc://`` and ``inproc://`` are local; ``tcp://HOST:PORT`` is local when
    HOST is ``localhost`` or a loopback address. Wildcards (``*``), interface
    names and other addresses are not.
    """
    transport, _, rest = endpoint.partition("://")
    if transport in ("ipc", "inproc"):
        return True
    if transport != "tcp":
        return False
    host = rest.rpartition(":")[0].strip("[]")
    if host in _LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
