"""docs/getting-started.md, executed: every command and code block of the tutorial, in order,
in a temporary directory with its own BENTOML_HOME, against the one ``python -m service`` the
page starts (on free ports instead of 3000 and 8001); what each command prints is compared
with the output the page shows under it.

The page's blocks are ``bash`` and ``python`` (run) and ``text`` and ``json`` (the output of
the command block before them). Numbers in outputs are compared to within 0.1% (or 0.01),
text exactly up to runs of spaces; dates, durations, sizes and the optimality gap, which
differ from run to run, are masked. ``make setup`` is checked with ``make --dry-run``: the
tests already run in the environment it makes, and it would reinstall the packages.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools import served
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.integration

PAGE_PATH = REPO_ROOT / "docs" / "getting-started.md"
PAGE = PAGE_PATH.read_text()
FENCE = re.compile(r"^```(\w*)\n(.*?)^```[ \t]*$", flags=re.DOTALL | re.MULTILINE)
COMMANDS = {"bash", "python"}
OUTPUTS = {"text", "json"}
SERVE = re.compile(r"^(?:\w+=\S+ )*\.venv/bin/python -m service$")
HTTP, GRPC = "localhost:3000", "localhost:8001"


@dataclass
class Block:
    lang: str
    code: str
    line: int  # of the opening fence, for messages
    shown: Block | None = None  # the output the page shows for a command

    @property
    def where(self) -> str:
        return f"{PAGE_PATH.name}:{self.line} ({self.code.strip().splitlines()[0][:60]!r})"


def page_blocks() -> list[Block]:
    """The page's commands, each with the output block that follows it, if any."""
    commands: list[Block] = []
    for match in FENCE.finditer(PAGE):
        block = Block(match[1], match[2], PAGE.count("\n", 0, match.start()) + 1)
        if block.lang in COMMANDS:
            commands.append(block)
        elif block.lang in OUTPUTS:
            assert commands, f"{block.where}: output of no command"
            assert commands[-1].shown is None, f"{block.where}: a second output of one command"
            commands[-1].shown = block
        else:
            raise AssertionError(f"{block.where}: a block neither run nor checked ({block.lang!r})")
    return commands


# -- comparing what ran with what the page shows ---------------------------------------------

VOLATILE = [
    (re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:\.\d+)?(?:[+-]\d\d:\d\d|Z)?"), "<time>"),
    (re.compile(r"\b\d+(?:\.\d+)? s\b"), "<seconds>"),
    (re.compile(r"\b\d+(?:\.\d+)? [KMG]?i?B\b"), "<size>"),
    # below --max-gap or nothing is saved (exit 3); its digits are the machine's rounding
    (re.compile(r"optimality gap \S+"), "optimality gap <gap>"),
]
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def close(shown: float, actual: float) -> bool:
    return math.isclose(shown, actual, rel_tol=1e-3, abs_tol=0.01)


def text_differences(shown: str, actual: str) -> list[str]:
    """Lines that differ: text exactly (runs of spaces as one), numbers within tolerance."""

    def lines(text: str) -> list[str]:
        for pattern, mask in VOLATILE:
            text = pattern.sub(mask, text)
        return [" ".join(line.split()) for line in text.strip().splitlines()]

    shown_lines, actual_lines = lines(shown), lines(actual)
    if len(shown_lines) != len(actual_lines):
        return [f"{len(shown_lines)} lines shown, {len(actual_lines)} printed"]
    differences = []
    for want, got in zip(shown_lines, actual_lines, strict=True):
        want_numbers, got_numbers = NUMBER.findall(want), NUMBER.findall(got)
        same = (
            NUMBER.split(want) == NUMBER.split(got)
            and len(want_numbers) == len(got_numbers)
            and all(close(float(a), float(b)) for a, b in zip(want_numbers, got_numbers, strict=True))
        )
        if not same:
            differences.append(f"shown:   {want}\nprinted: {got}")
    return differences


def json_documents(text: str) -> list[Any]:
    """The JSON documents of ``text``, one after another (one per command of a block)."""
    decoder, documents, at = json.JSONDecoder(), [], 0
    while (at := len(text) - len(text[at:].lstrip())) < len(text):
        document, at = decoder.raw_decode(text, at)
        documents.append(document)
    return documents


def json_differences(shown: Any, actual: Any, path: str = "$") -> list[str]:
    if isinstance(shown, dict) and isinstance(actual, dict):
        if shown.keys() != actual.keys():
            return [f"{path}: keys {sorted(shown)} shown, {sorted(actual)} printed"]
        return [d for k in shown for d in json_differences(shown[k], actual[k], f"{path}.{k}")]
    if isinstance(shown, list) and isinstance(actual, list):
        if len(shown) != len(actual):
            return [f"{path}: {len(shown)} items shown, {len(actual)} printed"]
        return [
            d
            for i, (a, b) in enumerate(zip(shown, actual, strict=True))
            for d in json_differences(a, b, f"{path}[{i}]")
        ]
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (shown, actual))
    if close(shown, actual) if numbers else shown == actual:
        return []
    return [f"{path}: {shown!r} shown, {actual!r} printed"]


def check_output(block: Block, printed: str) -> None:
    shown = block.shown
    if shown is None:
        return
    if shown.lang == "json":
        try:
            differences = json_differences(json_documents(shown.code), json_documents(printed))
        except json.JSONDecodeError as exc:
            differences = [f"not JSON: {exc}"]
    else:
        differences = text_differences(shown.code, printed)
    assert not differences, (
        f"{block.where}: output differs from the page's\n"
        + "\n".join(differences)
        + f"\nfull output:\n{printed}"
    )


