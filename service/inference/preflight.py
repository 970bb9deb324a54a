"""Checks made once before any worker starts: a start-up that cannot succeed stops with one
clear line and exit status 2, instead of tracebacks from workers that BentoML keeps
restarting.

Run by ``python -m service`` before it starts ``bentoml serve``, and by ``bentoml serve``
itself through the service's ``@bentoml.on_deployment`` hook (BentoML runs those hooks in
its serving process, before it starts workers).
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from contract import WeightsFileError, check_weights_file
from contract.metadata import MetadataError, read_metadata
from service.inference.device import DeviceUnavailableError, check_device
from service.inference.store import served_entries
from service.inference.versions import PolicyError
from service.settings import Settings

EXIT_STATUS = 2


def problem(settings: Settings) -> str | None:
    """Why the configured model versions cannot be served here, or None."""
    tag = settings.model_tag
    try:
        entries, _ = served_entries(settings)
    except PolicyError as exc:
        return str(exc)
    except ValueError as exc:  # a malformed tag
        return f"CROP_YIELD_MODEL_TAG={tag!r} is not a valid tag: {exc}"
    for stored in entries:
        try:
            read_metadata(stored.info.metadata, str(stored.tag))
            check_weights_file(Path(stored.path), str(stored.tag))
        except (MetadataError, WeightsFileError) as exc:
            return str(exc)
    try:
        check_device(settings.device)
    except DeviceUnavailableError as exc:
        return str(exc)
    return port_problem(settings.host, settings.grpc_port) if settings.grpc_port else None


def port_problem(host: str, port: int) -> str | None:
    """Why the gRPC port cannot be had, or None. Workers bind it with SO_REUSEPORT when
    there are several, and the kernel would let a second instance of the service share it
    silently; a plain bind here fails instead, as the HTTP port's does."""
    bare = host.strip("[]")
    try:
        with socket.socket(socket.AF_INET6 if ":" in bare else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT, not a listener
            probe.bind((bare, port))
    except OSError as exc:
        return (
            f"cannot listen for gRPC on {host} port {port} (CROP_YIELD_GRPC_PORT): "
            f"{exc.strerror or exc}; is another instance running? Set another port, or 0 for no gRPC"
        )
    return None


def exit_on_problem(settings: Settings) -> None:
    message = problem(settings)
    if message is not None:
        print(f"error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_STATUS)
