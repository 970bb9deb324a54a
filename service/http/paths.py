"""Which routes are which: the one definition the guards, the error table and the OpenAPI patch share."""

from __future__ import annotations

JSON_API_PATHS = frozenset({"/predict", "/predict_columns"})
"""BentoML API routes: JSON bodies only (see ``service.http.guards.JsonOnly``)."""

PROTECTED_PATHS = JSON_API_PATHS | {"/metadata"}
PROTECTED_PREFIXES = ("/v2/models/",)
"""With a token configured these need it; probes (/livez, /readyz, /v2/health/*, a model's
/ready), /metrics, the server metadata (/v2) and the API document stay open, as the gRPC
probe RPCs do (``service.grpc.layers.OPEN``): load balancers and probes carry no token."""


def is_protected(path: str) -> bool:
    return path in PROTECTED_PATHS or (path.startswith(PROTECTED_PREFIXES) and not path.endswith("/ready"))


def is_v2(path: str) -> bool:
    """Open Inference Protocol routes answer errors as ``{"error": message}``."""
    return path == "/v2" or path.startswith("/v2/")


PROBE_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics", "/v2/health/live", "/v2/health/ready"})
"""Probes and the scraper: never refused for load (they take no concurrency slot)."""


def is_probe(path: str) -> bool:
    return path in PROBE_PATHS
