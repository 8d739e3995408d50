"""gRPC ModelStreamInfer through tritonclient's start_stream /
async_stream_infer."""

import queue

import numpy as np

from e2e_util import SAMPLES, assert_tensor_equal, grpc_inputs

TIMEOUT_S = 30


class Stream:
    """A started stream whose callbacks land in a queue."""

    def __init__(self, server):
        self.client = server.grpc()
        self.results = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.results.put((result, error)))

    def send(self, model, arrays, datatypes, request_id):
        self.client.async_stream_infer(model, grpc_inputs(arrays, datatypes), request_id=request_id)

    def receive(self):
        return self.results.get(timeout=TIMEOUT_S)

    def close(self):
        self.client.stop_stream()
        self.client.close()


def test_stream_answers_every_request(server):
    stream = Stream(server)
    sent = {}
    try:
        for i in range(12):
            data = np.full((1, i + 1), i / 3, dtype=np.float32)
            sent[f"fp32-{i}"] = data
            stream.send("identity_fp32", [data], ["FP32"], f"fp32-{i}")
        words = np.array([[b"stream", b"", b"\xff\x00"]], dtype=np.object_)
        sent["bytes"] = words
        stream.send("identity_bytes", [words], ["BYTES"], "bytes")

        got = {}
        for _ in range(len(sent)):
            result, error = stream.receive()
            assert error is None, error
            resp = result.get_response()
            assert resp.id not in got, f"duplicate response for {resp.id}"
            got[resp.id] = result.as_numpy("OUTPUT0")
    finally:
        stream.close()
    assert sorted(got) == sorted(sent)
    for rid, data in sent.items():
        assert_tensor_equal(got[rid], data)


def test_stream_in_band_error_keeps_stream_open(server):
    stream = Stream(server)
    try:
        good = np.array([[1.0, 2.0]], dtype=np.float32)
        stream.send("identity_fp32", [good], ["FP32"], "ok-1")
        result, error = stream.receive()
        assert error is None, error
        assert result.get_response().id == "ok-1"

        # Unknown model, then a datatype the model does not take: both are
        # answered in-band (error_message) and the stream stays usable.
        stream.send("no_such_model", [good], ["FP32"], "bad-model")
        ints = np.array([[1, 2]], dtype=np.int32)
        stream.send("identity_fp32", [ints], ["INT32"], "bad-type")
        for _ in range(2):
            result, error = stream.receive()
            assert result is None
            assert error is not None
            # A stream-level gRPC failure would carry a status code.
            assert error.status() is None, f"stream failed instead of an in-band error: {error}"
            assert error.message()

        stream.send("identity_fp32", [good], ["FP32"], "ok-2")
        result, error = stream.receive()
        assert error is None, error
        assert result.get_response().id == "ok-2"
        assert_tensor_equal(result.as_numpy("OUTPUT0"), good)
    finally:
        stream.close()


def test_stream_multi_input_model(server):
    types = ["BOOL", "FP16", "BF16", "INT64"]
    arrays = [SAMPLES[t] for t in types]
    stream = Stream(server)
    try:
        for i in range(3):
            stream.send("identity_multi", arrays, types, f"multi-{i}")
        ids = set()
        for _ in range(3):
            result, error = stream.receive()
            assert error is None, error
            ids.add(result.get_response().id)
            for i, arr in enumerate(arrays):
                assert_tensor_equal(result.as_numpy(f"OUTPUT{i}"), arr)
    finally:
        stream.close()
    assert ids == {"multi-0", "multi-1", "multi-2"}


def test_stream_then_unary_on_same_client(server):
    """Closing a stream leaves the client and server usable."""
    stream = Stream(server)
    data = np.array([[3.0]], dtype=np.float32)
    try:
        stream.send("identity_fp32", [data], ["FP32"], "s")
        result, error = stream.receive()
        assert error is None, error
    finally:
        stream.close()
    client = server.grpc()
    r = client.infer("identity_fp32", grpc_inputs([data], ["FP32"]))
    assert_tensor_equal(r.as_numpy("OUTPUT0"), data)
