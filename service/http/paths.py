"""Which routes are which: the one definition the guards, the error table and the OpenAPI patch share."""

from __future__ import annotations

import re

FEEDBACK_PATH = "/feedback"
"""Ground truth for earlier predictions (``service.rest.feedback``)."""
JSON_API_PATHS = frozenset({"/predict", "/predict_columns", FEEDBACK_PATH})
"""BentoML API routes: JSON bodies only (see ``service.http.guards.JsonOnly``)."""

PROBE_PATHS = frozenset(
    {"/livez", "/readyz", "/healthz", "/metrics", "/v2", "/v2/health/live", "/v2/health/ready"}
)
MODEL_READY = re.compile(r"/v2/models/[^/]+(?:/versions/[^/]+)?/ready")
"""A model's (or a version's) readiness; it matches the OpenAPI path templates too."""


def is_probe(path: str) -> bool:
    """Probes, the server metadata and the scraper: no token, never refused for load (no
    concurrency slot), like the gRPC probe RPCs (``service.grpc.layers.OPEN``, held alike by
    a test): load balancers and probes carry no token and must be answered at full load."""
    return path in PROBE_PATHS or (path.endswith("/ready") and MODEL_READY.fullmatch(path) is not None)


PROTECTED_PATHS = JSON_API_PATHS | {"/metadata"}
PROTECTED_PREFIXES = ("/v2/models/", "/v2/repository/models/")


def is_protected(path: str) -> bool:
    """With a token configured these need it: the predictions, /metadata, the model routes
    under /v2/models/ other than readiness, and the repository's load, unload and default.
    The probes, /metrics, the repository index and the API document stay open."""
    return (path in PROTECTED_PATHS or path.startswith(PROTECTED_PREFIXES)) and not is_probe(path)


def is_v2(path: str) -> bool:
    """Open Inference Protocol routes answer errors as ``{"error": message}``."""
    return path == "/v2" or path.startswith("/v2/")


JSON_API_PREDICTIONS = frozenset({"/predict", "/predict_columns"})
V2_INFER = re.compile(r"/v2/models/[^/]+(?:/versions/[^/]+)?/infer")
"""The V2 infer routes (``service.v2.operations``; a unit test holds the two alike)."""


def is_prediction(path: str) -> bool:
    """The prediction routes: payload logging logs them, Triton's statistics count them."""
    return path in JSON_API_PREDICTIONS or (
        path.startswith("/v2/models/") and path.endswith("/infer") and V2_INFER.fullmatch(path) is not None
    )
