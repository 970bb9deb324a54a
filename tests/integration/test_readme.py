"""The examples of the README and of the pages on calling the service, executed against a
real served process (the tutorial's are run by tests/integration/test_tutorial.py)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from tests.helpers import REPO_ROOT
from tests.integration.conftest import Server

pytestmark = pytest.mark.integration

PAGES = ("README.md", "docs/json-api.md", "docs/open-inference.md", "docs/grpc.md")
TEXT = "\n".join((REPO_ROOT / page).read_text() for page in PAGES)
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", TEXT, flags=re.DOTALL)
CURL = [code for lang, code in BLOCKS if lang == "bash" and code.lstrip().startswith("curl")]
PYTHON_CLIENTS = [code for lang, code in BLOCKS if lang == "python" and "localhost:3000" in code]
GRPCURL = [code for lang, code in BLOCKS if lang == "bash" and code.lstrip().startswith("grpcurl ")]
GRPC_CLIENTS = [code for lang, code in BLOCKS if lang == "python" and "localhost:8001" in code]


def test_readme_has_the_examples() -> None:
    assert len(CURL) >= 3
    assert len(PYTHON_CLIENTS) >= 3  # httpx, the generated client and tritonclient
    assert len(GRPCURL) >= 2  # health checking and an inference call
    assert len(GRPC_CLIENTS) >= 1  # tritonclient.grpc


@pytest.mark.parametrize("snippet", CURL, ids=[f"curl-{i}" for i in range(len(CURL))])
def test_curl_examples(server: Server, snippet: str) -> None:
    command = snippet.replace("http://localhost:3000", server.url)
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    if "model_stats" in body:  # Triton's statistics
        (stats,) = body["model_stats"]
        assert f"{stats['name']}:{stats['version']}" == server.tag
        assert set(stats["inference_stats"]) >= {"success", "fail", "queue", "compute_infer"}
    elif "model_name" in body:  # Open Inference Protocol
        assert f"{body['model_name']}:{body['model_version']}" == server.tag
        assert [o["name"] for o in body["outputs"]] == ["apples", "oranges"]
    else:
        assert body["model"] == server.tag
        assert "predictions" in body or "apples" in body


@pytest.mark.parametrize("snippet", PYTHON_CLIENTS, ids=[f"python-{i}" for i in range(len(PYTHON_CLIENTS))])
def test_python_client_examples(server: Server, snippet: str, generated_client_path: Path) -> None:
    host = server.url.removeprefix("http://")
    code = snippet.replace("http://localhost:3000", server.url).replace("localhost:3000", host)
    # the generated client's example imports the package the page's commands generate
    env = {**os.environ, "PYTHONPATH": str(generated_client_path)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False, env=env
    )
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"apples 53\.8\d t/ha, oranges 66\.8\d t/ha\n", result.stdout), result.stdout


def grpcurl_by_reflection(argv: list[str]) -> dict[str, Any]:
    """What ``grpcurl -plaintext [-d JSON] [-H 'name: value'] ADDRESS SERVICE/METHOD``
    does: the method's messages from the server's reflection service, the request parsed
    from the JSON (proto or JSON field names), the answer as JSON. Used where grpcurl
    itself is not installed."""
    assert argv[:2] == ["grpcurl", "-plaintext"], argv
    *flags, address, full_method = argv[2:]
    body, metadata = "{}", []
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        if flag == "-d":
            body = value
        else:
            assert flag == "-H", flag
            name, _, text = value.partition(":")
            metadata.append((name.strip().lower(), text.strip()))
    service_name, method_name = full_method.rsplit("/", 1)
    with grpc.insecure_channel(address) as channel:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        method = pool.FindServiceByName(service_name).FindMethodByName(method_name)
        request_type = message_factory.GetMessageClass(method.input_type)
        response_type = message_factory.GetMessageClass(method.output_type)
        call = channel.unary_unary(
            f"/{service_name}/{method_name}",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        request = json_format.Parse(body, request_type())
        answer = call(request, metadata=metadata, timeout=30)
    return json_format.MessageToDict(answer)  # type: ignore[no-any-return]


@pytest.mark.parametrize("snippet", GRPCURL, ids=[f"grpcurl-{i}" for i in range(len(GRPCURL))])
def test_grpcurl_examples(server: Server, snippet: str) -> None:
    address = f"127.0.0.1:{server.grpc_port}"
    command = snippet.replace("localhost:8001", address)
    answer = grpcurl_by_reflection(shlex.split(command.replace("\\\n", " ")))
    if shutil.which("grpcurl"):
        result = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=30, check=False
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == answer
    if "Health/Check" in snippet:
        assert answer == {"status": "SERVING"}
    else:
        assert f"{answer['modelName']}:{answer['modelVersion']}" == server.tag
        outputs = {o["name"]: o["contents"]["fp32Contents"] for o in answer["outputs"]}
        assert list(outputs) == ["apples", "oranges"]
        assert re.fullmatch(r"53\.8\d", f"{outputs['apples'][0]:.2f}"), outputs


@pytest.mark.parametrize("snippet", GRPC_CLIENTS, ids=[f"grpc-python-{i}" for i in range(len(GRPC_CLIENTS))])
def test_grpc_client_examples(server: Server, snippet: str) -> None:
    code = snippet.replace("localhost:8001", f"127.0.0.1:{server.grpc_port}")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"apples 53\.8\d t/ha, oranges 66\.8\d t/ha\n", result.stdout), result.stdout
