"""Which of the model store's versions a worker serves, and which of them is the default
(pure: no BentoML, no torch).

The policy is Triton's ``version_policy`` in one setting (``CROP_YIELD_VERSION_POLICY``):

- ``latest:N`` (``latest`` = ``latest:1``, the default): the N newest entries, by creation
  time, as BentoML's own ``latest`` is chosen;
- ``all``: every entry;
- ``specific:V1,V2``: exactly these versions.

The default version answers calls that name none: ``CROP_YIELD_DEFAULT_VERSION`` when set,
else the newest served. Both are resolved when the set is chosen, never per request.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

VERSION = re.compile(r"[a-z0-9]([-._a-z0-9]*[a-z0-9])?")
"""A BentoML tag version (lower case, at most 63 characters)."""
MAX_VERSION_LENGTH = 63


class PolicyError(ValueError):
    """A policy that cannot be parsed, or that selects nothing it can serve."""


@dataclass(frozen=True)
class Entry:
    """What the policy needs of a store entry."""

    version: str
    created_at: str
    """ISO 8601; entries compare by it (then by version) to find the newest."""


@dataclass(frozen=True)
class VersionPolicy:
    kind: Literal["latest", "all", "specific"]
    count: int = 1
    versions: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """``latest``, ``latest:N``, ``all`` or ``specific:V1,V2``; ``PolicyError`` saying why not."""
        kind, _, argument = text.strip().partition(":")
        kind = kind.strip().lower()
        if kind == "latest":
            if not argument.strip():
                return cls("latest")
            if not argument.strip().isdigit() or int(argument) < 1:
                raise PolicyError(f"latest:N takes a whole number N of at least 1, not {argument.strip()!r}")
            return cls("latest", count=int(argument))
        if kind == "all" and not argument.strip():
            return cls("all")
        if kind == "specific":
            versions = tuple(v.strip().lower() for v in argument.split(",") if v.strip())
            if not versions:
                raise PolicyError("specific: names no version; write specific:V1,V2")
            for version in versions:
                if len(version) > MAX_VERSION_LENGTH or not VERSION.fullmatch(version):
                    raise PolicyError(f"{version!r} is not a model version (BentoML tag versions)")
            if len(set(versions)) != len(versions):
                raise PolicyError(f"specific: names a version twice: {','.join(versions)}")
            return cls("specific", versions=versions)
        raise PolicyError(
            f"{text.strip()!r} is not a version policy: latest, latest:N, all or specific:V1,V2"
        )

    def select(self, entries: Sequence[Entry]) -> list[str]:
        """The versions to serve, newest first; ``PolicyError`` when a ``specific`` version is
        not among ``entries`` or nothing is selected."""
        newest_first = [
            e.version for e in sorted(entries, key=lambda e: (e.created_at, e.version), reverse=True)
        ]
        if self.kind == "latest":
            chosen = newest_first[: self.count]
        elif self.kind == "all":
            chosen = newest_first
        else:
            missing = [v for v in self.versions if v not in newest_first]
            if missing:
                raise PolicyError(
                    f"version(s) {', '.join(missing)} not in the model store "
                    f"(it holds {', '.join(newest_first) or 'none'})"
                )
            chosen = [v for v in newest_first if v in self.versions]
        if not chosen:
            raise PolicyError("the model store holds no version of the model")
        return chosen

    def __str__(self) -> str:
        if self.kind == "specific":
            return f"specific:{','.join(self.versions)}"
        return f"latest:{self.count}" if self.kind == "latest" else "all"


def default_of(served: Sequence[str], pinned: str | None) -> str:
    """The default among ``served`` (newest first): ``pinned`` when given, else the newest."""
    if pinned is None:
        return served[0]
    if pinned not in served:
        raise PolicyError(
            f"CROP_YIELD_DEFAULT_VERSION={pinned!r} is not served; the policy serves {', '.join(served)}"
        )
    return pinned
