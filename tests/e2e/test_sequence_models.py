"""The sequence example models (ONNX, model_repo_examples) with tritonclient:
interleaved sequences over gRPC streaming and unary HTTP get, step by step,
the values Triton's example clients expect.

simple_sequence and simple_dyna_sequence are Triton's documented examples.
Their expected values are those of Triton's example clients
(simple_grpc_sequence_stream_infer_client.py,
simple_http_sequence_sync_infer_client.py and their --dyna runs): the
sequences [0] + VALUES as ID 1000, [100] - VALUES as ID 1001 and, on
simple_sequence, [20] - VALUES under a string ID; the first response is the
input + 1 (START), the others the input, and on simple_dyna_sequence the
last one adds the correlation ID (END * CORRID).

sequence_accumulator keeps a running sum in implicit state;
sequence_growable appends each input to an implicit state of variable
length (dims [-1]).
"""

import queue
import shutil
import uuid

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import EXAMPLES, NereidFactory, _factory_teardown

MODELS = ["simple_sequence", "simple_dyna_sequence", "simple_string_dyna_sequence", "sequence_accumulator",
          "sequence_growable"]

# The values of Triton's example clients.
VALUES = [11, 7, 5, 3, 2, 0, 1]


@pytest.fixture(scope="module")
def seq_models(tmp_path_factory):
    repo = tmp_path_factory.mktemp("seq_models_repo")
    for name in MODELS:
        shutil.copytree(EXAMPLES / name, repo / name)
    factory = NereidFactory(tmp_path_factory.mktemp("seq_models_server"))
    yield factory.start(repo)
    _factory_teardown(factory)


def _sequences(string_id):
    """Triton's example sequences: {id: inputs}, in the order they are sent."""
    return {
        1000: [0] + VALUES,
        1001: [100] + [-v for v in VALUES],
        string_id: [20] + [-v for v in VALUES],
    }


def _simple_expected(sid, inputs, dyna):
    """Triton's simple_sequence / simple_dyna_sequence answers: INPUT + START,
    plus END * CORRID for the dyna model."""
    out = [v + (1 if i == 0 else 0) for i, v in enumerate(inputs)]
    if dyna:
        out[-1] += int(sid)
    return out


def _running_sum(inputs):
    return list(np.cumsum(inputs))


def _input(client_mod, value):
    inp = client_mod.InferInput("INPUT", [1, 1], "INT32")
    inp.set_data_from_numpy(np.full((1, 1), value, dtype=np.int32))
    return inp


def _interleaved(seqs):
    """(id, step, value, start, end) with the sequences' steps interleaved."""
    steps = max(len(v) for v in seqs.values())
    for step in range(steps):
        for sid, inputs in seqs.items():
            if step < len(inputs):
                yield sid, step, inputs[step], step == 0, step == len(inputs) - 1


def _run_stream(server, model, seqs, output="OUTPUT"):
    """Sends every step on one gRPC stream without waiting for answers and
    returns {id: [response outputs in step order]}."""
    results = queue.Queue()
    client = server.grpc()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    plan = list(_interleaved(seqs))
    got = {}
    try:
        for sid, step, value, start, end in plan:
            client.async_stream_infer(
                model,
                [_input(grpcclient, value)],
                outputs=[grpcclient.InferRequestedOutput(output)],
                request_id=f"{sid}_{step}",
                sequence_id=sid,
                sequence_start=start,
                sequence_end=end,
            )
        for _ in plan:
            result, error = results.get(timeout=60)
            assert error is None, error
            got[result.get_response().id] = result.as_numpy(output)
    finally:
        client.stop_stream()
        client.close()
    return {sid: [got[f"{sid}_{step}"] for step in range(len(inputs))] for sid, inputs in seqs.items()}


def _run_http(server, model, seqs, output="OUTPUT"):
    """Sends the steps one unary HTTP call at a time, interleaved."""
    client = server.http()
    got = {sid: [] for sid in seqs}
    try:
        for sid, _, value, start, end in _interleaved(seqs):
            result = client.infer(
                model,
                [_input(httpclient, value)],
                outputs=[httpclient.InferRequestedOutput(output)],
                sequence_id=sid,
                sequence_start=start,
                sequence_end=end,
            )
            got[sid].append(result.as_numpy(output))
    finally:
        client.close()
    return got


RUNNERS = {"grpc_stream": _run_stream, "http": _run_http}


def _scalars(arrays):
    for a in arrays:
        assert a.shape == (1, 1) and a.dtype == np.int32, (a.shape, a.dtype)
    return [int(a[0][0]) for a in arrays]


@pytest.mark.parametrize("protocol", RUNNERS)
def test_simple_sequence_matches_triton_example_clients(seq_models, protocol):
    seqs = _sequences(str(uuid.uuid4()))
    got = RUNNERS[protocol](seq_models, "simple_sequence", seqs)
    for sid, inputs in seqs.items():
        want = _simple_expected(sid, inputs, dyna=False)
        assert _scalars(got[sid]) == want, (sid, got[sid])
    # The numbers spelled out, as the example clients check them.
    assert _scalars(got[1000]) == [1, 11, 7, 5, 3, 2, 0, 1]
    assert _scalars(got[1001]) == [101, -11, -7, -5, -3, -2, 0, -1]


