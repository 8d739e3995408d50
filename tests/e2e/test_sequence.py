"""Sequence batcher, seen from tritonclient: interleaved sequences over gRPC
streaming and unary HTTP / gRPC get their control inputs and implicit state
per step; Triton's errors for bad sequence requests; idle sequences freed.

The test models are identity models whose outputs echo what the sequence
batcher injected: OUTPUT1..OUTPUT4 echo the START, END, READY and CORRID
control inputs (INPUT1..INPUT4), and OUTPUT5 echoes the implicit state input
INPUT5. The state's output is OUTPUT0, the identity of the client's INPUT0,
so the state a step sees is the previous step's INPUT0 of the same sequence,
and the initial state (from initial_state/seed.bin) is SEED. A sequence mixed
up with another, a state not carried, or a state not reset on START all show
in OUTPUT5.
"""

import json
import queue
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import write_model

SEED = -7

SEQUENCE_CONFIG = """
name: "{name}"
backend: "identity"
max_batch_size: 4
input [ {{ name: "INPUT0" data_type: TYPE_INT32 dims: [ 1 ] }} ]
output [
  {{ name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "OUTPUT2" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "OUTPUT3" data_type: TYPE_INT32 dims: [ 1 ] }},
  {{ name: "OUTPUT4" data_type: {corrid_type} dims: [ 1 ] }},
  {{ name: "OUTPUT5" data_type: TYPE_INT32 dims: [ 1 ] }}
]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
sequence_batching {{
  {strategy}
  max_sequence_idle_microseconds: {idle_us}
  control_input [
    {{ name: "INPUT1" control [ {{ kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "INPUT2" control [ {{ kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "INPUT3" control [ {{ kind: CONTROL_SEQUENCE_READY int32_false_true: [ 0, 1 ] }} ] }},
    {{ name: "INPUT4" control [ {{ kind: CONTROL_SEQUENCE_CORRID data_type: {corrid_type} }} ] }}
  ]
  state [ {{
    input_name: "INPUT5" output_name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 1 ]
    initial_state {{ name: "seed" data_type: TYPE_INT32 dims: [ 1 ] data_file: "seed.bin" }}
  }} ]
}}
"""


def _sequence_model(repo, name, corrid_type="TYPE_UINT64", strategy="direct { }", idle_us=5_000_000):
    model_dir = write_model(
        repo,
        name,
        SEQUENCE_CONFIG.format(name=name, corrid_type=corrid_type, strategy=strategy, idle_us=idle_us),
    )
    (model_dir / "initial_state").mkdir(exist_ok=True)
    (model_dir / "initial_state" / "seed.bin").write_bytes(np.array([SEED], dtype="<i4").tobytes())


@pytest.fixture(scope="module")
def seq_server(tmp_path_factory, nereid_module):
    repo = tmp_path_factory.mktemp("seq_repo")
    _sequence_model(repo, "seq_direct")
    _sequence_model(repo, "seq_oldest", strategy="oldest { max_candidate_sequences: 4 max_queue_delay_microseconds: 2000 }")
    _sequence_model(repo, "seq_string", corrid_type="TYPE_STRING")
    _sequence_model(repo, "seq_idle", idle_us=300_000)
    write_model(
        repo,
        "not_a_sequence",
        'name: "not_a_sequence"\nbackend: "identity"\nmax_batch_size: 4\n'
        'input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ]\n'
        'output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ]\n',
    )
    return nereid_module.start(repo)


@pytest.fixture(scope="module")
def nereid_module(tmp_path_factory):
    from conftest import NereidFactory, _factory_teardown

    factory = NereidFactory(tmp_path_factory.mktemp("seq_server"))
    yield factory
    _factory_teardown(factory)


def _plan(ids, steps=3):
    """Interleaved steps: (id, value, start, end) for every sequence in turn."""
    plan = []
    for step in range(steps):
        for k, sid in enumerate(ids):
            value = (k + 1) * 100 + step
            plan.append((sid, value, step == 0, step == steps - 1))
    return plan


def _expected(plan):
    """What each step must see: START, END, READY, CORRID, state."""
    last = {}
    out = []
    for sid, value, start, end in plan:
        state = SEED if start else last[sid]
        last[sid] = value
        out.append({"start": int(start), "end": int(end), "ready": 1, "corrid": sid, "state": state, "value": value})
    return out


