"""Decoupled models (0..N responses per request) end to end: the example
models repeat_int32 and square_int32 over gRPC streaming with tritonclient,
their refusal on unary calls, cancellation, and the statistics Triton keeps
per response index."""

import queue
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from conftest import wait_for

TIMEOUT_S = 30


class Stream:
    """A tritonclient stream whose callbacks land in a queue."""

    def __init__(self, server):
        self.client = server.grpc()
        self.results = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.results.put((result, error, time.monotonic())))

    def get(self):
        return self.results.get(timeout=TIMEOUT_S)

    def close(self, cancel=False):
        self.client.stop_stream(cancel_requests=cancel)
        self.client.close()


def repeat_inputs(values, delays_ms, wait_ms=0):
    inputs = [
        grpcclient.InferInput("IN", [len(values)], "INT32"),
        grpcclient.InferInput("DELAY", [len(delays_ms)], "UINT32"),
        grpcclient.InferInput("WAIT", [1], "UINT32"),
    ]
    inputs[0].set_data_from_numpy(np.array(values, dtype=np.int32))
    inputs[1].set_data_from_numpy(np.array(delays_ms, dtype=np.uint32))
    inputs[2].set_data_from_numpy(np.array([wait_ms], dtype=np.uint32))
    return inputs


def square_inputs(n):
    inp = grpcclient.InferInput("IN", [1], "INT32")
    inp.set_data_from_numpy(np.array([n], dtype=np.int32))
    return [inp]


def stats(server, model):
    return server.grpc().get_inference_statistics(model, as_json=True)["model_stats"][0]


def count(d, *path):
    """A statistics count; protobuf's JSON leaves zero counts out."""
    for key in path:
        d = d.get(key, {})
    return int(d.get("count", 0)) if isinstance(d, dict) else 0


def test_repeat_streams_one_response_per_element(server):
    """The flow of Triton's decoupled client example (simple_grpc_custom_repeat):
    one request, a response per element of IN, OUT in order."""
    values = list(range(100, 108))
    delay_ms = 30
    stream = Stream(server)
    try:
        sent = time.monotonic()
        stream.client.async_stream_infer(
            model_name="repeat_int32",
            inputs=repeat_inputs(values, [delay_ms] * len(values), wait_ms=10),
            outputs=[grpcclient.InferRequestedOutput("OUT")],
            request_id="rep",
        )
        got, times = [], []
        for _ in values:
            result, error, at = stream.get()
            assert error is None, error
            assert result.get_response().id == "rep"
            out = result.as_numpy("OUT")
            assert out.shape == (1,)
            # Only the requested output comes back.
            assert result.as_numpy("IDX") is None
            got.append(int(out[0]))
            times.append(at - sent)
    finally:
        stream.close()
    assert got == values
    # Each response waits for its own delay after the one before it.
    for i, t in enumerate(times):
        assert t >= (i + 1) * delay_ms / 1000 * 0.9, f"response {i} after {t:.3f} s"


def test_repeat_idx_and_interleaving(server):
    stream = Stream(server)
    try:
        stream.client.async_stream_infer("repeat_int32", repeat_inputs([7, 8, 9], [60, 60, 60]), request_id="slow")
        stream.client.async_stream_infer("repeat_int32", repeat_inputs([1, 2], [1, 1]), request_id="fast")
        per_request = {"slow": [], "fast": []}
        order = []
        for _ in range(5):
            result, error, _ = stream.get()
            assert error is None, error
            rid = result.get_response().id
            order.append(rid)
            per_request[rid].append((int(result.as_numpy("OUT")[0]), int(result.as_numpy("IDX")[0])))
            params = result.get_response().parameters
            assert "triton_final_response" in params
            assert params["triton_final_response"].bool_param is False
    finally:
        stream.close()
    assert per_request["slow"] == [(7, 0), (8, 1), (9, 2)]
    assert per_request["fast"] == [(1, 0), (2, 1)]
    # The second request's responses pass the first's: streams interleave.
    assert order.index("fast") < order.index("slow"), order


@pytest.mark.parametrize("n", [0, 1, 4])
def test_square_sends_n_responses_then_empty_final(server, n):
    stream = Stream(server)
    try:
        stream.client.async_stream_infer(
            "square_int32", square_inputs(n), request_id=f"sq{n}", enable_empty_final_response=True
        )
        outs = []
        while True:
            result, error, _ = stream.get()
            assert error is None, error
            resp = result.get_response()
            assert resp.id == f"sq{n}"
            final = resp.parameters["triton_final_response"].bool_param
            if final:
                assert len(resp.outputs) == 0, "the final flag comes alone"
                break
            outs.append(int(result.as_numpy("OUT")[0]))
    finally:
        stream.close()
    assert outs == [n] * n


