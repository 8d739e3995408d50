"""model_warmup end to end: the server's loader warms every instance of a
model, whatever its backend (ONNX Runtime, TensorFlow when `make tf` has
installed the library, Python, the Go built-ins), before the model is
READY; a sample that fails fails the load with a message naming it; an
ensemble with model_warmup is refused. Checked with tritonclient over HTTP
and gRPC, with a Python model that counts its execute calls, the model
statistics (warm-up executions are not inference and are not counted) and
the server's verbose log (one "instance warmed up" line per instance)."""

from __future__ import annotations

import pathlib
import re
import shutil
import struct

import numpy as np
import pytest

from conftest import EXAMPLES, ROOT
from e2e_util import grpc_inputs, http_inputs

HAVE_TF = (ROOT / ".tf" / "lib" / "libtensorflow_cc.so.2").exists()

# Counts its execute calls per instance and answers each request with the
# count; raises on a negative input.
COUNTER_PY = '''import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.calls = 0

    def execute(self, requests):
        self.calls += 1
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()
            if x.flatten()[0] < 0:
                raise pb_utils.TritonModelException("negative input")
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("CALLS", np.full((x.shape[0], 1), self.calls, np.int32))]))
        return out
'''

# Decoupled: two responses per request from a thread, then the final flag.
STREAMER_PY = '''import threading
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        for r in requests:
            threading.Thread(target=self.stream, args=(r.get_response_sender(),), daemon=True).start()
        return None

    def stream(self, sender):
        for k in range(2):
            sender.send(pb_utils.InferenceResponse([pb_utils.Tensor("CALLS", np.array([k], np.int32))]))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
'''

COUNTER_IO = """input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 1 ] } ]
output [ { name: "CALLS" data_type: TYPE_INT32 dims: [ 1 ] } ]
"""


def _python_model(repo: pathlib.Path, name: str, code: str, config: str):
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "1" / "model.py").write_text(code)
    (repo / name / "config.pbtxt").write_text(f'name: "{name}"\nbackend: "python"\n' + config)


def _warmup_file(repo: pathlib.Path, model: str, name: str, data: bytes):
    (repo / model / "warmup").mkdir(parents=True, exist_ok=True)
    (repo / model / "warmup" / name).write_bytes(data)


def _copy_example(repo: pathlib.Path, src: str, name: str, extra: str):
    shutil.copytree(EXAMPLES / src, repo / name)
    text = (EXAMPLES / src / "config.pbtxt").read_text().replace(f'name: "{src}"', f'name: "{name}"')
    (repo / name / "config.pbtxt").write_text(text + "\n" + extra)


def _zero_sample(name, inputs, batch=1, count=1):
    entries = ", ".join(
        f'{{ key: "{k}" value {{ data_type: {t} dims: [ {d} ] zero_data: true }} }}' for k, t, d in inputs
    )
    return f'model_warmup [ {{ name: "{name}" batch_size: {batch} count: {count} inputs [ {entries} ] }} ]\n'


