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


def _raw_request(model, tensors, request_id, empty_final=False):
    """A ModelInferRequest with raw_input_contents: (name, datatype, array)."""
    from tritonclient.grpc import service_pb2

    req = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    for name, datatype, arr in tensors:
        req.inputs.add(name=name, datatype=datatype, shape=list(arr.shape))
        req.raw_input_contents.append(arr.tobytes())
    if empty_final:
        req.parameters["triton_enable_empty_final_response"].bool_param = True
    return req


def _until_final(server, req):
    """What a raw client reads of one request: messages until the one
    flagged triton_final_response (a hang here is a timeout failure)."""
    channel, stub = server.grpc_stub()
    got = []
    try:
        for resp in stub.ModelStreamInfer(iter([req]), timeout=TIMEOUT_S):
            got.append(resp)
            params = resp.infer_response.parameters
            if "triton_final_response" in params and params["triton_final_response"].bool_param:
                return got
            assert resp.error_message == "", f"an error without the final flag: {resp}"
    finally:
        channel.close()
    raise AssertionError(f"the stream ended without a final flag: {got}")


def test_stream_model_error_carries_final_flag(server):
    """A request its model fails ends with an error message that names the
    model and carries triton_final_response true, with or without the empty
    final response asked for, as Triton 2.51 sends it: a raw client waiting
    for the final flag stops there. A Python model and a Go backend."""
    in3 = np.array([4, 5, 6], np.int32)
    cases = [
        ("repeat_python", [("IN", "INT32", in3), ("DELAY", "UINT32", np.array([1], np.uint32))],
         "DELAY has 1 elements but IN has 3"),
        ("repeat_int32", [("IN", "INT32", in3), ("DELAY", "UINT32", np.array([1], np.uint32)),
                          ("WAIT", "UINT32", np.array([0], np.uint32))],
         "inputs IN and DELAY must have the same number of elements"),
    ]
    for model, tensors, text in cases:
        for empty_final in (False, True):
            got = _until_final(server, _raw_request(model, tensors, f"{model}-err", empty_final))
            assert len(got) == 1, got
            assert text in got[0].error_message
            ir = got[0].infer_response
            assert (ir.id, ir.model_name, ir.model_version) == (f"{model}-err", model, ""), ir
            assert list(ir.parameters) == ["triton_final_response"] and not ir.outputs, ir


def test_stream_refusal_before_the_model_is_id_only(server):
    """A request refused before its model runs (unknown model, wrong
    datatype) gets an error with the request id alone, as in Triton."""
    from tritonclient.grpc import service_pb2

    channel, stub = server.grpc_stub()
    try:
        reqs = [
            _raw_request("no_such_model", [("IN", "INT32", np.array([1], np.int32))], "unknown"),
            _raw_request("repeat_python", [("IN", "FP32", np.array([1], np.float32))], "wrong-type"),
        ]
        got = list(stub.ModelStreamInfer(iter(reqs), timeout=TIMEOUT_S))
    finally:
        channel.close()
    assert sorted(r.infer_response.id for r in got) == ["unknown", "wrong-type"], got
    for r in got:
        assert r.error_message
        assert r.infer_response == service_pb2.ModelInferResponse(id=r.infer_response.id), r
