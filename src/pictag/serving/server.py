"""``pictag serve``: load a run and serve it with uvicorn until Ctrl+C."""

from __future__ import annotations

import ipaddress
import socket
import sys
from pathlib import Path

import uvicorn

from pictag.serving.app import app_from_run
from pictag.serving.limits import Limits


def serve(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: Limits | None = None,
    device: str = "auto",
) -> None:
    """Serve a run folder over HTTP.

    Args:
        run_dir: Folder with ``model.safetensors`` and ``pictag.json``.
        host: Interface to listen on; the default answers this machine only. ``0.0.0.0``
            opens the server to the network (it has no authentication).
        port: TCP port.
        limits: What a request may hold (:class:`Limits` defaults when None).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """
    _check_port(host, port)  # before the model loads and the banner says where it listens
    app = app_from_run(run_dir, limits, device)
    if not _is_loopback(host):
        print(
            f"pictag serve: listening on {host}: anyone who can reach this machine can use the "
            "model (there is no authentication)",
            file=sys.stderr,
        )
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    print(f"pictag serve: {Path(run_dir)} at {url} (API docs at {url}docs); Ctrl+C stops it")
    uvicorn.run(app, host=host, port=port, log_level="info")


def _check_port(host: str, port: int) -> None:
    """Refuse a port that cannot be listened on (in use, or privileged) with what to do,
    instead of a banner naming the address followed by uvicorn's error.

    Raises:
        ValueError: ``host:port`` cannot be bound.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            probe.bind(address)
    except OSError as err:
        raise ValueError(
            f"cannot listen on {host}:{port} ({err.strerror or err}): another program may use "
            "the port; choose another with --port, or stop that program"
        ) from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: we cannot tell, so warn
        return False
