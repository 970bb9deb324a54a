"""Canary weights: which served version answers a call that names none (pure: no torch).

``CROP_YIELD_VERSION_WEIGHTS`` (``v1=90,v2=10``) shares such calls between versions in
proportion to their weights. A call's share is chosen by a hash of its routing key (the
request id, or the header ``CROP_YIELD_VERSION_STICKY_HEADER`` names), so the calls of one
key always reach the same version while the set is unchanged; a call without a key gets a
random share. Weights naming versions that are not served are left out and the rest are
scaled up; with none left, the default version answers.
"""

from __future__ import annotations

import random
import zlib
from bisect import bisect_right
from collections.abc import Iterable, Mapping

from service.inference.versions import MAX_VERSION_LENGTH, VERSION, PolicyError

SCALE = 1 << 32
"""Shares are compared as 32-bit integers: crc32 of the key against cumulative thresholds."""


def parse_weights(text: str) -> dict[str, float]:
    """``v1=90,v2=10`` → ``{"v1": 90.0, "v2": 10.0}``; ``PolicyError`` naming the bad part."""
    weights: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        version, sep, number = (s.strip() for s in part.partition("="))
        version = version.lower()
        if not sep or len(version) > MAX_VERSION_LENGTH or not VERSION.fullmatch(version):
            raise PolicyError(
                f"{part!r} is not VERSION=WEIGHT (CROP_YIELD_VERSION_WEIGHTS, e.g. v1=90,v2=10)"
            )
        try:
            weight = float(number)
        except ValueError:
            raise PolicyError(f"the weight of {version!r} is not a number: {number!r}") from None
        if not 0 <= weight < float("inf"):
            raise PolicyError(f"the weight of {version!r} must be 0 or more, not {number!r}")
        if version in weights:
            raise PolicyError(f"CROP_YIELD_VERSION_WEIGHTS names {version!r} twice")
        weights[version] = weight
    if not weights or not any(weights.values()):
        raise PolicyError("CROP_YIELD_VERSION_WEIGHTS gives no version a weight above 0")
    return weights


class Split:
    """The weights over one served set: ``pick(key)`` → a version, or None for the default."""

    def __init__(self, weights: Mapping[str, float], served: Iterable[str]) -> None:
        live = [(v, w) for v, w in weights.items() if v in set(served) and w > 0]
        total = sum(w for _, w in live)
        self.versions = [v for v, _ in live]
        self.thresholds: list[int] = []
        running = 0.0
        for _, weight in live[:-1]:
            running += weight
            self.thresholds.append(int(running / total * SCALE))

    def __bool__(self) -> bool:
        return bool(self.versions)

    def pick(self, key: str | None) -> str:
        point = zlib.crc32(key.encode()) if key is not None else random.getrandbits(32)
        return self.versions[bisect_right(self.thresholds, point)]

    def shares(self) -> dict[str, float]:
        """Each version's share of the calls (for /metadata and the tests)."""
        edges = [0, *self.thresholds, SCALE]
        return {v: (edges[i + 1] - edges[i]) / SCALE for i, v in enumerate(self.versions)}
