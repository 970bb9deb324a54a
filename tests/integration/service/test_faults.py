"""Faults under load: SIGTERM drains in-flight requests; a killed worker is replaced."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.integration.conftest import start_service, stop_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]
GRACE_S = 10
ROW = {"inputs": [{"temperature": 70, "rainfall": 60, "humidity": 40}]}


class SteadyLoad:
    """Threads sending single-row requests, each on a fresh connection, counting outcomes."""

    def __init__(self, url: str, threads: int = 6) -> None:
        self.url = url
        self.outcomes: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                response = httpx.post(
                    f"{self.url}/predict", json=ROW, headers={"connection": "close"}, timeout=30
                )
                outcome = f"HTTP {response.status_code}"
            except httpx.ConnectError:
                outcome = "connection refused"
            except httpx.TransportError as exc:  # accepted by the kernel, never by the server
                outcome = f"connection dropped ({type(exc).__name__})"
            with self._lock:
                self.outcomes[outcome] += 1

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def workers(arbiter_pid: int) -> set[int]:
    """Live worker processes of the server (a killed one lingers as a zombie for a moment)."""
    found = set()
    for child in psutil.Process(arbiter_pid).children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "_bentoml_impl.worker" in " ".join(child.cmdline()):
                found.add(child.pid)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def service(trained_home: tuple[Path, str], tmp_path: Path) -> Iterator[tuple[int, str]]:
    home, _ = trained_home
    process, url = start_service(home, tmp_path / "log", graceful_shutdown_timeout=str(GRACE_S))
    yield process.pid, url
    stop_service(process)


def wait_for_answers(load: SteadyLoad, more_than: int, timeout: float = 10) -> None:
    """Until the load has seen more than ``more_than`` answers 200 (an event, not a sleep)."""
    deadline = time.monotonic() + timeout
    while load.outcomes["HTTP 200"] <= more_than:
        assert time.monotonic() < deadline, f"no more answers within {timeout} s: {load.outcomes}"
        time.sleep(0.05)


def test_sigterm_during_load_drains_in_flight_requests(service: tuple[int, str]) -> None:
    pid, url = service
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"inputs": [ROW["inputs"][0]] * 2000}).encode()
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with SteadyLoad(url) as load:
        wait_for_answers(load, 20)  # the load is flowing
        # A request provably in flight: headers and half its body are in, the rest comes
        # after SIGTERM. It must still be answered 200.
        in_flight = socket.create_connection((host, int(port)))
        in_flight.sendall(head + body[: len(body) // 2])
        time.sleep(0.3)
        signalled = time.monotonic()
        os.kill(pid, signal.SIGTERM)  # PID 1 in a container gets exactly this
        time.sleep(1.0)
        in_flight.sendall(body[len(body) // 2 :])
        reply = b""
        while chunk := in_flight.recv(65536):
            reply += chunk
        in_flight.close()
        psutil.Process(pid).wait(GRACE_S + 10)
        exited_after = time.monotonic() - signalled
        time.sleep(0.5)
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK", reply[:300]
    assert len(json.loads(rest.partition(b"\r\n\r\n")[2])["predictions"]) == 2000
    # Every answer the server gave was a 200; the rest were refused connections.
    answered = {k: v for k, v in load.outcomes.items() if k.startswith("HTTP")}
    assert set(answered) == {"HTTP 200"}, load.outcomes
    assert load.outcomes["connection refused"] > 0, load.outcomes
    assert exited_after < GRACE_S, exited_after
    print(f"SIGTERM under load: {dict(load.outcomes)}; exited {exited_after:.1f} s after the signal")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/livez", timeout=2)


def test_a_killed_worker_is_replaced(service: tuple[int, str]) -> None:
    pid, url = service
    (worker,) = workers(pid)
    with SteadyLoad(url) as load:
        wait_for_answers(load, 20)
        os.kill(worker, signal.SIGKILL)
        killed = time.monotonic()
        replaced_after = None
        while time.monotonic() - killed < 30:
            current = workers(pid)
            if current and worker not in current:
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        replaced_after = time.monotonic() - killed
                        break
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        assert replaced_after is not None, "no new worker became ready within 30 s"
        wait_for_answers(load, load.outcomes["HTTP 200"])  # serving again under load
    assert httpx.get(f"{url}/livez").status_code == 200
    assert not {k for k in load.outcomes if k.startswith("HTTP") and k != "HTTP 200"}, load.outcomes
    print(f"worker killed under load: replaced and ready after {replaced_after:.1f} s; {dict(load.outcomes)}")
