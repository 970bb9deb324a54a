"""``python -m service``: check the model can be served (``service.inference.preflight``), then run
``bentoml serve`` with the settings.

The graceful-shutdown timeout, host and port are command-line options of ``bentoml
serve`` rather than service configuration in BentoML 1.4, so they are passed here.
"""

from __future__ import annotations

import os
import sys

from service.settings import get_settings

SERVICE_IMPORT = "service.service:CropYieldService"


def serve_command() -> list[str]:
    settings = get_settings()
    return [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        SERVICE_IMPORT,
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--timeout-graceful-shutdown",
        str(settings.graceful_shutdown_timeout),
    ]


def main() -> int:
    from service.inference.preflight import exit_on_problem

    exit_on_problem(get_settings())  # one clear line and status 2 when the model cannot be served
    command = serve_command()
    os.execv(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
