"""Ensembles with tritonclient: Triton's two-step `simple` ensemble over
HTTP and gRPC, composing models' statistics, explicit-mode loading of
composing models, a decoupled step fanned out over a gRPC stream, and an
ensemble that does not validate."""

import queue

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import EXAMPLES, wait_for, write_identity_model, write_model

IN0 = np.arange(32, dtype=np.int32).reshape(2, 16)
IN1 = np.ones((2, 16), dtype=np.int32)


def simple_inputs(mod):
    inputs = [mod.InferInput("INPUT0", [2, 16], "INT32"), mod.InferInput("INPUT1", [2, 16], "INT32")]
    inputs[0].set_data_from_numpy(IN0)
    inputs[1].set_data_from_numpy(IN1)
    return inputs


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_simple_ensemble(server, protocol):
    client = server.http() if protocol == "http" else server.grpc()
    mod = httpclient if protocol == "http" else grpcclient
    r = client.infer("simple_ensemble", simple_inputs(mod), request_id="e1")
    resp = r.get_response()
    assert (resp["id"] if protocol == "http" else resp.id) == "e1"
    np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), 2 * IN0)
    np.testing.assert_array_equal(r.as_numpy("OUTPUT1"), 2 * IN1)
    md = client.get_model_metadata("simple_ensemble")
    platform = md["platform"] if protocol == "http" else md.platform
    assert platform == "ensemble"


def test_ensemble_counts_composing_model_requests(nereid, good_repo):
    s = nereid.start(good_repo)
    c = s.http()
    for _ in range(3):
        c.infer("simple_ensemble", simple_inputs(httpclient))

    def count(model):
        st = c.get_inference_statistics(model)["model_stats"][0]
        return st["inference_stats"]["success"]["count"], st["inference_count"]

    assert count("simple_ensemble")[0] == 3
    # Two steps of simple per ensemble request, each a batch of 2.
    assert count("simple") == (6, 12)


def test_wrong_input_names_the_ensemble(server):
    c = server.http()
    bad = httpclient.InferInput("INPUT0", [2, 15], "INT32")
    bad.set_data_from_numpy(np.zeros((2, 15), dtype=np.int32))
    with pytest.raises(InferenceServerException) as e:
        c.infer("simple_ensemble", [bad, simple_inputs(httpclient)[1]])
    assert "simple_ensemble" in str(e.value) and e.value.status() == "400"


def ensemble_repo(repo):
    """An identity model, and an ensemble of it after the decoupled repeat."""
    write_identity_model(repo, "id_int32", [("INT32", [-1])])
    write_model(repo, "repeat_int32", (EXAMPLES / "repeat_int32" / "config.pbtxt").read_text())
    write_model(repo, "fanout", """name: "fanout"
platform: "ensemble"
input [
  { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] },
  { name: "DELAY" data_type: TYPE_UINT32 dims: [ -1 ] },
  { name: "WAIT" data_type: TYPE_UINT32 dims: [ 1 ] }
]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
ensemble_scheduling { step [
  { model_name: "repeat_int32" model_version: -1
    input_map [ { key: "IN" value: "IN" }, { key: "DELAY" value: "DELAY" }, { key: "WAIT" value: "WAIT" } ]
    output_map { key: "OUT" value: "R" } },
  { model_name: "id_int32" model_version: -1
    input_map { key: "INPUT0" value: "R" } output_map { key: "OUTPUT0" value: "OUT" } }
] }
""")
    write_model(repo, "outer", """name: "outer"
platform: "ensemble"
input [
  { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] },
  { name: "DELAY" data_type: TYPE_UINT32 dims: [ -1 ] },
  { name: "WAIT" data_type: TYPE_UINT32 dims: [ 1 ] }
]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
ensemble_scheduling { step [
  { model_name: "fanout" model_version: -1
    input_map [ { key: "IN" value: "IN" }, { key: "DELAY" value: "DELAY" }, { key: "WAIT" value: "WAIT" } ]
    output_map { key: "OUT" value: "OUT" } }
] }
""")
    return repo


