"""Ensembles with tritonclient: Triton's two-step `simple` ensemble over
HTTP and gRPC, composing models' statistics, explicit-mode loading of
composing models, a decoupled step fanned out over a gRPC stream, and an
ensemble that does not validate."""

import json
import queue
import shutil
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import EXAMPLES, _free_ports, wait_for, write_identity_model, write_model
from e2e_util import scrape

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


# --------------------------------------------------------------------------
# Traces, failure metrics, poll mode, reloads under load, sequence steps

def test_ensemble_trace_has_a_child_per_step(nereid, good_repo, tmp_path):
    trace_file = tmp_path / "trace.json"
    s = nereid.start(good_repo, [f"--trace-config=triton,file={trace_file}",
                                 "--trace-config=level=TIMESTAMPS", "--trace-config=rate=1"])
    s.http().infer("simple_ensemble", simple_inputs(httpclient), request_id="t-http")
    s.grpc().infer("simple_ensemble", simple_inputs(grpcclient), request_id="t-grpc")
    s.stop_gracefully()
    records = json.loads(trace_file.read_text())
    heads = [r for r in records if "model_name" in r]
    stamps = {}
    for r in records:
        stamps.setdefault(r["id"], []).extend(t["name"] for t in r.get("timestamps", []))
    parents = [h for h in heads if h["model_name"] == "simple_ensemble"]
    assert sorted(p["request_id"] for p in parents) == ["t-grpc", "t-http"], heads
    core = ["REQUEST_START", "QUEUE_START", "COMPUTE_START", "COMPUTE_INPUT_END",
            "COMPUTE_OUTPUT_START", "COMPUTE_END", "REQUEST_END"]
    for p in parents:
        assert "parent_id" not in p
        steps = [h for h in heads if h.get("parent_id") == p["id"]]
        # Two steps of simple, each its own trace under the ensemble's.
        assert [h["model_name"] for h in steps] == ["simple", "simple"], heads
        for h in steps:
            assert h["model_version"] == 1 and h["request_id"] == p["request_id"] and h["id"] != p["id"]
            assert [n for n in stamps[h["id"]] if n in core] == core
    assert len(heads) == 6


def test_ensemble_failures_count_as_other(nereid, good_repo):
    port = _free_ports(1)[0]
    s = nereid.start(good_repo, ["--model-control-mode=explicit", "--load-model=simple_ensemble",
                                 "--allow-metrics=true", f"--metrics-port={port}"])
    c = s.http()
    c.infer("simple_ensemble", simple_inputs(httpclient))
    c.unload_model("simple")
    wait_for(lambda: not c.is_model_ready("simple"), what="simple unloaded")
    with pytest.raises(InferenceServerException) as e:
        c.infer("simple_ensemble", simple_inputs(httpclient))
    assert "simple_ensemble" in e.value.message() and "'simple'" in e.value.message(), e.value.message()
    samples = scrape(port)[0]

    def failures(model, reason):
        return samples.get(("nv_inference_request_failure",
                            frozenset({"model": model, "version": "1", "reason": reason}.items())))

    # The ensemble counts its own failure as OTHER, as Triton does.
    assert failures("simple_ensemble", "OTHER") == 1, samples
    for reason in ("BACKEND", "REJECTED", "CANCELED"):
        assert failures("simple_ensemble", reason) == 0
    assert samples.get(("nv_inference_request_success",
                        frozenset({"model": "simple_ensemble", "version": "1"}.items()))) == 1


SWAP = """name: "swap"
platform: "ensemble"
max_batch_size: 8
input [ { name: "A" data_type: TYPE_INT32 dims: [ 16 ] }, { name: "B" data_type: TYPE_INT32 dims: [ 16 ] } ]
output [ { name: "S" data_type: TYPE_INT32 dims: [ 16 ] }, { name: "D" data_type: TYPE_INT32 dims: [ 16 ] } ]
ensemble_scheduling { step [ { model_name: "simple" model_version: -1
  input_map { key: "INPUT0" value: "A" } input_map { key: "INPUT1" value: "B" }
  output_map { key: "OUTPUT0" value: "%s" } output_map { key: "OUTPUT1" value: "%s" } } ] }
"""


def swap_infer(client):
    inputs = [httpclient.InferInput("A", [2, 16], "INT32"), httpclient.InferInput("B", [2, 16], "INT32")]
    inputs[0].set_data_from_numpy(IN0)
    inputs[1].set_data_from_numpy(IN1)
    r = client.infer("swap", inputs)
    return r.as_numpy("S"), r.as_numpy("D")


