"""Classification extension: `class_count` on a requested output.

identity_cls echoes INPUT0 (FP32, batching) as OUTPUT0, whose classes are
labelled by labels.txt (conftest.CLASSIFICATION_LABELS). The server answers
with a BYTES tensor of "<value>:<index>[:<label>]" strings, the value
printed as C's "%f", shaped [batch, N].
"""

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import CLASSIFICATION_LABELS, CLASSIFICATION_MODEL, per_type_model

SCORES = np.array(
    [[0.1, 0.7, 0.05, 0.7, 0.15], [3.5, -1.0, 0.0, 2.25, 1e-7]], dtype=np.float32
)


def expected(scores, n, labels=CLASSIFICATION_LABELS):
    """Top n per row, ties in index order, as Triton formats them."""
    rows = []
    for row in np.atleast_2d(scores):
        order = sorted(range(len(row)), key=lambda i: (-float(row[i]), i))[:n]
        rows.append(
            [
                f"{float(row[i]):f}:{i}" + (f":{labels[i]}" if i < len(labels) else "")
                for i in order
            ]
        )
    return np.array(rows, dtype=np.object_)


def _strings(result, name):
    out = result.as_numpy(name)
    return np.vectorize(lambda b: b.decode() if isinstance(b, bytes) else b, otypes=[object])(out)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_classification_http(server, binary):
    inp = httpclient.InferInput("INPUT0", list(SCORES.shape), "FP32")
    inp.set_data_from_numpy(SCORES, binary_data=binary)
    # tritonclient sends binary_data together with classification by default.
    out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary, class_count=3)
    r = server.http().infer(CLASSIFICATION_MODEL, [inp], outputs=[out])
    meta = r.get_output("OUTPUT0")
    assert meta["datatype"] == "BYTES"
    assert meta["shape"] == [2, 3]
    got = _strings(r, "OUTPUT0")
    np.testing.assert_array_equal(got, expected(SCORES, 3))
    assert got[0, 0] == "0.700000:1:one" and got[0, 1] == "0.700000:3:three"


def test_classification_grpc(server):
    inp = grpcclient.InferInput("INPUT0", list(SCORES.shape), "FP32")
    inp.set_data_from_numpy(SCORES)
    out = grpcclient.InferRequestedOutput("OUTPUT0", class_count=2)
    r = server.grpc().infer(CLASSIFICATION_MODEL, [inp], outputs=[out])
    meta = r.get_output("OUTPUT0")
    assert meta.datatype == "BYTES"
    assert list(meta.shape) == [2, 2]
    np.testing.assert_array_equal(_strings(r, "OUTPUT0"), expected(SCORES, 2))


def test_classification_count_beyond_classes(server):
    # More classes asked for than the output has: all of them, shape [batch, 5].
    inp = httpclient.InferInput("INPUT0", list(SCORES.shape), "FP32")
    inp.set_data_from_numpy(SCORES)
    out = httpclient.InferRequestedOutput("OUTPUT0", class_count=50)
    r = server.http().infer(CLASSIFICATION_MODEL, [inp], outputs=[out])
    assert r.get_output("OUTPUT0")["shape"] == [2, 5]
    np.testing.assert_array_equal(_strings(r, "OUTPUT0"), expected(SCORES, 5))


def test_classification_integers_without_labels(server):
    # A non-batching INT32 model without a label file: shape [N], no labels.
    data = np.array([5, -7, 12, 5], dtype=np.int32)
    inp = grpcclient.InferInput("INPUT0", [4], "INT32")
    inp.set_data_from_numpy(data)
    out = grpcclient.InferRequestedOutput("OUTPUT0", class_count=3)
    r = server.grpc().infer(per_type_model("INT32"), [inp], outputs=[out])
    assert list(r.get_output("OUTPUT0").shape) == [3]
    assert list(_strings(r, "OUTPUT0")) == ["12:2", "5:0", "5:3"]


def test_classification_refusals(server):
    # A non-numeric output cannot be classified.
    words = np.array([b"a", b"b"], dtype=np.object_)
    inp = httpclient.InferInput("INPUT0", [2], "BYTES")
    inp.set_data_from_numpy(words)
    with pytest.raises(InferenceServerException) as e:
        server.http().infer(
            per_type_model("BYTES"),
            [inp],
            outputs=[httpclient.InferRequestedOutput("OUTPUT0", class_count=1)],
        )
    assert e.value.status() == "400"
    assert "class result not available for output due to unsupported type 'BYTES'" in str(e.value)

    # A count below zero (HTTP: not an unsigned integer; gRPC: < 1).
    body = {
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}],
        "outputs": [{"name": "OUTPUT0", "parameters": {"classification": -1}}],
    }
    r = server.request("POST", f"/v2/models/{CLASSIFICATION_MODEL}/infer", body)
    assert r.status == 400, r.body
    assert "classification" in r.json()["error"]
    g = grpcclient.InferInput("INPUT0", [1, 1], "FP32")
    g.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
    with pytest.raises(InferenceServerException) as e:
        server.grpc().infer(
            CLASSIFICATION_MODEL, [g], outputs=[grpcclient.InferRequestedOutput("OUTPUT0", class_count=-2)]
        )
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"

    # Classification and shared memory on one output (tritonclient refuses to
    # build it, so send it raw).
    body["outputs"] = [
        {
            "name": "OUTPUT0",
            "parameters": {"classification": 1, "shared_memory_region": "r", "shared_memory_byte_size": 4},
        }
    ]
    r = server.request("POST", f"/v2/models/{CLASSIFICATION_MODEL}/infer", body)
    assert r.status == 400, r.body
    assert r.json()["error"] == "Output can't set both 'shared_memory_region' and 'classification'"

    # The server still serves.
    ok = httpclient.InferInput("INPUT0", [1, 2], "FP32")
    ok.set_data_from_numpy(np.array([[0.25, 0.5]], dtype=np.float32))
    r = server.http().infer(
        CLASSIFICATION_MODEL, [ok], outputs=[httpclient.InferRequestedOutput("OUTPUT0", class_count=1)]
    )
    assert list(_strings(r, "OUTPUT0")[0]) == ["0.500000:1:one"]