@pytest.mark.parametrize("protocol", RUNNERS)
def test_simple_dyna_sequence_matches_triton_example_clients(seq_models, protocol):
    # CORRID is UINT64 here: the string-ID sequence of the example clients
    # goes to simple_string_dyna_sequence, a model of Triton's QA suite.
    seqs = {sid: inputs for sid, inputs in _sequences(None).items() if sid is not None}
    seqs[1003] = [3]  # a sequence of one request: START and END together
    got = RUNNERS[protocol](seq_models, "simple_dyna_sequence", seqs)
    for sid, inputs in seqs.items():
        assert _scalars(got[sid]) == _simple_expected(sid, inputs, dyna=True), (sid, got[sid])
    assert _scalars(got[1000]) == [1, 11, 7, 5, 3, 2, 0, 1001]
    assert _scalars(got[1001]) == [101, -11, -7, -5, -3, -2, 0, 1000]
    assert _scalars(got[1003]) == [1007]


@pytest.mark.parametrize("protocol", RUNNERS)
def test_simple_string_dyna_sequence_matches_triton_example_clients(seq_models, protocol):
    # The --dyna runs of Triton's example clients send their string-ID
    # sequence as "1002" to this model, which adds the ID read as a number.
    seqs = {"1002": [20] + [-v for v in VALUES], "1004": [5]}
    got = RUNNERS[protocol](seq_models, "simple_string_dyna_sequence", seqs)
    for sid, inputs in seqs.items():
        assert _scalars(got[sid]) == _simple_expected(sid, inputs, dyna=True), (sid, got[sid])
    assert _scalars(got["1002"]) == [21, -11, -7, -5, -3, -2, 0, 1001]


def test_simple_string_dyna_sequence_refuses_ids_that_are_not_numbers(seq_models):
    client = seq_models.http()
    with pytest.raises(InferenceServerException) as e:
        client.infer("simple_string_dyna_sequence", [_input(httpclient, 1)], sequence_id="not-a-number",
                     sequence_start=True, sequence_end=True)
    # The model's Cast cannot parse it: ONNX Runtime's failure, as a 500
    # that names the model.
    assert e.value.status() == "500", e.value
    assert "model 'simple_string_dyna_sequence'" in e.value.message(), e.value.message()
    # The model keeps serving.
    out = client.infer("simple_string_dyna_sequence", [_input(httpclient, 2)], sequence_id="7",
                       sequence_start=True, sequence_end=True)
    assert _scalars([out.as_numpy("OUTPUT")]) == [10]


def test_simple_dyna_sequence_refuses_string_ids(seq_models):
    client = seq_models.http()
    with pytest.raises(InferenceServerException) as e:
        client.infer("simple_dyna_sequence", [_input(httpclient, 1)], sequence_id="1002", sequence_start=True)
    assert e.value.status() == "400"
    assert (
        "sequence batching control 'CORRID' data-type is 'BYTES', but model 'simple_dyna_sequence' expects 'UINT64'"
        in e.value.message()
    )


@pytest.mark.parametrize("protocol", RUNNERS)
def test_accumulator_keeps_a_running_sum_per_sequence(seq_models, protocol):
    seqs = _sequences(f"acc-{protocol}")
    got = RUNNERS[protocol](seq_models, "sequence_accumulator", seqs)
    for sid, inputs in seqs.items():
        assert _scalars(got[sid]) == _running_sum(inputs), (sid, got[sid])
    assert _scalars(got[1000]) == [0, 11, 18, 23, 26, 28, 28, 29]


def test_accumulator_restarts_on_start(seq_models):
    client = seq_models.grpc()
    first = [client.infer("sequence_accumulator", [_input(grpcclient, v)], sequence_id=77,
                          sequence_start=(i == 0)).as_numpy("OUTPUT") for i, v in enumerate([5, 6])]
    # A new START on a running ID ends the old sequence: the sum starts over.
    again = client.infer("sequence_accumulator", [_input(grpcclient, 1)], sequence_id=77,
                         sequence_start=True, sequence_end=True)
    assert _scalars(first) == [5, 11]
    assert _scalars([again.as_numpy("OUTPUT")]) == [1]
    # The state output is not a declared output: it never reaches clients.
    assert [o.name for o in again.get_response().outputs] == ["OUTPUT"]


def _growable_seqs():
    # Different lengths and a late start: the states of the sequences have
    # different sizes at the same time.
    return {
        4000: [1, 2, 3, 4, 5, 6],
        4001: [10, 20, 30],
        "grow-text": [-1, -2, -3, -4],
    }


@pytest.mark.parametrize("protocol", RUNNERS)
def test_growable_state_appends_every_input(seq_models, protocol):
    seqs = _growable_seqs()
    hist = RUNNERS[protocol](seq_models, "sequence_growable", seqs, output="HISTORY")
    sums = RUNNERS[protocol](seq_models, "sequence_growable", seqs, output="OUTPUT")
    for sid, inputs in seqs.items():
        for step, h in enumerate(hist[sid]):
            assert h.dtype == np.int32 and h.shape == (1, step + 1), (sid, step, h.shape)
            assert h[0].tolist() == inputs[: step + 1], (sid, step, h)
        assert _scalars(sums[sid]) == _running_sum(inputs), (sid, sums[sid])


def test_growable_state_outputs_and_restart(seq_models):
    client = seq_models.http()
    try:
        r = client.infer("sequence_growable", [_input(httpclient, 7)], sequence_id=4100, sequence_start=True)
        assert sorted(o["name"] for o in r.get_response()["outputs"]) == ["HISTORY", "OUTPUT"]
        r = client.infer("sequence_growable", [_input(httpclient, 8)], sequence_id=4100)
        assert r.as_numpy("HISTORY").tolist() == [[7, 8]]
        # START again: the state is the empty initial state, not [7, 8].
        r = client.infer("sequence_growable", [_input(httpclient, 9)], sequence_id=4100,
                         sequence_start=True, sequence_end=True)
        assert r.as_numpy("HISTORY").tolist() == [[9]]
        assert r.as_numpy("OUTPUT").tolist() == [[9]]
    finally:
        client.close()
