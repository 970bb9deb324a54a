"""BentoML's own client still calls the service: the hot routes answer ahead of BentoML's
router (service.http.hot_paths), and the ``@bentoml.api`` declarations that describe them
are what ``bentoml.SyncHTTPClient`` reads."""

from __future__ import annotations

import bentoml
import numpy as np
import pytest

from tests.integration.conftest import Server
from tests.integration.service.test_api import stored_weights

pytestmark = pytest.mark.integration


def test_the_bentoml_client_calls_predict_and_predict_columns(server: Server) -> None:
    weight, bias = stored_weights(server)
    rows = np.array([[73.0, 67.0, 43.0], [91.0, 88.0, 64.0]])
    expected = rows @ weight.T + bias
    with bentoml.SyncHTTPClient(server.url) as client:
        assert {"predict", "predict_columns"} <= set(client.endpoints)
        inputs = [dict(zip(("temperature", "rainfall", "humidity"), r, strict=True)) for r in rows.tolist()]
        answer = client.predict(inputs=inputs, interval=0.9)
        got = np.array([[p["apples"], p["oranges"]] for p in answer["predictions"]])
        np.testing.assert_allclose(got, expected, atol=1e-4)
        assert all(p["apples_lower"] < p["apples"] < p["apples_upper"] for p in answer["predictions"])
        columns = client.predict_columns(
            temperature=rows[:, 0].tolist(), rainfall=rows[:, 1].tolist(), humidity=rows[:, 2].tolist()
        )
        np.testing.assert_allclose(
            np.column_stack([columns["apples"], columns["oranges"]]), expected, atol=1e-4
        )
        assert columns["model"] == server.tag
        # BentoML 1.4.39's client never removes the temporary folder it makes (its close()
        # leaves it to the garbage collector, which warns): remove it here.
        client._temp_dir.cleanup()