@pytest.mark.parametrize("model", ["fanout", "outer"])
def test_decoupled_step_streams_one_response_each(nereid, fresh_repo, model):
    s = nereid.start(ensemble_repo(fresh_repo))
    c = s.grpc()
    got = queue.Queue()
    c.start_stream(callback=lambda result, error: got.put((result, error)))
    try:
        values = [7, 8, 9, 10]
        inputs = [grpcclient.InferInput("IN", [4], "INT32"), grpcclient.InferInput("DELAY", [4], "UINT32"),
                  grpcclient.InferInput("WAIT", [1], "UINT32")]
        inputs[0].set_data_from_numpy(np.array(values, dtype=np.int32))
        inputs[1].set_data_from_numpy(np.zeros(4, dtype=np.uint32))
        inputs[2].set_data_from_numpy(np.zeros(1, dtype=np.uint32))
        c.async_stream_infer(model, inputs, request_id="f1")
        outs = []
        for _ in values:
            result, error = got.get(timeout=10)
            assert error is None, error
            outs.append(int(result.as_numpy("OUT")[0]))
        assert sorted(outs) == values
    finally:
        c.stop_stream()
    # Not served by unary inference.
    inp = httpclient.InferInput("IN", [1], "INT32")
    inp.set_data_from_numpy(np.array([1], dtype=np.int32))
    with pytest.raises(InferenceServerException) as e:
        s.http().infer(model, [inp])
    assert "decoupled" in str(e.value)
    # The configuration says so, which is how an ensemble of it (outer) knows.
    cfg = s.http().get_model_config(model)
    assert cfg["model_transaction_policy"]["decoupled"] is True


def test_explicit_load_brings_composing_models(nereid, fresh_repo):
    s = nereid.start(ensemble_repo(fresh_repo), ["--model-control-mode=explicit"])
    c = s.http()
    c.load_model("fanout")
    assert c.is_model_ready("fanout") and c.is_model_ready("repeat_int32") and c.is_model_ready("id_int32")
    # Ready only while its composing models are.
    c.unload_model("id_int32")
    wait_for(lambda: not c.is_model_ready("id_int32"), what="id_int32 unloaded")
    assert not c.is_model_ready("fanout") and not s.grpc().is_model_ready("fanout")
    c.load_model("id_int32")
    assert c.is_model_ready("fanout")
    # repeat_int32 came with the ensemble and goes with it; id_int32 was
    # loaded on its own since, and stays.
    c.unload_model("fanout", unload_dependents=True)
    wait_for(lambda: not c.is_model_ready("repeat_int32"), what="repeat_int32 unloaded with the ensemble")
    assert c.is_model_ready("id_int32") and not c.is_model_ready("fanout")


def test_invalid_ensemble_is_refused_with_its_reason(nereid, fresh_repo):
    write_identity_model(fresh_repo, "id_fp32", [("FP32", [-1])])
    write_model(fresh_repo, "badtype", """name: "badtype"
platform: "ensemble"
input [ { name: "X" data_type: TYPE_INT32 dims: [ -1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ -1 ] } ]
ensemble_scheduling { step [
  { model_name: "id_fp32" model_version: -1 input_map { key: "INPUT0" value: "X" } output_map { key: "OUTPUT0" value: "Y" } }
] }
""")
    s = nereid.start(fresh_repo, ["--exit-on-error=false", "--strict-readiness=false"])
    c = s.http()
    assert c.is_model_ready("id_fp32") and not c.is_model_ready("badtype")
    index = {m["name"]: m for m in c.get_model_repository_index()}
    assert "input 'INPUT0' of model 'id_fp32' is FP32, but its ensemble tensor 'X' is INT32" in index["badtype"]["reason"], index["badtype"]


# The seed's composition patterns, on the fruit examples (scripts/make_models.py):
# weight, diameter, hue, roughness.
ORANGE = [1.5, 0.8, 0.9, 0.8]
APPLE = [1.6, 0.75, 0.2, 0.1]
SMALL_ORANGE = [1.5, 0.72, 0.9, 0.8]  # the size classifier calls it an apple


def features(*rows):
    x = np.array(rows, dtype=np.float32)
    return x