def _check(result, want, corrid_type=np.uint64):
    got = {
        "value": int(result.as_numpy("OUTPUT0")[0][0]),
        "start": int(result.as_numpy("OUTPUT1")[0][0]),
        "end": int(result.as_numpy("OUTPUT2")[0][0]),
        "ready": int(result.as_numpy("OUTPUT3")[0][0]),
        "state": int(result.as_numpy("OUTPUT5")[0][0]),
    }
    corrid = result.as_numpy("OUTPUT4")[0][0]
    got["corrid"] = corrid.decode() if isinstance(corrid, bytes) else int(corrid)
    assert got == want, (got, want)


def _input(value, client):
    inp = client.InferInput("INPUT0", [1, 1], "INT32")
    inp.set_data_from_numpy(np.array([[value]], dtype=np.int32))
    return inp


@pytest.mark.parametrize("model", ["seq_direct", "seq_oldest"])
def test_interleaved_sequences_grpc_stream(seq_server, model):
    plan = _plan([1001, 1002, 1003])
    results = queue.Queue()
    client = seq_server.grpc()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        for i, (sid, value, start, end) in enumerate(plan):
            client.async_stream_infer(
                model,
                [_input(value, grpcclient)],
                request_id=str(i),
                sequence_id=sid,
                sequence_start=start,
                sequence_end=end,
            )
        got = {}
        for _ in plan:
            result, error = results.get(timeout=30)
            assert error is None, error
            got[result.get_response().id] = result
    finally:
        client.stop_stream()
    for i, want in enumerate(_expected(plan)):
        _check(got[str(i)], want)


@pytest.mark.parametrize("model", ["seq_direct", "seq_oldest"])
def test_interleaved_sequences_http(seq_server, model):
    plan = _plan([2001, 2002, 2003])
    client = seq_server.http()
    for (sid, value, start, end), want in zip(plan, _expected(plan)):
        result = client.infer(
            model, [_input(value, httpclient)], sequence_id=sid, sequence_start=start, sequence_end=end
        )
        _check(result, want)


def test_interleaved_sequences_grpc_unary_string_ids(seq_server):
    plan = _plan(["alpha", "beta"])
    client = seq_server.grpc()
    for (sid, value, start, end), want in zip(plan, _expected(plan)):
        result = client.infer(
            "seq_string", [_input(value, grpcclient)], sequence_id=sid, sequence_start=start, sequence_end=end
        )
        _check(result, want)


def test_string_ids_grpc_stream_and_http_share_sequences(seq_server):
    """A sequence is the server's, not the connection's: steps of one
    sequence may arrive over different protocols."""
    h, g = seq_server.http(), seq_server.grpc()
    r = h.infer("seq_string", [_input(1, httpclient)], sequence_id="mixed", sequence_start=True)
    _check(r, {"value": 1, "start": 1, "end": 0, "ready": 1, "corrid": "mixed", "state": SEED})
    r = g.infer("seq_string", [_input(2, grpcclient)], sequence_id="mixed")
    _check(r, {"value": 2, "start": 0, "end": 0, "ready": 1, "corrid": "mixed", "state": 1})
    r = h.infer("seq_string", [_input(3, httpclient)], sequence_id="mixed", sequence_end=True)
    _check(r, {"value": 3, "start": 0, "end": 1, "ready": 1, "corrid": "mixed", "state": 2})


def test_state_outputs_are_not_returned_unless_declared(seq_server):
    # OUTPUT0 is both the state output and a declared output: returned.
    r = seq_server.http().infer("seq_direct", [_input(5, httpclient)], sequence_id=77, sequence_start=True, sequence_end=True)
    names = {o["name"] for o in r.get_response()["outputs"]}
    assert names == {"OUTPUT0", "OUTPUT1", "OUTPUT2", "OUTPUT3", "OUTPUT4", "OUTPUT5"}, names


def _raw_infer(server, model, parameters):
    body = {
        "inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "INT32", "data": [1]}],
        "parameters": parameters,
    }
    return server.request("POST", f"/v2/models/{model}/infer", body)