def build_repo(repo: pathlib.Path) -> pathlib.Path:
    # ONNX Runtime: two instances, a random and a file input, batch 3, twice.
    _copy_example(repo, "simple", "warm_onnx", (
        'instance_group [ { count: 2 kind: KIND_CPU } ]\n'
        'model_warmup [ { name: "mixed" batch_size: 3 count: 2 inputs [\n'
        '  { key: "INPUT0" value { data_type: TYPE_INT32 dims: [ 16 ] random_data: true } },\n'
        '  { key: "INPUT1" value { data_type: TYPE_INT32 dims: [ 16 ] input_data_file: "ones" } } ] } ]\n'))
    _warmup_file(repo, "warm_onnx", "ones", np.ones(16, np.int32).tobytes())
    # A sequence model on ONNX Runtime: the loader supplies START, READY
    # and the state.
    _copy_example(repo, "sequence_accumulator", "warm_sequence",
                  _zero_sample("seq", [("INPUT", "TYPE_INT32", 1)], batch=2))
    # Python: two instances, each warmed with three executions.
    _python_model(repo, "warm_python", COUNTER_PY, "max_batch_size: 4\n" + COUNTER_IO
                  + "instance_group [ { count: 2 kind: KIND_CPU } ]\n"
                  + _zero_sample("calls", [("INPUT0", "TYPE_INT32", 1)], batch=2, count=3))
    _python_model(repo, "warm_python_stream", STREAMER_PY,
                  "max_batch_size: 0\nmodel_transaction_policy { decoupled: true }\n" + COUNTER_IO
                  + _zero_sample("stream", [("INPUT0", "TYPE_INT32", 1)], count=2))
    # A Go built-in, decoupled: square sends IN responses.
    (repo / "warm_square").mkdir()
    (repo / "warm_square" / "1").mkdir()
    (repo / "warm_square" / "config.pbtxt").write_text(
        (EXAMPLES / "square_int32" / "config.pbtxt").read_text().replace('name: "square_int32"', 'name: "warm_square"')
        + '\nmodel_warmup [ { name: "three" batch_size: 1 inputs { key: "IN" value {'
        ' data_type: TYPE_INT32 dims: [ 1 ] input_data_file: "three" } } } ]\n')
    _warmup_file(repo, "warm_square", "three", struct.pack("<i", 3))

    # Failures.
    _python_model(repo, "bad_python", COUNTER_PY, "max_batch_size: 4\n" + COUNTER_IO + (
        'model_warmup [ { name: "negative" batch_size: 1 inputs { key: "INPUT0" value {'
        ' data_type: TYPE_INT32 dims: [ 1 ] input_data_file: "minus" } } } ]\n'))
    _warmup_file(repo, "bad_python", "minus", struct.pack("<i", -1))
    _copy_example(repo, "simple", "bad_sample", _zero_sample("stranger", [
        ("INPUT0", "TYPE_INT32", 16), ("INPUT1", "TYPE_INT32", 16), ("INPUT9", "TYPE_INT32", 16)]))
    _copy_example(repo, "simple", "bad_shape", _zero_sample("wide", [
        ("INPUT0", "TYPE_INT32", 17), ("INPUT1", "TYPE_INT32", 16)]))
    _copy_example(repo, "simple_ensemble", "bad_ensemble", _zero_sample("ens", [
        ("INPUT0", "TYPE_INT32", 16), ("INPUT1", "TYPE_INT32", 16)]))
    shutil.copytree(EXAMPLES / "simple_identity", repo / "simple_identity", dirs_exist_ok=True)
    shutil.copytree(EXAMPLES / "simple", repo / "simple", dirs_exist_ok=True)

    if HAVE_TF:
        _copy_example(repo, "mlp_savedmodel", "warm_tf", "instance_group [ { count: 2 kind: KIND_CPU } ]\n")
        # CheckNumerics fails on the NaN of the sample: a run-time failure.
        (repo / "bad_tf" / "1").mkdir(parents=True)
        shutil.copy(ROOT / "backends" / "tensorflow" / "testdata" / "models" / "check_numerics.graphdef",
                    repo / "bad_tf" / "1" / "model.graphdef")
        (repo / "bad_tf" / "config.pbtxt").write_text(
            'name: "bad_tf"\nplatform: "tensorflow_graphdef"\nmax_batch_size: 8\n'
            'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
            'output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]\n'
            'model_warmup [ { name: "nan" batch_size: 1 inputs { key: "INPUT0" value {'
            ' data_type: TYPE_FP32 dims: [ 4 ] input_data_file: "nan" } } } ]\n')
        _warmup_file(repo, "bad_tf", "nan", np.array([0, 0, np.nan, 0], np.float32).tobytes())
    return repo


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    from conftest import NereidFactory, _factory_teardown

    repo = build_repo(tmp_path_factory.mktemp("warm_repo"))
    factory = NereidFactory(tmp_path_factory.mktemp("warm_server"))
    yield factory.start(repo, ["--log-verbose=1", "--exit-on-error=false", "--strict-readiness=false"])
    _factory_teardown(factory)