def fruit_infer(client, mod, model, x, outputs):
    inp = mod.InferInput("FEATURES", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    r = client.infer(model, [inp])
    return [r.as_numpy(o) for o in outputs]


def price(weights, bias, x):
    return np.array([[float(np.dot(weights, row) + bias)] for row in x], dtype=np.float32)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_scatter_gather_vote(server, protocol):
    client = server.http() if protocol == "http" else server.grpc()
    mod = httpclient if protocol == "http" else grpcclient
    x = features(ORANGE, APPLE, SMALL_ORANGE)
    (size,) = fruit_infer(client, mod, "fruit_size", x, ["PROBS"])
    assert np.argmax(size[2]) == 1, "the size classifier alone gets the small orange wrong"
    (cls,) = fruit_infer(client, mod, "fruit_vote", x, ["CLASS"])
    np.testing.assert_array_equal(cls, [[0], [1], [0]])


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_aggregation_mean(server, protocol):
    client = server.http() if protocol == "http" else server.grpc()
    mod = httpclient if protocol == "http" else grpcclient
    x = features(ORANGE, APPLE)
    (got,) = fruit_infer(client, mod, "price_mean", x, ["PRICE"])
    want = (price([0.5, 0.2, 0, 0], 0.1, x) + price([0.6, 0, 0, 0], 0.05, x) + price([0.4, 0.3, 0.1, 0], 0, x)) / 3
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_dynamic_selection_route(nereid, good_repo, protocol):
    s = nereid.start(good_repo)
    client = s.http() if protocol == "http" else s.grpc()
    mod = httpclient if protocol == "http" else grpcclient
    for row, cls, weights, bias in ((ORANGE, 0, [0.5, 0.2, 0, 0], 0.1), (APPLE, 1, [0.6, 0, 0, 0], 0.05)):
        x = features(row)
        got_cls, got_price = fruit_infer(client, mod, "fruit_route", x, ["CLASS", "PRICE"])
        assert got_cls[0][0] == cls
        np.testing.assert_allclose(got_price, price(weights, bias, x), rtol=1e-5)
    stats = {m["name"]: m for m in s.http().get_inference_statistics()["model_stats"]}
    # One orange, one apple: each price model ran once, the other branch not at all.
    assert stats["price_a"]["inference_stats"]["success"]["count"] == 1
    assert stats["price_b"]["inference_stats"]["success"]["count"] == 1
    # A batch mixing an orange and an apple cannot take one branch.
    with pytest.raises(InferenceServerException) as e:
        fruit_infer(client, mod, "fruit_route", features(ORANGE, APPLE), ["CLASS", "PRICE"])
    assert "select different outputs" in str(e.value)


def test_composing_model_batches_steps_of_concurrent_requests(nereid, fresh_repo):
    """Each step goes through its model's scheduler: a dynamic batcher
    batches the steps of concurrent ensemble requests."""
    write_identity_model(fresh_repo, "slow", [("INT32", [-1])], max_batch_size=8,
                         parameters={"execute_delay_ms": "200"})
    cfg = fresh_repo / "slow" / "config.pbtxt"
    cfg.write_text(cfg.read_text() + "dynamic_batching { max_queue_delay_microseconds: 100000 }\n")
    write_model(fresh_repo, "via_slow", """name: "via_slow"
platform: "ensemble"
max_batch_size: 8
input [ { name: "X" data_type: TYPE_INT32 dims: [ -1 ] } ]
output [ { name: "Y" data_type: TYPE_INT32 dims: [ -1 ] } ]
ensemble_scheduling { step [
  { model_name: "slow" model_version: -1 input_map { key: "INPUT0" value: "X" } output_map { key: "OUTPUT0" value: "Y" } }
] }
""")
    s = nereid.start(fresh_repo)
    import concurrent.futures

    def one(i):
        c = s.http()
        inp = httpclient.InferInput("X", [1, 2], "INT32")
        inp.set_data_from_numpy(np.array([[i, i]], dtype=np.int32))
        return c.infer("via_slow", [inp]).as_numpy("Y")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(one, range(8)))
    for i, y in enumerate(outs):
        np.testing.assert_array_equal(y, [[i, i]])
    st = s.http().get_inference_statistics("slow")["model_stats"][0]
    assert st["inference_count"] == 8
    assert st["execution_count"] < 8, st  # batched