# -- running the page -----------------------------------------------------------------------


@dataclass
class Tutorial:
    """Where the page's commands run: a directory standing for the repository root (its
    ``.venv`` this test's environment), a BentoML home of its own, the served ports."""

    where: Path
    env: dict[str, str]
    http_port: int = 0
    grpc_port: int = 0

    def localize(self, code: str) -> str:
        return code.replace(HTTP, f"127.0.0.1:{self.http_port}").replace(GRPC, f"127.0.0.1:{self.grpc_port}")

    def as_on_page(self, output: str) -> str:
        return output.replace(f"127.0.0.1:{self.http_port}", HTTP).replace(
            f"127.0.0.1:{self.grpc_port}", GRPC
        )

    def run(self, block: Block) -> str:
        if block.lang == "python":
            command = [sys.executable, "-c", self.localize(block.code)]
        else:
            code = re.sub(
                r"^make setup\b",
                f"make --dry-run -C {REPO_ROOT} VENV={sys.prefix} setup",
                block.code,
                flags=re.MULTILINE,
            )
            command = ["bash", "-e", "-o", "pipefail", "-c", self.localize(code)]
        result = subprocess.run(
            command,
            cwd=self.where,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # as a terminal shows them: a report on stderr, then the tag
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"{block.where}: exit {result.returncode}\n{result.stdout}"
        return self.as_on_page(result.stdout)

    @contextmanager
    def serving(self, block: Block) -> Iterator[subprocess.Popen[bytes]]:
        """The page's ``python -m service`` on free ports, until the end of the page."""
        log = self.where / "service.log"
        for attempt in range(3):
            self.http_port, self.grpc_port = served.free_port(), served.free_port()
            env = {
                **self.env,
                "CROP_YIELD_HOST": "127.0.0.1",
                "CROP_YIELD_PORT": str(self.http_port),
                "CROP_YIELD_GRPC_PORT": str(self.grpc_port),
            }
            process = served.launch(["bash", "-c", block.code.strip()], env, log, cwd=self.where)
            try:
                served.wait_ready(process, f"http://127.0.0.1:{self.http_port}", log)
                break
            except RuntimeError as exc:  # a port taken between its pick and its bind
                if attempt == 2 or served.PORT_TAKEN not in str(exc):
                    raise
        try:
            yield process
        finally:
            served.stop(process)


class Traffic:
    """Calls that name no version, back to back in a thread, while the page changes the served
    versions: each must be answered 200, by whichever version is the default."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._call, daemon=True)
        self._thread.start()

    def _call(self) -> None:
        body = {"inputs": [{"temperature": 75, "rainfall": 63, "humidity": 44}]}
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.post("/predict", json=body)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if response.status_code == 200:
                    self.answers.append(response.json()["model"])
                else:
                    self.failures.append(f"{response.status_code} {response.text}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


def test_page_has_each_step() -> None:
    code = "\n".join(block.code for block in page_blocks())
    for needed in [
        "make setup",
        ".venv/bin/python -m training --version v1",
        "bentoml models list",
        "-m service",
        "curl -s -X POST http://localhost:3000/predict",
        "import httpx",
        "tritonclient.http",
        "tritonclient.grpc",
        "/metrics",
        "--compare-with http://localhost:3000",
        "/v2/repository/models/crop_yield/load",
        "X-Model-Version: v2",
        "/v2/repository/models/crop_yield/default",
        "/v2/repository/models/crop_yield/unload",
    ]:
        assert needed in code, needed
    assert [block for block in page_blocks() if SERVE.match(block.code.strip())], "no serve command"


def test_page_links_stay_in_the_docs() -> None:
    links = re.findall(r"\]\(([^)]+)\)", PAGE)
    assert links
    for link in links:
        target = link.split("#")[0]
        assert "/" not in target, link  # a page of the site, beside this one
        assert (PAGE_PATH.parent / target).is_file(), link


def test_tutorial_runs_as_written(tmp_path: Path) -> None:
    venv = Path(sys.prefix)
    assert (venv / "bin" / "bentoml").exists(), f"{venv} is not the project's virtual environment"
    (tmp_path / ".venv").symlink_to(venv, target_is_directory=True)
    env = {
        **os.environ,
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "PYTHONPATH": str(REPO_ROOT),  # the checkout under test, whatever the venv installed
    }
    tutorial = Tutorial(tmp_path, env)
    traffic: Traffic | None = None
    with ExitStack() as stack:
        for block in page_blocks():
            if SERVE.match(block.code.strip()):
                assert block.shown is None, f"{block.where}: the service's log is not compared"
                stack.enter_context(tutorial.serving(block))
                continue
            if traffic is None and "/v2/repository/" in block.code:
                traffic = Traffic(f"http://127.0.0.1:{tutorial.http_port}")
                stack.callback(traffic.stop)  # before the service stops
            check_output(block, tutorial.run(block))
    assert traffic is not None, "the page changes no served version"
    assert not traffic.failures, traffic.failures[:5]
    # the calls spanned the roll-out and the roll-back: v2 answered some, v1 the last
    assert set(traffic.answers) == {"crop_yield:v1", "crop_yield:v2"}, set(traffic.answers)
    assert traffic.answers[-1] == "crop_yield:v1"
