#!/usr/bin/env python
"""Create CurveZMQ keys for the broker, its clients and its workers.

    python scripts/curve_keys.py curve --clients alice,bob --workers gpu1,gpu2

makes (or completes) this layout; existing keys are never overwritten::

    curve/broker.key, curve/broker.key_secret      the broker's keypair
    curve/clients/alice.key, alice.key_secret        one keypair per client
    curve/workers/gpu1.key, gpu1.key_secret          one keypair per worker
    curve/authorized_clients/alice.key               public keys the broker admits
    curve/authorized_workers/gpu1.key                  on its frontend / backend

Then::

    python -m broker --curve-dir curve ...
    python -m workers --curve-key curve/workers/gpu1.key_secret --curve-server-key curve/broker.key ...
    SAM2_CURVE_CLIENT_KEY=curve/clients/alice.key_secret SAM2_CURVE_SERVER_KEY=curve/broker.key napari

Secret files are created readable by their owner only (0600). Give each
machine only its own ``.key_secret`` and ``broker.key``. To revoke a client
or worker, delete its file from ``authorized_clients/`` or
``authorized_workers/``: the broker reads those folders at every new
connection. ``--revoke-client NAME`` / ``--revoke-worker NAME`` do that.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from pathlib import Path

import zmq.auth

try:
    from protocol.wire import security
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from protocol.wire import security

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if not _NAME.match(name) or name == "broker":
            raise argparse.ArgumentTypeError(f"bad key name {name!r}: letters, digits, _ . - only")
    return names


def make_keypair(folder: Path, name: str) -> tuple[Path, bool]:
    """Create ``folder/name.key`` and ``.key_secret`` (0600) unless they exist.

    Returns:
        (public key path, whether it was created now).
    """
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    if secret.exists():
        security.CurveKeyPair.load(secret)  # refuse to go on with a damaged key
        return public, False
    old_umask = os.umask(0o077)
    try:
        zmq.auth.create_certificates(folder, name)
    finally:
        os.umask(old_umask)
    os.chmod(secret, 0o600)
    os.chmod(public, 0o644)
    return public, True


def authorise(public: Path, folder: Path) -> Path:
    """Copy a public key file into an ``authorized_*`` folder."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / public.name
    shutil.copyfile(public, target)
    os.chmod(target, 0o644)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="key directory (created if needed), e.g. curve")
    parser.add_argument("--clients", type=_names, default=[], help="comma-separated client names")
    parser.add_argument("--workers", type=_names, default=[], help="comma-separated worker names")
    parser.add_argument("--revoke-client", type=_names, default=[], help="remove from authorized_clients/")
    parser.add_argument("--revoke-worker", type=_names, default=[], help="remove from authorized_workers/")
    args = parser.parse_args(argv)

    root: Path = args.directory
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    created: list[str] = []
    kept: list[str] = []

    _, new = make_keypair(root, "broker")
    (created if new else kept).append(str(root / security.BROKER_SECRET_KEY))
    for names, keys_folder, allowed_folder in (
        (args.clients, security.CLIENT_KEYS, security.AUTHORIZED_CLIENTS),
        (args.workers, security.WORKER_KEYS, security.AUTHORIZED_WORKERS),
    ):
        for name in names:
            public, new = make_keypair(root / keys_folder, name)
            (created if new else kept).append(str(public.with_suffix(".key_secret")))
            authorise(public, root / allowed_folder)
    for names, allowed_folder in (
        (args.revoke_client, security.AUTHORIZED_CLIENTS),
        (args.revoke_worker, security.AUTHORIZED_WORKERS),
    ):
        for name in names:
            target = root / allowed_folder / f"{name}.key"
            if target.exists():
                target.unlink()
                print(f"revoked {target}")
            else:
                print(f"not authorised, nothing to revoke: {target}")
    for path in created:
        print(f"created {path}")
    for path in kept:
        print(f"kept    {path}")
    for folder in (security.AUTHORIZED_CLIENTS, security.AUTHORIZED_WORKERS):
        keys, problems = security.scan_authorized_keys(root / folder)
        print(f"{folder}: {', '.join(sorted(keys.values())) or '(none)'}")
        for problem in problems:
            print(f"  unreadable: {problem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