def warmed_up(server) -> dict[str, list[str]]:
    """The "instance warmed up" lines of the server's log, by model."""
    out: dict[str, list[str]] = {}
    for line in server.log_path.read_text(errors="replace").splitlines():
        if "instance warmed up" in line:
            m = re.search(r"model[=:\"]+([A-Za-z0-9_]+)", line)
            out.setdefault(m.group(1) if m else "?", []).append(line)
    return out


def field(line: str, key: str) -> int:
    m = re.search(key + r"[=:\"]+(\d+)", line)
    assert m, (key, line)
    return int(m.group(1))


def test_index_states_and_reasons(warm):
    idx = {m["name"]: m for m in warm.http().get_model_repository_index()}
    ready = ["warm_onnx", "warm_sequence", "warm_python", "warm_python_stream", "warm_square", "simple"]
    bad = ["bad_python", "bad_sample", "bad_shape", "bad_ensemble"]
    if HAVE_TF:
        ready.append("warm_tf")
        bad.append("bad_tf")
    for n in ready:
        assert idx[n]["state"] == "READY", (n, idx[n])
    for n in bad:
        assert idx[n]["state"] == "UNAVAILABLE", (n, idx[n])
    reason = {n: idx[n]["reason"] for n in bad}
    assert "warm-up sample 'negative' failed" in reason["bad_python"] and "negative input" in reason["bad_python"]
    assert "warm-up sample 'stranger'" in reason["bad_sample"] and "'INPUT9' is not an input" in reason["bad_sample"]
    assert "warm-up sample 'wide'" in reason["bad_shape"] and "unexpected shape for input 'INPUT0'" in reason["bad_shape"]
    assert "model_warmup can not be specified for ensemble 'bad_ensemble'" in reason["bad_ensemble"]
    if HAVE_TF:
        assert "warm-up sample 'nan' failed" in reason["bad_tf"] and "NaN" in reason["bad_tf"], reason["bad_tf"]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_python_instances_warmed_before_first_request(warm, protocol):
    """Each of the two instances ran three warm-up executions: whichever
    serves the request, its execute call is the fourth or later; never
    the first."""
    x = np.zeros((1, 1), np.int32)
    if protocol == "http":
        calls = warm.http().infer("warm_python", http_inputs([x], ["INT32"])).as_numpy("CALLS")
    else:
        calls = warm.grpc().infer("warm_python", grpc_inputs([x], ["INT32"])).as_numpy("CALLS")
    assert calls.item() >= 4, calls


def test_every_instance_logged_and_statistics_untouched(warm):
    lines = warmed_up(warm)
    expect = {  # model: (instances, executions, responses) per instance
        "warm_onnx": (2, 2, 6),
        "warm_sequence": (1, 1, 2),
        "warm_python": (2, 3, 6),
        "warm_python_stream": (1, 2, 4),  # decoupled: every response consumed
        "warm_square": (1, 1, 3),
    }
    if HAVE_TF:
        expect["warm_tf"] = (2, 1, 1)  # mlp_savedmodel's own "zeros" sample
    for model, (instances, executions, responses) in expect.items():
        got = lines.get(model, [])
        assert len(got) == instances, (model, got)
        for line in got:
            assert field(line, "executions") == executions and field(line, "responses") == responses, line
    # Warm-up executions are not inference: a model nothing asked yet has
    # no executions in its statistics.
    for model in ["warm_onnx", "warm_square"] + (["warm_tf"] if HAVE_TF else []):
        stats = warm.http().get_inference_statistics(model)["model_stats"][0]
        assert int(stats.get("execution_count", 0)) == 0, (model, stats)


def test_warmed_models_serve(warm):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    r = warm.grpc().infer("warm_onnx", grpc_inputs([a, a], ["INT32", "INT32"]))
    np.testing.assert_array_equal(r.as_numpy("OUTPUT0"), 2 * a)
    if HAVE_TF:
        x = np.zeros((2, 64), np.float32)
        tf_out = warm.http().infer("warm_tf", http_inputs([x], ["FP32"])).as_numpy("OUTPUT0")
        assert tf_out.shape == (2, 16)
