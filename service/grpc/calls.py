"""What every inference RPC passes through, composed once per method when the server is
built (not per call, as grpcio's interceptors are: two of them cost 18% of single-row
throughput). Outermost first: observation (``observe``: request id, deadline, metrics, so
refused calls are counted too), the bearer token (``server``), admission (``admission``),
then the servicer's method."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

Behaviour = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