def test_sequence_errors_http(seq_server):
    client = seq_server.http()
    with pytest.raises(InferenceServerException) as e:
        client.infer("seq_direct", [_input(1, httpclient)], sequence_id=424242)
    assert "inference request for sequence 424242 to model 'seq_direct' must specify the START flag on the first request of the sequence" in str(e.value)

    r = _raw_infer(seq_server, "seq_direct", {})
    assert r.status == 400, r.body
    assert r.json()["error"] == "inference request to model 'seq_direct' must specify a non-zero or non-empty correlation ID"

    # tritonclient drops the flags without an ID; a raw client can send them.
    r = _raw_infer(seq_server, "seq_direct", {"sequence_start": True})
    assert r.status == 400, r.body
    assert "sets 'sequence_start' without a sequence ID" in r.json()["error"]

    r = _raw_infer(seq_server, "not_a_sequence", {"sequence_id": 5})
    assert r.status == 400, r.body
    assert "has sequence ID 5, but the model has no sequence batcher" in r.json()["error"]

    r = seq_server.request(
        "POST",
        "/v2/models/seq_direct/infer",
        {
            "inputs": [{"name": "INPUT0", "shape": [2, 1], "datatype": "INT32", "data": [1, 2]}],
            "parameters": {"sequence_id": 9, "sequence_start": True},
        },
    )
    assert r.status == 400, r.body
    assert r.json()["error"] == "inference request to model 'seq_direct' must specify batch-size 1 due to requirements of sequence batcher"

    with pytest.raises(InferenceServerException) as e:
        client.infer("seq_direct", [_input(1, httpclient)], sequence_id="text", sequence_start=True)
    assert "sequence batching control 'INPUT4' data-type is 'BYTES', but model 'seq_direct' expects 'UINT64'" in str(e.value)


def test_sequence_errors_grpc(seq_server):
    client = seq_server.grpc()
    with pytest.raises(InferenceServerException) as e:
        client.infer("seq_direct", [_input(1, grpcclient)], sequence_id=515151)
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "must specify the START flag on the first request of the sequence" in e.value.message()

    # Over a stream the error comes back in-band and the stream goes on.
    results = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        client.async_stream_infer("seq_direct", [_input(1, grpcclient)], sequence_id=616161)
        client.async_stream_infer("seq_direct", [_input(1, grpcclient)], sequence_id=616161, sequence_start=True, sequence_end=True)
        _, error = results.get(timeout=30)
        assert error is not None and "must specify the START flag" in error.message()
        result, error = results.get(timeout=30)
        assert error is None, error
    finally:
        client.stop_stream()


def test_idle_sequence_is_freed(seq_server):
    client = seq_server.http()
    client.infer("seq_idle", [_input(1, httpclient)], sequence_id=31, sequence_start=True)
    time.sleep(1.0)  # max_sequence_idle_microseconds is 0.3 s
    with pytest.raises(InferenceServerException) as e:
        client.infer("seq_idle", [_input(2, httpclient)], sequence_id=31)
    assert "must specify the START flag" in str(e.value)
    # The ID can start again, from the initial state.
    r = client.infer("seq_idle", [_input(3, httpclient)], sequence_id=31, sequence_start=True, sequence_end=True)
    assert int(r.as_numpy("OUTPUT5")[0][0]) == SEED


def test_sequence_statistics(seq_server):
    client = seq_server.http()
    before = client.get_inference_statistics("seq_direct")["model_stats"][0]
    plan = _plan([3001, 3002], steps=2)
    for sid, value, start, end in plan:
        client.infer("seq_direct", [_input(value, httpclient)], sequence_id=sid, sequence_start=start, sequence_end=end)
    after = client.get_inference_statistics("seq_direct")["model_stats"][0]
    assert after["inference_count"] - before["inference_count"] == len(plan)
    assert after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"] == len(plan)
    # One request at a time: one execution each, padded rows included in
    # the batch size (sequence 3002 runs in batch row 1 behind a padding row).
    assert after["execution_count"] - before["execution_count"] == len(plan)
    sizes = {b["batch_size"] for b in after["batch_stats"]}
    assert 2 in sizes, after["batch_stats"]


def test_server_reports_sequence_extension(seq_server):
    meta = json.loads(seq_server.request("GET", "/v2").body)
    assert "sequence" in meta["extensions"]
