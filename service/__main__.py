"""``python -m service``: check the model exists, then run ``bentoml serve`` with the settings.

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
    settings = get_settings()
    import bentoml
    from bentoml.exceptions import NotFound

    from service.model import bentoml_home

    try:
        bentoml.models.get(settings.model_tag)
    except ValueError as exc:  # a malformed tag
        print(
            f"error: CROP_YIELD_MODEL_TAG={settings.model_tag!r} is not a valid tag: {exc}", file=sys.stderr
        )
        return 2
    except NotFound:
        print(
            f"error: model {settings.model_tag} is not in the model store {bentoml_home()}; "
            "train one with `python -m training` or set CROP_YIELD_MODEL_TAG",
            file=sys.stderr,
        )
        return 2
    command = serve_command()
    os.execv(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
