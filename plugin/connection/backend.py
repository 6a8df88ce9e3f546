"""Finding a SAM2 backend, or starting one on this machine: :func:`establish`, and the names the widget uses.

No Qt, no napari; blocking functions meant for a worker thread. Two jobs,
each in its own module, put together here:

* :mod:`plugin.connection.probe`: :func:`probe` asks a broker which models
  (services) it serves, :func:`fetch_info` asks a worker about its device,
  :class:`BackendStatus` is the status line;
* :mod:`plugin.connection.embedded`: :class:`LocalBackend`, a broker and one
  worker as subprocesses for users who have not started a server (restarted
  when they die, ended with napari), and the checkpoint it needs
  (:func:`find_checkpoint`, :func:`download_checkpoint`).

Environment: ``SAM2_BROKER_ADDRESS`` (default ``tcp://127.0.0.1:5555``),
``SAM2_MODEL`` (default ``sam2.1_hiera_tiny``), ``SAM2_CHECKPOINT_DIR``, ``SAM2_RANDOM_WEIGHTS=1``,
``SAM2_EMBEDDED=0`` (never start an embedded backend), ``SAM2_DEVICE``
(embedded worker device, default ``auto``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from plugin.connection.embedded import (
    LocalBackend,
    download_checkpoint,
    env_flag,
    find_checkpoint,
    how_to_get_checkpoint,
    local_backend_missing,
    start_local,
)
from plugin.connection.probe import (
    DEFAULT_ADDRESS,
    BackendStatus,
    choose_model,
    default_address,
    default_model,
    describe_services,
    fetch_info,
    free_local_endpoint,
    is_local,
    probe,
)
from protocol.wire.errors import ClientError, ProtocolError

__all__ = [
    "DEFAULT_ADDRESS",
    "BackendStatus",
    "LocalBackend",
    "choose_model",
    "default_address",
    "default_model",
    "describe_services",
    "download_checkpoint",
    "env_flag",
    "establish",
    "fetch_info",
    "find_checkpoint",
    "free_local_endpoint",
    "how_to_get_checkpoint",
    "is_local",
    "local_backend_missing",
    "probe",
    "start_local",
]


def establish(
    address: str,
    wanted_model: str,
    report: Callable[[str], None],
    allow_embedded: bool = True,
    cancel: threading.Event | None = None,
) -> tuple[BackendStatus, LocalBackend | None]:
    """Connect to the broker at ``address`` (starting an embedded one when allowed and needed).

    An embedded backend is started only for a local TCP address where no
    broker answers, and unless ``SAM2_EMBEDDED=0``. Blocking (seconds to
    minutes when a backend must start): run it on a worker thread.

    Returns:
        The status snapshot, and the embedded backend if one was started
        (the caller owns it and must :meth:`LocalBackend.stop` it). Setting
        ``cancel`` abandons a backend that is still starting (it is stopped).
    """
    local: LocalBackend | None = None
    report(f"Connecting to {address}…")
    try:
        services = probe(address)
    except (ClientError, ProtocolError) as e:
        if not (allow_embedded and is_local(address) and env_flag("SAM2_EMBEDDED", True)):
            hint = "start one with scripts/start_all.sh, or check the address"
            why = f"no broker answers at {address} ({e}); {hint}"
            return BackendStatus(address, error=why, reachable=False), None
        local, error = start_local(address, wanted_model, report, cancel=cancel)
        if local is None:
            return BackendStatus(address, error=error, reachable=False), None
        services = probe(address)
    try:
        services = describe_services(address)  # one info per service the broker cannot describe yet
    except (ClientError, ProtocolError):
        pass  # the counts from probe() serve; the model box then shows no descriptions
    model = choose_model(services, wanted_model)
    if model is None:
        known = ", ".join(sorted(services)) or "none"
        error = f"the broker has no live workers (services: {known})"
        return BackendStatus(address, services, embedded=local is not None, error=error), local
    report(f"Asking a {model} worker about its device…")
    try:
        info = fetch_info(address, model)
    except (ClientError, ProtocolError) as e:
        return BackendStatus(address, services, model, embedded=local is not None, error=str(e)), local
    return BackendStatus(address, services, model, info, embedded=local is not None), local
