"""The served set under explicit model control: one small JSON file every worker follows.

``{"versions": ["v2", "v1"], "default": "v1"}`` (and ``unavailable``: version → why its load
failed, for the repository index). A management call reaches one worker of several; it
writes the file (under an exclusive ``flock`` of ``<file>.lock``, then an atomic rename), and
every worker looks at the file's ``stat`` each ``CROP_YIELD_CONTROL_INTERVAL`` and applies a
new content. Each worker then records the digest it applied in its own acknowledgement file
(``applied-<pid>``, in the directory BentoML gives the workers of one ``bentoml serve`` for
their metrics), so the call can answer once every running worker serves the new set.

The file outlives a restart: a worker starting under explicit control serves what it says.
Mounted from a ConfigMap it is read-only: the API then refuses, and editing the ConfigMap
(``kubectl edit``) is the declarative way to change the set.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from contract import store_home
from service.inference.versions import MAX_VERSION_LENGTH, VERSION, PolicyError
from service.observability.metrics import multiprocess_dir, running

FILE_NAME = "crop-yield-served.json"
ACK_PREFIX = "crop-yield-applied-"


@dataclass(frozen=True)
class ServedSet:
    versions: tuple[str, ...]
    default: str
    unavailable: dict[str, str] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        document = {"versions": list(self.versions), "default": self.default, "unavailable": self.unavailable}
        return (json.dumps(document, indent=2) + "\n").encode()

    @classmethod
    def parse(cls, content: bytes, where: str) -> ServedSet:
        """``PolicyError`` naming the file and what is wrong in it."""
        try:
            document = json.loads(content)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PolicyError(f"{where} is not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise PolicyError(f"{where} must hold an object with versions and default")
        versions, default = document.get("versions"), document.get("default")
        if not isinstance(versions, list) or not versions or not all(isinstance(v, str) for v in versions):
            raise PolicyError(f"{where}: versions must be a non-empty list of version strings")
        for version in versions:
            if len(version) > MAX_VERSION_LENGTH or not VERSION.fullmatch(version):
                raise PolicyError(f"{where}: {version!r} is not a model version")
        if len(set(versions)) != len(versions):
            raise PolicyError(f"{where}: versions names a version twice")
        if default is None:
            default = versions[0]
        if default not in versions:
            raise PolicyError(f"{where}: the default {default!r} is not among versions {versions}")
        unavailable = document.get("unavailable") or {}
        if not isinstance(unavailable, dict):
            raise PolicyError(f"{where}: unavailable must map versions to reasons")
        return cls(tuple(versions), default, {str(k): str(v) for k, v in unavailable.items()})


def path_of(setting: str | None) -> Path:
    return Path(setting).expanduser() if setting else store_home() / FILE_NAME


def digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:16]


def signature(path: Path) -> tuple[int, int, int] | None:
    """What changes when the file is replaced or edited (a ConfigMap swaps a symlink): None if absent."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return status.st_ino, status.st_size, status.st_mtime_ns


def read(path: Path) -> tuple[ServedSet, str] | None:
    """The set in ``path`` and its content's digest; None when there is no file."""
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        return None
    return ServedSet.parse(content, str(path)), digest(content)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive hold for a read-modify-write of ``path`` (blocking: call it off the event loop)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write(path: Path, served: ServedSet) -> str:
    """Replace ``path`` atomically (hold ``locked``); returns the new content's digest.
    ``PermissionError``/``OSError`` when the file cannot be written (a read-only mount)."""
    content = served.to_bytes()
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return digest(content)


def acknowledge(applied: str) -> None:
    """Record the digest this worker serves (no-op outside ``bentoml serve``)."""
    directory = multiprocess_dir()
    if directory is not None:
        ack = Path(directory) / f"{ACK_PREFIX}{os.getpid()}"
        temporary = ack.with_name(f".{ack.name}.tmp")
        temporary.write_text(applied)
        os.replace(temporary, ack)


def acknowledgements() -> dict[int, str]:
    """Running workers → the digest each serves (this process's own included)."""
    directory = multiprocess_dir()
    if directory is None:
        return {}
    found: dict[int, str] = {}
    for ack in Path(directory).glob(f"{ACK_PREFIX}*"):
        pid = ack.name.removeprefix(ACK_PREFIX)
        if pid.isdigit() and running(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                found[int(pid)] = ack.read_text().strip()
    return found