def test_poll_mode_follows_ensemble_and_composing_changes(nereid, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "simple", repo / "simple")
    write_model(repo, "swap", SWAP % ("S", "D"))
    s = nereid.start(repo, ["--model-control-mode=poll", "--repository-poll-secs=1"])
    c = s.http()
    total, diff = swap_infer(c)
    np.testing.assert_array_equal(total, IN0 + IN1)
    np.testing.assert_array_equal(diff, IN0 - IN1)

    # The ensemble's own configuration changes: the next poll reloads it.
    write_model(repo, "swap", SWAP % ("D", "S"))

    def swapped():
        total, _ = swap_infer(c)
        return np.array_equal(total, IN0 - IN1)

    wait_for(swapped, what="the changed ensemble served")

    # A composing model's configuration changes: it reloads, and the
    # ensemble serves throughout.
    cfg = (repo / "simple" / "config.pbtxt").read_text()
    (repo / "simple" / "config.pbtxt").write_text(cfg + '\nparameters { key: "poll_marker" value { string_value: "2" } }\n')

    def reloaded():
        assert c.is_model_ready("swap")
        swap_infer(c)
        params = c.get_model_config("simple").get("parameters", {})
        return params.get("poll_marker", {}).get("string_value") == "2"

    wait_for(reloaded, what="simple reloaded by the poll")
    _, diff = swap_infer(c)
    np.testing.assert_array_equal(diff, IN0 + IN1)

    # Removing a composing model makes the ensemble fail to serve.
    shutil.rmtree(repo / "simple")
    wait_for(lambda: not c.is_model_ready("swap"), what="swap not ready without simple")


def test_reloading_a_composing_model_under_load_loses_nothing(nereid, good_repo):
    s = nereid.start(good_repo, ["--model-control-mode=explicit", "--load-model=simple_ensemble"])
    stop = threading.Event()
    errors, counts = [], []

    def load():
        c = s.grpc()
        n = 0
        while not stop.is_set():
            try:
                r = c.infer("simple_ensemble", simple_inputs(grpcclient))
                np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), 2 * IN0)
                np.testing.assert_array_equal(r.as_numpy("OUTPUT1"), 2 * IN1)
                n += 1
            except Exception as e:  # noqa: BLE001 - every failure is reported
                errors.append(repr(e))
        counts.append(n)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    c = s.http()
    cfg = (good_repo / "simple" / "config.pbtxt").read_text()
    try:
        for i in range(3):
            time.sleep(0.3)
            # A new configuration makes a new version load beside the old,
            # whose steps in flight drain on it.
            c.load_model("simple", config=json.dumps(c.get_model_config("simple") | {"parameters": {"reload": {"string_value": str(i)}}}))
            assert c.get_model_config("simple")["parameters"]["reload"]["string_value"] == str(i)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors[:5]
    assert sum(counts) > 20, counts
    assert cfg  # the repository's own file is untouched


SEQ_ENSEMBLE = """name: "seq_sum"
platform: "ensemble"
max_batch_size: 8
input [ { name: "X" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "SUM" data_type: TYPE_INT32 dims: [ 1 ] } ]
ensemble_scheduling { step [ { model_name: "sequence_accumulator" model_version: -1
  input_map { key: "INPUT" value: "X" } output_map { key: "OUTPUT" value: "SUM" } } ] }
"""


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_sequence_model_inside_an_ensemble(nereid, fresh_repo, protocol):
    write_model(fresh_repo, "seq_sum", SEQ_ENSEMBLE)
    s = nereid.start(fresh_repo)
    client = s.http() if protocol == "http" else s.grpc()
    mod = httpclient if protocol == "http" else grpcclient
    values = {101: [0, 11, 7, 5], 202: [3, 2, 0, 1]}
    got = {101: [], 202: []}
    # Two sequences interleaved: the correlation id and the start and end
    # flags of the ensemble request reach the step's sequence batcher.
    for k in range(4):
        for sid, vals in values.items():
            x = mod.InferInput("X", [1, 1], "INT32")
            x.set_data_from_numpy(np.array([[vals[k]]], dtype=np.int32))
            r = client.infer("seq_sum", [x], sequence_id=sid, sequence_start=(k == 0), sequence_end=(k == 3))
            got[sid].append(int(r.as_numpy("SUM")[0][0]))
    assert got == {101: [0, 11, 18, 23], 202: [3, 5, 5, 6]}
    # Without a correlation id the sequence model refuses the step, and
    # the message names the ensemble's step.
    x = mod.InferInput("X", [1, 1], "INT32")
    x.set_data_from_numpy(np.array([[1]], dtype=np.int32))
    with pytest.raises(InferenceServerException) as e:
        client.infer("seq_sum", [x])
    assert "seq_sum" in e.value.message() and "sequence_accumulator" in e.value.message(), e.value.message()