def test_square_without_empty_final(server):
    stream = Stream(server)
    try:
        stream.client.async_stream_infer("square_int32", square_inputs(3), request_id="nofinal")
        for _ in range(3):
            result, error, _ = stream.get()
            assert error is None, error
            assert int(result.as_numpy("OUT")[0]) == 3
        # A non-decoupled request after it still answers, and nothing else
        # arrived for the decoupled one.
        ident = grpcclient.InferInput("INPUT0", [1, 2], "FP32")
        ident.set_data_from_numpy(np.array([[1, 2]], dtype=np.float32))
        stream.client.async_stream_infer("identity_fp32", [ident], request_id="after")
        result, error, _ = stream.get()
        assert error is None, error
        assert result.get_response().id == "after"
    finally:
        stream.close()


def test_unary_calls_refuse_decoupled_models(server):
    with pytest.raises(InferenceServerException) as e:
        server.grpc().infer("square_int32", square_inputs(2))
    assert e.value.status() == "StatusCode.UNIMPLEMENTED"
    assert "ModelInfer RPC doesn't support models with decoupled transaction policy" in e.value.message()

    body = {"inputs": [{"name": "IN", "shape": [1], "datatype": "INT32", "data": [2]}]}
    r = server.request("POST", "/v2/models/square_int32/infer", body)
    assert r.status == 501
    assert r.json()["error"] == "HTTP end point doesn't support models with decoupled transaction policy"


def test_bad_decoupled_request_is_in_band_error(server):
    stream = Stream(server)
    try:
        # DELAY must have as many elements as IN.
        stream.client.async_stream_infer("repeat_int32", repeat_inputs([1, 2, 3], [1]), request_id="bad")
        result, error, _ = stream.get()
        assert result is None
        assert error is not None and "DELAY" in error.message()
        # The stream still serves.
        stream.client.async_stream_infer("square_int32", square_inputs(1), request_id="ok")
        result, error, _ = stream.get()
        assert error is None, error
    finally:
        stream.close()


def test_cancel_mid_stream_is_counted(nereid, fresh_repo):
    server = nereid.start(fresh_repo)
    stream = Stream(server)
    stream.client.async_stream_infer("repeat_int32", repeat_inputs(list(range(50)), [100] * 50), request_id="long")
    result, error, _ = stream.get()
    assert error is None, error
    stream.close(cancel=True)

    def cancelled():
        st = stats(server, "repeat_int32")
        cancels = sum(count(r, "cancel") for r in st.get("response_stats", {}).values())
        return cancels == 1 and count(st, "inference_stats", "fail") == 1 and st

    st = wait_for(cancelled, what="the cancellation in the statistics")
    assert count(st, "inference_stats", "success") == 0
    assert count(st, "response_stats", "0", "success") == 1
    # The server keeps serving the model.
    stream = Stream(server)
    try:
        stream.client.async_stream_infer("repeat_int32", repeat_inputs([5], [1]), request_id="again")
        result, error, _ = stream.get()
        assert error is None, error
        assert int(result.as_numpy("OUT")[0]) == 5
    finally:
        stream.close()


def test_response_statistics_by_index(nereid, fresh_repo):
    server = nereid.start(fresh_repo)
    stream = Stream(server)
    try:
        for n, rid in ((3, "a"), (1, "b")):
            stream.client.async_stream_infer("square_int32", square_inputs(n), request_id=rid)
        for _ in range(4):
            _, error, _ = stream.get()
            assert error is None, error
    finally:
        stream.close()
    def counted():
        st = stats(server, "square_int32")
        return count(st, "inference_stats", "success") == 2 and st

    st = wait_for(counted, what="both requests in the statistics")
    rs = st["response_stats"]
    assert count(rs, "0", "success") == 2
    assert count(rs, "1", "success") == 1
    assert count(rs, "2", "success") == 1
    # The flags-only finals: after response 3 of "a" and response 1 of "b".
    assert count(rs, "3", "empty_response") == 1
    assert count(rs, "1", "empty_response") == 1
    assert int(st["inference_count"]) == 2
    assert int(st["execution_count"]) == 2
