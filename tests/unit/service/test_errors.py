"""Every kind of data-plane refusal (service.inference.errors.Kind) has an answer on every
transport: an entry of the HTTP error table and a gRPC status code other than INTERNAL."""

from __future__ import annotations

import grpc
import pytest

from service.grpc.servicer import status_of
from service.http import errors
from service.inference.errors import DataPlaneError, Kind


@pytest.mark.parametrize("kind", list(Kind))
def test_every_kind_has_an_http_entry_and_a_grpc_code(kind: Kind) -> None:
    assert errors.by_kind(kind).error == kind
    assert status_of(kind) not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.OK)


def test_every_refusal_names_a_kind() -> None:
    def refusals(cls: type[DataPlaneError]) -> list[type[DataPlaneError]]:
        return [c for sub in cls.__subclasses__() for c in (sub, *refusals(sub))]

    assert refusals(DataPlaneError)
    for refusal in refusals(DataPlaneError):
        assert isinstance(refusal.kind, Kind), refusal
