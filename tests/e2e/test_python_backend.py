"""The Python backend (`backend: "python"`) end to end: the example models of
model_repo_examples that run Triton `model.py` files unchanged, over HTTP and
gRPC with tritonclient, and the backend's behaviour when a model misbehaves
or its stub process dies.

Every expectation follows Triton's documented Python backend behaviour, so
the same tests run against a real Triton: tests/e2e/test_python_oracle.py
runs this module with the `server_cls` fixture swapped (and Python stand-ins
for the ONNX models that the real server here cannot load).

The server side: one model instance is one stub process, a child of the
server. Tests that need to know which stub serves a model ask the model for
its pid (the `pid_python` test model).
"""

from __future__ import annotations

import json
import os
import pathlib
import queue
import shutil
import signal
import subprocess
import textwrap
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from e2e_util import scrape
from conftest import (
    EXAMPLES,
    IN_FLIGHT_WAIT_S,
    PYTHON_STUB_EXE,
    Nereid,
    NereidFactory,
    _factory_teardown,
    _free_ports,
    wait_for,
)

# Every client call and every wait has a bound.
TIMEOUT_S = 30
# A stub that was killed must be replaced within this time.
RESTART_TIMEOUT_S = 60

PROTOCOLS = ["http", "grpc"]

# The Python examples, and the ONNX models some of them call.
PY_EXAMPLES = [
    "add_sub",
    "autocomplete_python",
    "bls_decoupled",
    "identity_python",
    "metric_python",
    "repeat_python",
    "simple_pre",
    "simple_select",
    "simple_text",
]
ONNX_PEERS = ["simple", "simple_int8", "identity_fp32"]
# Built-in Nereid examples to compare with (left out on other servers).
NEREID_PEERS = ["repeat_int32"]


# --------------------------------------------------------------------------
# Servers: Nereid here, a real Triton in test_python_oracle.py


@pytest.fixture(scope="module")
def server_cls():
    """The server under test: bin/nereid (test_python_oracle.py overrides it)."""
    return Nereid


def kind(cls) -> str:
    return getattr(cls, "kind", "nereid")


class Factory(NereidFactory):
    """NereidFactory for any server class with Nereid's interface."""

    def __init__(self, log_dir: pathlib.Path, cls):
        super().__init__(log_dir)
        self.cls = cls

    def start(self, repo, flags=(), wait=True):
        n = len(self.servers)
        s = self.cls(repo=repo, flags=list(flags), log_path=self.log_dir / f"{kind(self.cls)}-{n}.log")
        self.servers.append(s)
        return s.start(wait=wait)


@pytest.fixture
def servers(tmp_path, server_cls):
    """servers.start(repo, flags) -> a live server; each must stop with status 0."""
    factory = Factory(tmp_path, server_cls)
    yield factory
    _factory_teardown(factory)


def python_standin(repo: pathlib.Path, name: str):
    """A Python model with the configuration of the ONNX example `name`, for a
    server without ONNX Runtime. add_sub and identity_python compute what
    simple/simple_int8 and identity_fp32 do."""
    src = EXAMPLES / name / "config.pbtxt"
    config = src.read_text().replace('platform: "onnxruntime_onnx"', 'backend: "python"')
    assert 'backend: "python"' in config, name
    body = "identity_python" if name.startswith("identity") else "add_sub"
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(config)
    shutil.copy(EXAMPLES / body / "1" / "model.py", repo / name / "1" / "model.py")


def build_examples_repo(repo: pathlib.Path, server_cls, models=None) -> pathlib.Path:
    """The Python examples (or `models` of them) and the ONNX models they call."""
    repo.mkdir(parents=True, exist_ok=True)
    for name in models or PY_EXAMPLES:
        shutil.copytree(EXAMPLES / name, repo / name)
    for name in ONNX_PEERS:
        if kind(server_cls) == "nereid":
            shutil.copytree(EXAMPLES / name, repo / name)
        else:
            python_standin(repo, name)
    if kind(server_cls) == "nereid":
        for name in NEREID_PEERS:
            shutil.copytree(EXAMPLES / name, repo / name)
    return repo


@pytest.fixture(scope="module")
def examples(tmp_path_factory, server_cls):
    """One server (model control mode none) with every Python example loaded."""
    tmp = tmp_path_factory.mktemp("python_examples")
    factory = Factory(tmp, server_cls)
    s = factory.start(build_examples_repo(tmp / "repo", server_cls))
    wait_for(lambda: call(s, "http", "is_server_ready"), timeout=TIMEOUT_S, what="all examples ready")
    yield s
    _factory_teardown(factory)


def write_py_model(repo: pathlib.Path, name: str, config: str, model_py: str | None) -> pathlib.Path:
    """<repo>/<name>/config.pbtxt and, unless model_py is None, 1/model.py."""
    d = repo / name
    (d / "1").mkdir(parents=True, exist_ok=True)
    (d / "config.pbtxt").write_text(textwrap.dedent(config).lstrip())
    if model_py is not None:
        (d / "1" / "model.py").write_text(textwrap.dedent(model_py).lstrip())
    return d


def io_config(name, inputs, outputs, max_batch_size=0, extra=""):
    """config.pbtxt text; inputs/outputs: (name, TYPE_x, dims)."""

    def block(kind_, tensors):
        return f"{kind_} [\n" + ",\n".join(
            f'  {{ name: "{n}" data_type: {t} dims: [ {", ".join(map(str, d))} ] }}' for n, t, d in tensors
        ) + "\n]\n"

    return (
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch_size}\n'
        + block("input", inputs)
        + block("output", outputs)
        + 'instance_group [ { count: 1 kind: KIND_CPU } ]\n'
        + extra
    )


# --------------------------------------------------------------------------
# Clients


def infer(server, protocol, model, inputs, outputs=None, request_id="", timeout=TIMEOUT_S):
    """One inference; inputs: [(name, array, datatype)]. Returns {output: array}."""
    mod = httpclient if protocol == "http" else grpcclient
    client = (
        server.http(connection_timeout=timeout, network_timeout=timeout) if protocol == "http" else server.grpc()
    )
    try:
        ins = []
        for name, arr, datatype in inputs:
            i = mod.InferInput(name, list(arr.shape), datatype)
            i.set_data_from_numpy(arr)
            ins.append(i)
        outs = [mod.InferRequestedOutput(n) for n in outputs] if outputs else None
        kw = {"client_timeout": timeout} if protocol == "grpc" else {}
        result = client.infer(model, ins, outputs=outs, request_id=request_id, **kw)
        resp = result.get_response()
        names = [o["name"] for o in resp["outputs"]] if protocol == "http" else [o.name for o in resp.outputs]
        return {n: result.as_numpy(n) for n in names}
    finally:
        client.close()


def call(server, protocol, method, *args, **kwargs):
    """One call on a client of its own, closed afterwards: a server waits
    for open HTTP connections when it shuts down."""
    client = (
        server.http(connection_timeout=TIMEOUT_S, network_timeout=TIMEOUT_S) if protocol == "http" else server.grpc()
    )
    try:
        return getattr(client, method)(*args, **kwargs)
    finally:
        client.close()


def infer_error(server, protocol, model, inputs, timeout=TIMEOUT_S) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as e:
        infer(server, protocol, model, inputs, timeout=timeout)
    return e.value


def status_of(err: InferenceServerException, protocol: str, http: str, grpc: str):
    """Asserts the HTTP status or gRPC code of an error."""
    want = http if protocol == "http" else f"StatusCode.{grpc}"
    assert err.status() == want, (err.status(), err.message())


def int32s(n=16, lo=-1000, hi=1000, rows=None, seed=0):
    rng = np.random.default_rng(seed)
    shape = (rows, n) if rows else (n,)
    return rng.integers(lo, hi, size=shape, dtype=np.int32)


class Stream:
    """A tritonclient gRPC stream whose callbacks land in a queue."""

    def __init__(self, server):
        self.client = server.grpc()
        self.results = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.results.put((result, error)))

    def send(self, model, inputs, request_id="", **kw):
        ins = []
        for name, arr, datatype in inputs:
            i = grpcclient.InferInput(name, list(arr.shape), datatype)
            i.set_data_from_numpy(arr)
            ins.append(i)
        self.client.async_stream_infer(model, ins, request_id=request_id, **kw)

    def get(self):
        return self.results.get(timeout=TIMEOUT_S)

    def until_final(self, limit=1000):
        """Responses of one request up to and including its final one."""
        got = []
        for _ in range(limit):
            result, error = self.get()
            assert error is None, error
            got.append(result)
            if result.get_response().parameters["triton_final_response"].bool_param:
                return got
        pytest.fail(f"no final response in {limit}")

    def close(self):
        self.client.stop_stream()
        self.client.close()


# --------------------------------------------------------------------------
# Processes


def _ppid_and_state(pid: int):
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None, None
    # The command name is in parentheses and may hold spaces.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0]


def children(pid: int) -> set[int]:
    """Child processes of pid, zombies included (nobody reaped them yet)."""
    if any(pathlib.Path("/proc/self/task").glob("*/children")):
        kids = set()
        for task in pathlib.Path(f"/proc/{pid}/task").glob("*/children"):
            try:
                kids.update(int(x) for x in task.read_text().split())
            except OSError:
                pass
        return kids
    # Kernels without /proc/<pid>/task/<tid>/children: scan every process.
    return {int(p.name) for p in pathlib.Path("/proc").iterdir() if p.name.isdigit() and _ppid_and_state(int(p.name))[0] == pid}


def alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    _, state = _ppid_and_state(pid)
    return state is not None and state != "Z"


def dev_shm() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except FileNotFoundError:
        return set()


def _shm_mappers() -> dict[str, set[int]]:
    """/dev/shm name -> the pids that have it mapped."""
    out: dict[str, set[int]] = {}
    for p in pathlib.Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            maps = (p / "maps").read_text()
        except OSError:
            continue
        for line in maps.splitlines():
            i = line.find("/dev/shm/")
            if i >= 0:
                out.setdefault(line[i + len("/dev/shm/") :].split(" ")[0], set()).add(int(p.name))
    return out


def new_shm(before: set[str], ours: set[int]) -> set[str]:
    """/dev/shm entries added since `before` that are not some other live
    process's: mapped by nobody, or only by the pids in `ours`. (Other
    servers may run on the machine at the same time.)"""
    mappers = _shm_mappers()
    return {n for n in dev_shm() - before if not mappers.get(n) or mappers[n] <= ours}


# --------------------------------------------------------------------------
# add_sub: the Python twin of simple


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_add_sub_matches_simple(examples, protocol):
    a, b = int32s(rows=3, seed=1), int32s(rows=3, seed=2)
    inputs = [("INPUT0", a, "INT32"), ("INPUT1", b, "INT32")]
    got = infer(examples, protocol, "add_sub", inputs)
    assert set(got) == {"OUTPUT0", "OUTPUT1"}
    assert got["OUTPUT0"].dtype == np.int32 and got["OUTPUT0"].shape == (3, 16)
    np.testing.assert_array_equal(got["OUTPUT0"], a + b)
    np.testing.assert_array_equal(got["OUTPUT1"], a - b)
    # The same answer as the ONNX model it mirrors.
    onnx = infer(examples, protocol, "simple", inputs)
    for name in ("OUTPUT0", "OUTPUT1"):
        assert got[name].tobytes() == onnx[name].tobytes()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_add_sub_requested_output_only(examples, protocol):
    a, b = int32s(seed=3).reshape(1, 16), int32s(seed=4).reshape(1, 16)
    got = infer(examples, protocol, "add_sub", [("INPUT0", a, "INT32"), ("INPUT1", b, "INT32")], outputs=["OUTPUT1"])
    assert list(got) == ["OUTPUT1"]
    np.testing.assert_array_equal(got["OUTPUT1"], a - b)


def test_add_sub_output_types_come_from_config(servers, tmp_path, server_cls):
    """model.py reads its output types from args['model_config']: with
    OUTPUT0 declared FP64 in config.pbtxt, the sum comes back as FP64."""
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "add_sub", repo / "add_sub_fp64")
    cfg = repo / "add_sub_fp64" / "config.pbtxt"
    text = cfg.read_text().replace('name: "add_sub"', 'name: "add_sub_fp64"')
    head, sep, tail = text.partition('name: "OUTPUT0"')
    cfg.write_text(head + sep + tail.replace("TYPE_INT32", "TYPE_FP64", 1))
    s = servers.start(repo)
    a, b = int32s(rows=2, seed=5), int32s(rows=2, seed=6)
    for protocol in PROTOCOLS:
        got = infer(s, protocol, "add_sub_fp64", [("INPUT0", a, "INT32"), ("INPUT1", b, "INT32")])
        assert got["OUTPUT0"].dtype == np.float64
        np.testing.assert_array_equal(got["OUTPUT0"], (a + b).astype(np.float64))
        assert got["OUTPUT1"].dtype == np.int32


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_add_sub_batch_limit(examples, protocol):
    a = int32s(rows=9, seed=7)
    err = infer_error(examples, protocol, "add_sub", [("INPUT0", a, "INT32"), ("INPUT1", a, "INT32")])
    assert "batch-size must be <= 8 for 'add_sub'" in err.message(), err.message()
    status_of(err, protocol, "400", "INVALID_ARGUMENT")


# --------------------------------------------------------------------------
# identity_python: the benchmark twin of identity_fp32


def test_identity_python_metadata_matches_identity_fp32(examples):
    """One perf_analyzer command line fits both: same tensors, same batching."""
    py = call(examples, "http", "get_model_metadata", "identity_python")
    onnx = call(examples, "http", "get_model_metadata", "identity_fp32")
    assert py["inputs"] == onnx["inputs"]
    assert py["outputs"] == onnx["outputs"]
    assert py["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, -1]}]
    assert call(examples, "http", "get_model_config", "identity_python")["max_batch_size"] == 8
    assert py["platform"] == "python"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_identity_python_echoes_exactly(examples, protocol):
    data = np.array([[0.0, -1.5, 3.4028235e38, 1e-45, np.nan, -np.inf]] * 2, dtype=np.float32)
    got = infer(examples, protocol, "identity_python", [("INPUT0", data, "FP32")])
    assert got["OUTPUT0"].dtype == np.float32 and got["OUTPUT0"].shape == data.shape
    assert got["OUTPUT0"].tobytes() == data.tobytes()
    onnx = infer(examples, protocol, "identity_fp32", [("INPUT0", data, "FP32")])
    assert onnx["OUTPUT0"].tobytes() == got["OUTPUT0"].tobytes()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_identity_python_large_tensor(examples, protocol):
    """16 MiB in and out: bigger than any default shared-memory chunk."""
    data = np.random.default_rng(8).standard_normal((8, 1 << 19), dtype=np.float32)
    got = infer(examples, protocol, "identity_python", [("INPUT0", data, "FP32")], timeout=60)
    assert got["OUTPUT0"].tobytes() == data.tobytes()


def test_identity_python_concurrent_requests(examples):
    """Requests from many threads to one instance each get their own answer."""
    errors, done = [], []

    def worker(i):
        try:
            data = np.full((1, 100 + i), float(i), dtype=np.float32)
            got = infer(examples, "grpc" if i % 2 else "http", "identity_python", [("INPUT0", data, "FP32")])
            assert got["OUTPUT0"].tobytes() == data.tobytes()
            done.append(i)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((i, e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT_S)
    assert not errors, errors
    assert sorted(done) == list(range(16))


# --------------------------------------------------------------------------
# simple_pre and the ensemble simple_text: Python preprocessing feeding ONNX


def text_tensor(*rows):
    return np.array([[",".join(str(v) for v in r).encode()] for r in rows], dtype=np.object_)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_simple_pre_parses_text(examples, protocol):
    v1, v2 = list(range(1, 17)), [int(x) for x in int32s(seed=9)]
    got = infer(examples, protocol, "simple_pre", [("TEXT", text_tensor(v1, v2), "BYTES")])
    assert got["INPUT0"].dtype == np.int32 and got["INPUT0"].shape == (2, 16)
    np.testing.assert_array_equal(got["INPUT0"], [v1, v2])
    np.testing.assert_array_equal(got["INPUT1"], [v1[::-1], v2[::-1]])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_simple_pre_rejects_bad_text(examples, protocol):
    err = infer_error(examples, protocol, "simple_pre", [("TEXT", text_tensor([1, 2, 3]), "BYTES")])
    assert "TEXT must hold 16 comma-separated integers, got 3 fields" in err.message(), err.message()
    status_of(err, protocol, "400", "INVALID_ARGUMENT")
    bad = np.array([[b"1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,sixteen"]], dtype=np.object_)
    err = infer_error(examples, protocol, "simple_pre", [("TEXT", bad, "BYTES")])
    assert "TEXT field 'sixteen' is not an integer" in err.message(), err.message()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_simple_text_ensemble(examples, protocol):
    rows = [list(range(1, 17)), [int(x) for x in int32s(seed=10)], [0] * 15 + [2147483647]]
    got = infer(examples, protocol, "simple_text", [("TEXT", text_tensor(*rows), "BYTES")])
    assert set(got) == {"OUTPUT0", "OUTPUT1"}
    v = np.array(rows, dtype=np.int32)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(got["OUTPUT0"], v + v[:, ::-1])
        np.testing.assert_array_equal(got["OUTPUT1"], v - v[:, ::-1])
    # OUTPUT0 reads the same both ways.
    np.testing.assert_array_equal(got["OUTPUT0"], got["OUTPUT0"][:, ::-1])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_simple_text_passes_step_error(examples, protocol):
    err = infer_error(examples, protocol, "simple_text", [("TEXT", text_tensor(list(range(20))), "BYTES")])
    assert "TEXT must hold 16 comma-separated integers, got 20 fields" in err.message(), err.message()


# --------------------------------------------------------------------------
# simple_select: BLS that picks the model at run time


def select_inputs(a, b, model, rows=1):
    return [
        ("INPUT0", a, "INT32"),
        ("INPUT1", b, "INT32"),
        ("MODEL", np.array([[model.encode()]] * rows, dtype=np.object_), "BYTES"),
    ]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_simple_select_calls_simple(examples, protocol):
    a, b = int32s(rows=2, seed=11), int32s(rows=2, seed=12)
    got = infer(examples, protocol, "simple_select", select_inputs(a, b, "simple", rows=2))
    assert got["OUTPUT0"].dtype == np.int32
    np.testing.assert_array_equal(got["OUTPUT0"], a + b)
    np.testing.assert_array_equal(got["OUTPUT1"], a - b)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_simple_select_calls_simple_int8(examples, protocol):
    a = np.array([[100, -128, 127, 5] * 4], dtype=np.int32)
    b = np.array([[100, -1, 1, -7] * 4], dtype=np.int32)
    got = infer(examples, protocol, "simple_select", select_inputs(a, b, "simple_int8"))
    # INT8 arithmetic, returned as INT32: it wraps around.
    assert got["OUTPUT0"].dtype == np.int32
    assert list(got["OUTPUT0"][0, :4]) == [-56, 127, -128, -2]
    assert list(got["OUTPUT1"][0, :4]) == [0, -127, 126, 12]
    direct = infer(
        examples, protocol, "simple_int8", [("INPUT0", a.astype(np.int8), "INT8"), ("INPUT1", b.astype(np.int8), "INT8")]
    )
    np.testing.assert_array_equal(got["OUTPUT0"], direct["OUTPUT0"].astype(np.int32))
    np.testing.assert_array_equal(got["OUTPUT1"], direct["OUTPUT1"].astype(np.int32))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_simple_select_refuses_bad_selection(examples, protocol):
    a = int32s(seed=13).reshape(1, 16)
    err = infer_error(examples, protocol, "simple_select", select_inputs(a, a, "add_sub"))
    assert "MODEL must be one of simple, simple_int8, got 'add_sub'" in err.message(), err.message()
    status_of(err, protocol, "400", "INVALID_ARGUMENT")
    big = np.full((1, 16), 300, dtype=np.int32)
    err = infer_error(examples, protocol, "simple_select", select_inputs(big, a, "simple_int8"))
    assert "simple_int8 takes values in [-128, 127]" in err.message(), err.message()


def test_simple_select_returns_called_model_error(servers, tmp_path, server_cls):
    """A BLS call to a model that is not loaded fails; the caller turns that
    into its own error response, with the server's reason in the text."""
    repo = build_examples_repo(tmp_path / "repo", server_cls, models=["simple_select"])
    s = servers.start(repo, ["--model-control-mode=explicit", "--load-model=simple_select", "--load-model=simple_int8"])
    a = np.arange(-8, 8, dtype=np.int32).reshape(1, 16)
    for protocol in PROTOCOLS:
        err = infer_error(s, protocol, "simple_select", select_inputs(a, a, "simple"))
        msg = err.message()
        assert "calling simple failed: " in msg, msg
        assert "'simple'" in msg, msg
    # The other model still answers, and so does simple once it is loaded.
    got = infer(s, "http", "simple_select", select_inputs(a, a, "simple_int8"))
    np.testing.assert_array_equal(got["OUTPUT0"], a + a)
    call(s, "http", "load_model", "simple")
    got = infer(s, "grpc", "simple_select", select_inputs(a, a, "simple"))
    np.testing.assert_array_equal(got["OUTPUT0"], a + a)


def test_simple_select_traces_its_call(servers, tmp_path, server_cls):
    """A BLS request given trace=request.trace() is traced as a child of the
    sampled request (its parent_id), with the core's timestamps."""
    if kind(server_cls) != "nereid":
        pytest.skip("Nereid's trace file format")
    repo = build_examples_repo(tmp_path / "repo", server_cls, models=["simple_select"])
    trace_file = tmp_path / "trace.json"
    s = servers.start(repo, [f"--trace-config=triton,file={trace_file}", "--trace-config=level=TIMESTAMPS",
                             "--trace-config=rate=1"])
    a = np.arange(-8, 8, dtype=np.int32).reshape(1, 16)
    for protocol in PROTOCOLS:
        np.testing.assert_array_equal(infer(s, protocol, "simple_select", select_inputs(a, a, "simple"))["OUTPUT0"], a + a)
    s.stop_gracefully()
    records = json.loads(trace_file.read_text())
    heads = [r for r in records if "model_name" in r]
    stamps = {}
    for r in records:
        stamps.setdefault(r["id"], []).extend(t["name"] for t in r.get("timestamps", []))
    parents = [h for h in heads if h["model_name"] == "simple_select"]
    assert len(parents) == 2, heads
    for p in parents:
        assert "parent_id" not in p
        calls = [h for h in heads if h.get("parent_id") == p["id"]]
        assert [h["model_name"] for h in calls] == ["simple"], heads
        assert calls[0]["model_version"] == 1
        assert "COMPUTE_START" in stamps[calls[0]["id"]] and "REQUEST_END" in stamps[calls[0]["id"]]
    assert len(heads) == 4, heads


# --------------------------------------------------------------------------
# repeat_python: decoupled, responses from a thread


def repeat_inputs(values, delays_ms=None):
    ins = [("IN", np.array(values, dtype=np.int32), "INT32")]
    if delays_ms is not None:
        ins.append(("DELAY", np.array(delays_ms, dtype=np.uint32), "UINT32"))
    return ins


def test_repeat_python_streams_in_order(examples):
    values = [4, 8, 15, 16, 23, 42]
    stream = Stream(examples)
    try:
        t0 = time.monotonic()
        stream.send("repeat_python", repeat_inputs(values, [30] * len(values)), request_id="rp", enable_empty_final_response=True)
        got = stream.until_final()
        elapsed = time.monotonic() - t0
    finally:
        stream.close()
    assert len(got) == len(values) + 1
    for i, (result, want) in enumerate(zip(got, values)):
        resp = result.get_response()
        assert resp.id == "rp"
        assert resp.parameters["triton_final_response"].bool_param is False
        assert result.as_numpy("OUT").tolist() == [want]
        assert result.as_numpy("OUT").dtype == np.int32
        assert result.as_numpy("IDX").tolist() == [i]
        assert result.as_numpy("IDX").dtype == np.uint32
    # The final flag comes alone, in an empty response.
    final = got[-1].get_response()
    assert final.id == "rp"
    assert final.parameters["triton_final_response"].bool_param is True
    assert len(final.outputs) == 0
    assert elapsed >= len(values) * 0.030 * 0.9


def test_repeat_python_without_empty_final(examples):
    """Without enable_empty_final_response the client sees only the data."""
    stream = Stream(examples)
    try:
        stream.send("repeat_python", repeat_inputs([1, 2, 3]), request_id="nf")
        got = [stream.get() for _ in range(3)]
        for (result, error), want in zip(got, [1, 2, 3]):
            assert error is None, error
            assert result.as_numpy("OUT").tolist() == [want]
        # Nothing else arrives for it: the next answer is the next request's.
        stream.send("repeat_python", repeat_inputs([9]), request_id="next")
        result, error = stream.get()
        assert error is None, error
        assert result.get_response().id == "next"
    finally:
        stream.close()


def test_repeat_python_interleaves_requests(examples):
    """execute returns at once, so one instance streams two requests together."""
    stream = Stream(examples)
    try:
        stream.send("repeat_python", repeat_inputs([7, 8, 9], [150, 150, 150]), request_id="slow")
        stream.send("repeat_python", repeat_inputs([1, 2], [1, 1]), request_id="fast")
        order, per = [], {"slow": [], "fast": []}
        for _ in range(5):
            result, error = stream.get()
            assert error is None, error
            rid = result.get_response().id
            order.append(rid)
            per[rid].append((int(result.as_numpy("OUT")[0]), int(result.as_numpy("IDX")[0])))
    finally:
        stream.close()
    assert per == {"slow": [(7, 0), (8, 1), (9, 2)], "fast": [(1, 0), (2, 1)]}
    assert order.index("fast") < order.index("slow"), order


def test_repeat_python_empty_input_sends_final_only(examples):
    stream = Stream(examples)
    try:
        stream.send("repeat_python", repeat_inputs([]), request_id="empty", enable_empty_final_response=True)
        got = stream.until_final()
    finally:
        stream.close()
    assert len(got) == 1
    assert len(got[0].get_response().outputs) == 0


def test_repeat_python_error_response(examples):
    stream = Stream(examples)
    try:
        stream.send("repeat_python", repeat_inputs([1, 2, 3], [5]), request_id="bad")
        result, error = stream.get()
        assert result is None
        assert error is not None
        assert "DELAY has 1 elements but IN has 3" in error.message(), error.message()
        # The stream and the model go on serving.
        stream.send("repeat_python", repeat_inputs([5]), request_id="ok")
        result, error = stream.get()
        assert error is None, error
        assert result.as_numpy("OUT").tolist() == [5]
    finally:
        stream.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_repeat_python_refused_on_unary(examples, protocol):
    err = infer_error(examples, protocol, "repeat_python", repeat_inputs([1]))
    if protocol == "grpc":
        status_of(err, protocol, "", "UNIMPLEMENTED")
        assert "ModelInfer RPC doesn't support models with decoupled transaction policy" in err.message()
    else:
        assert "HTTP end point doesn't support models with decoupled transaction policy" in err.message()


def test_repeat_python_matches_repeat_int32(examples, server_cls):
    """The same stream as Nereid's built-in decoupled example sends."""
    if kind(server_cls) != "nereid":
        pytest.skip("repeat_int32 is a Nereid backend")
    values = [3, 1, 4, 1, 5]
    streams = {}
    for model, extra in (
        ("repeat_python", []),
        ("repeat_int32", [("WAIT", np.array([0], dtype=np.uint32), "UINT32")]),
    ):
        stream = Stream(examples)
        try:
            stream.send(model, repeat_inputs(values, [1] * len(values)) + extra, request_id="cmp", enable_empty_final_response=True)
            got = stream.until_final()
        finally:
            stream.close()
        streams[model] = [
            (
                r.get_response().id,
                r.get_response().parameters["triton_final_response"].bool_param,
                sorted((o.name, o.datatype, list(o.shape)) for o in r.get_response().outputs),
                None if r.as_numpy("OUT") is None else r.as_numpy("OUT").tolist(),
                None if r.as_numpy("IDX") is None else r.as_numpy("IDX").tolist(),
            )
            for r in got
        ]
    assert streams["repeat_python"] == streams["repeat_int32"]
    assert [s[3] for s in streams["repeat_python"]] == [[v] for v in values] + [None]


# --------------------------------------------------------------------------
# bls_decoupled: BLS into the decoupled model


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("values", [list(range(1, 11)), [], [-5, 2147483647 - 10, 5]], ids=["ten", "empty", "edge"])
def test_bls_decoupled_sums_stream(examples, protocol, values):
    got = infer(examples, protocol, "bls_decoupled", [("IN", np.array(values, dtype=np.int32), "INT32")])
    assert got["SUM"].dtype == np.int32 and got["SUM"].shape == (1,)
    assert got["SUM"].tolist() == [sum(values)]
    assert got["COUNT"].tolist() == [len(values)]


# --------------------------------------------------------------------------
# metric_python: custom metrics on the metrics port


def test_metric_python_custom_metrics(servers, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "metric_python", repo / "metric_python")
    (metrics_port,) = _free_ports(1)
    s = servers.start(
        repo, ["--allow-metrics=true", f"--metrics-port={metrics_port}", "--metrics-address=127.0.0.1"]
    )
    sizes = [1, 3, 5, 20, 100, 0]
    for i, n in enumerate(sizes):
        data = np.arange(n, dtype=np.int32)
        got = infer(s, PROTOCOLS[i % 2], "metric_python", [("INPUT0", data, "INT32")])
        np.testing.assert_array_equal(got["OUTPUT0"], data)

    labels = {"model": "metric_python", "version": "1"}

    def val(samples, name, **extra):
        return samples.get((name, frozenset({**labels, **extra}.items())))

    def counted():
        samples, types, body = scrape(metrics_port)
        return val(samples, "nereid_example_requests_total") == len(sizes) and (samples, types, body)

    samples, types, body = wait_for(counted, timeout=TIMEOUT_S, what="the request counter")
    assert types["nereid_example_requests_total"] == "counter"
    assert types["nereid_example_request_elements"] == "histogram"
    assert "# HELP nereid_example_requests_total Requests executed by the metric_python example" in body
    assert val(samples, "nereid_example_request_elements_count") == len(sizes)
    assert val(samples, "nereid_example_request_elements_sum") == sum(sizes)
    # Cumulative buckets: <=1: {0, 1}; <=4: +3; <=16: +5; <=64: +20; +Inf: +100.
    want = {"1": 2, "4": 3, "16": 4, "64": 5, "+Inf": 6}
    for le, n in want.items():
        assert val(samples, "nereid_example_request_elements_bucket", le=le) == n, (le, body)
    # Nereid's own per-model metrics are there too.
    assert val(samples, "nv_inference_request_success") == len(sizes)


# --------------------------------------------------------------------------
# autocomplete_python: the configuration comes from model.py


def test_autocomplete_python_config(examples):
    cfg = call(examples, "http", "get_model_config", "autocomplete_python")
    assert cfg["name"] == "autocomplete_python"
    assert cfg["backend"] == "python"
    assert cfg["max_batch_size"] == 4
    assert "dynamic_batching" in cfg, cfg
    # An empty dynamic_batching gets the preferred size max_batch_size.
    assert cfg["dynamic_batching"].get("preferred_batch_size") == [4], cfg["dynamic_batching"]
    assert [(i["name"], i["data_type"], [int(d) for d in i["dims"]]) for i in cfg["input"]] == [
        ("INPUT0", "TYPE_FP32", [4])
    ]
    assert [(o["name"], o["data_type"], [int(d) for d in o["dims"]]) for o in cfg["output"]] == [
        ("OUTPUT0", "TYPE_FP32", [4])
    ]
    g = call(examples, "grpc", "get_model_config", "autocomplete_python").config
    assert g.max_batch_size == 4
    assert g.HasField("dynamic_batching")
    assert [(i.name, list(i.dims)) for i in g.input] == [("INPUT0", [4])]
    meta = call(examples, "http", "get_model_metadata", "autocomplete_python")
    assert meta["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 4]}]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_autocomplete_python_infers(examples, protocol):
    data = np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5
    got = infer(examples, protocol, "autocomplete_python", [("INPUT0", data, "FP32")])
    np.testing.assert_array_equal(got["OUTPUT0"], data * 2)


def test_autocomplete_disabled_leaves_config_as_written(servers, tmp_path):
    """--disable-auto-complete-config: auto_complete_config is not called. The
    model still loads (a Python model may declare no tensors), with the
    configuration as config.pbtxt has it, and INPUT0 is then unknown."""
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES / "autocomplete_python", repo / "autocomplete_python")
    s = servers.start(repo, ["--disable-auto-complete-config"])
    cfg = call(s, "http", "get_model_config", "autocomplete_python")
    assert cfg["max_batch_size"] == 0
    assert not cfg.get("input") and not cfg.get("output"), cfg
    assert "dynamic_batching" not in cfg, cfg
    err = infer_error(s, "http", "autocomplete_python", [("INPUT0", np.zeros((1, 4), np.float32), "FP32")])
    # Triton: "expected 0 inputs but got 1 inputs for model
    # 'autocomplete_python'. Got input(s) ['INPUT0'], ..."
    assert "INPUT0" in err.message() and "'autocomplete_python'" in err.message(), err.message()
    status_of(err, "http", "400", "")


# --------------------------------------------------------------------------
# Models that cannot load


ECHO_CONFIG = io_config("{name}", [("INPUT0", "TYPE_INT32", [-1])], [("OUTPUT0", "TYPE_INT32", [-1])])

ECHO_MODEL = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data)]))
        return responses
"""

# name -> (model.py or None for none, text the load error must contain)
BAD_MODELS = {
    "bad_no_file": (None, "model.py"),
    "bad_syntax": ("import numpy\n\ndef oops(:\n    pass\n", "SyntaxError"),
    "bad_import": ("import nereid_no_such_module_4821\n", "No module named 'nereid_no_such_module_4821'"),
    "bad_no_class": (
        "import triton_python_backend_utils as pb_utils\n\nclass SomeOtherModel:\n    pass\n",
        "TritonPythonModel",
    ),
    "bad_initialize": (
        "class TritonPythonModel:\n"
        "    def initialize(self, args):\n"
        "        raise ValueError('initialize refused: marker-7391 ' + args['model_name'])\n"
        "    def execute(self, requests):\n"
        "        return []\n",
        "initialize refused: marker-7391 bad_initialize",
    ),
}


@pytest.fixture
def bad_models(server_cls):
    if kind(server_cls) == "nereid":
        return BAD_MODELS
    # Triton 2.51 never finishes loading a model without model.py: its stub
    # logs "Python model file not found in '<path>'" and exits, and the load
    # waits for it forever.
    return {k: v for k, v in BAD_MODELS.items() if k != "bad_no_file"}


def write_bad_models(repo, bad_models):
    for name, (source, _) in bad_models.items():
        write_py_model(repo, name, ECHO_CONFIG.replace("{name}", name), source)
        if source is None:
            (repo / name / "1" / "README").write_text("model.py is missing on purpose\n")
    write_py_model(repo, "good_echo", ECHO_CONFIG.replace("{name}", "good_echo"), ECHO_MODEL)
    return repo


def test_bad_models_fail_to_load_with_python_error(servers, tmp_path, bad_models):
    repo = write_bad_models(tmp_path / "repo", bad_models)
    s = servers.start(repo, ["--model-control-mode=explicit"])
    for i, (name, (_, want)) in enumerate(bad_models.items()):
        with pytest.raises(InferenceServerException) as e:
            call(s, PROTOCOLS[i % 2], "load_model", name)
        assert want in e.value.message(), (name, e.value.message())
        assert name in e.value.message(), (name, e.value.message())
        assert not call(s, "http", "is_model_ready", name)
    index = {e["name"]: e for e in call(s, "http", "get_model_repository_index")}
    for name, (_, want) in bad_models.items():
        assert index[name]["state"] == "UNAVAILABLE", index[name]
        assert want in index[name]["reason"], (name, index[name])
    # A good model loads next to them, and the server stays up.
    call(s, "grpc", "load_model", "good_echo")
    got = infer(s, "http", "good_echo", [("INPUT0", np.array([1, 2], dtype=np.int32), "INT32")])
    assert got["OUTPUT0"].tolist() == [1, 2]


def test_bad_models_at_startup_are_listed_with_reason(servers, tmp_path, bad_models):
    """Model control mode none with --exit-on-error=false: the server starts,
    the bad models are UNAVAILABLE with the Python error as the reason."""
    repo = write_bad_models(tmp_path / "repo", bad_models)
    s = servers.start(repo, ["--exit-on-error=false", "--strict-readiness=false"])
    index = {e["name"]: e for e in call(s, "http", "get_model_repository_index")}
    for name, (_, want) in bad_models.items():
        assert index[name]["state"] == "UNAVAILABLE", index[name]
        assert want in index[name]["reason"], (name, index[name])
    assert index["good_echo"]["state"] == "READY"
    grpc_index = {m.name: m for m in call(s, "grpc", "get_model_repository_index").models}
    assert "SyntaxError" in grpc_index["bad_syntax"].reason


# --------------------------------------------------------------------------
# Models that fail at run time


RAISE_MODEL = """
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            if (data < 0).any():
                raise ValueError(f"negative input {int(data.min())} refused by execute")
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data)]))
        return responses
"""

COUNT_MODEL = """
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", data)]))
        return {RETURN}
"""

PID_MODEL = """
import json
import os
import sys
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            delay_ms = int(pb_utils.get_input_tensor_by_name(request, "DELAY_MS").as_numpy()[0])
            time.sleep(delay_ms / 1000)
            responses.append(
                pb_utils.InferenceResponse(
                    [
                        pb_utils.Tensor("PID", np.array([os.getpid()], dtype=np.int32)),
                        pb_utils.Tensor("EXE", np.array([sys.executable.encode()], dtype=np.object_)),
                        pb_utils.Tensor("PREFIX", np.array([sys.prefix.encode()], dtype=np.object_)),
                    ]
                )
            )
        return responses
"""
PID_CONFIG = io_config(
    "{name}",
    [("DELAY_MS", "TYPE_INT32", [1])],
    [("PID", "TYPE_INT32", [1]), ("EXE", "TYPE_STRING", [1]), ("PREFIX", "TYPE_STRING", [1])],
)


def runtime_repo(repo):
    write_py_model(repo, "raise_python", ECHO_CONFIG.replace("{name}", "raise_python"), RAISE_MODEL)
    write_py_model(
        repo, "too_few", ECHO_CONFIG.replace("{name}", "too_few"), COUNT_MODEL.replace("{RETURN}", "out[:-1]")
    )
    write_py_model(
        repo, "too_many", ECHO_CONFIG.replace("{name}", "too_many"), COUNT_MODEL.replace("{RETURN}", "out + out")
    )
    write_py_model(repo, "returns_none", ECHO_CONFIG.replace("{name}", "returns_none"), COUNT_MODEL.replace("{RETURN}", "None"))
    write_py_model(repo, "pid_python", PID_CONFIG.replace("{name}", "pid_python"), PID_MODEL)
    return repo


@pytest.fixture(scope="module")
def runtime(tmp_path_factory, server_cls):
    tmp = tmp_path_factory.mktemp("python_runtime")
    factory = Factory(tmp, server_cls)
    s = factory.start(runtime_repo(tmp / "repo"))
    yield s
    _factory_teardown(factory)


def ints(*v):
    return [("INPUT0", np.array(v, dtype=np.int32), "INT32")]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_execute_exception_fails_request_only(runtime, protocol):
    err = infer_error(runtime, protocol, "raise_python", ints(3, -7, 2))
    # Triton: "Failed to process the request(s) for model 'raise_python_0_0',
    # message: ValueError: negative input -7 refused by execute\n\nAt:\n  <traceback>"
    assert "ValueError: negative input -7 refused by execute" in err.message(), err.message()
    status_of(err, protocol, "500", "INTERNAL")
    # The next request to the same instance succeeds.
    got = infer(runtime, protocol, "raise_python", ints(3, 7, 2))
    assert got["OUTPUT0"].tolist() == [3, 7, 2]
    err = infer_error(runtime, protocol, "raise_python", ints(-1))
    assert "negative input -1 refused by execute" in err.message()


@pytest.mark.parametrize("model", ["too_few", "too_many", "returns_none"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_execute_wrong_number_of_responses(runtime, protocol, model, server_cls):
    if model == "returns_none" and kind(server_cls) != "nereid":
        pytest.skip("Triton 2.51 never answers a request whose non-decoupled execute returned None")
    err = infer_error(runtime, protocol, model, ints(1, 2))
    msg = err.message()
    assert msg, "an error without text"
    assert "Deadline Exceeded" not in msg and "timed out" not in msg, msg
    if model != "returns_none":
        # Triton: "Number of InferenceResponse objects do not match the
        # number of InferenceRequest objects. InferenceRequest(s) size is:1,
        # and InferenceResponse(s) size is:N"
        assert "InferenceResponse" in msg and "InferenceRequest" in msg, msg
        status_of(err, protocol, "500", "INTERNAL")
    # The server, and the other models, keep serving.
    assert infer(runtime, protocol, "raise_python", ints(5))["OUTPUT0"].tolist() == [5]


def pid_of(server, model="pid_python", protocol="http"):
    got = infer(server, protocol, model, [("DELAY_MS", np.array([0], dtype=np.int32), "INT32")])
    return int(got["PID"][0])


def test_stub_is_a_child_process(runtime):
    pid = pid_of(runtime)
    assert pid != runtime.proc.pid
    assert pid in children(runtime.proc.pid)
    assert alive(pid)
    # One instance: the same process serves every request.
    assert pid_of(runtime, protocol="grpc") == pid


def test_stub_killed_mid_request_is_restarted(servers, tmp_path, server_cls):
    repo = tmp_path / "repo"
    write_py_model(repo, "pid_python", PID_CONFIG.replace("{name}", "pid_python"), PID_MODEL)
    s = servers.start(repo)
    old = pid_of(s)
    assert old in children(s.proc.pid)

    outcome = {}

    def in_flight():
        t0 = time.monotonic()
        try:
            outcome["result"] = infer(
                s, "http", "pid_python", [("DELAY_MS", np.array([20000], dtype=np.int32), "INT32")], timeout=60
            )
        except InferenceServerException as e:
            outcome["error"] = e
        outcome["after_s"] = time.monotonic() - t0

    t = threading.Thread(target=in_flight)
    t.start()
    time.sleep(IN_FLIGHT_WAIT_S)
    os.kill(old, signal.SIGKILL)
    t.join(RESTART_TIMEOUT_S)
    assert not t.is_alive(), "the in-flight request did not end"
    assert "error" in outcome, f"the request on a killed stub succeeded: {outcome}"
    # Triton: "Stub process 'pid_python_0_0' is not healthy." (HTTP 500).
    assert "is not healthy" in outcome["error"].message(), outcome["error"].message()
    assert outcome["error"].status() == "500", outcome["error"].status()
    # It failed when the stub died, not after the model's 20 s of sleep.
    assert outcome["after_s"] < 15, outcome
    if kind(server_cls) != "nereid":
        # Triton 2.51 neither restarts the stub (every later request fails
        # the same way; upstream added a restart for issue #8604) nor reaps
        # it, and then hangs on SIGTERM: stop it here.
        s.proc.kill()
        s.proc.wait(TIMEOUT_S)
        for name in dev_shm():
            if name.startswith(f"nereid_oracle_{s.http_port}"):
                os.unlink(f"/dev/shm/{name}")
        pytest.skip("Triton 2.51 does not restart a stub that died")

    def answers():
        try:
            return pid_of(s)
        except InferenceServerException:
            return None

    new = wait_for(answers, timeout=RESTART_TIMEOUT_S, interval=0.5, what="a request after the restart")
    assert new != old
    assert new in children(s.proc.pid)
    wait_for(lambda: not alive(old), timeout=TIMEOUT_S, what="the killed stub to be gone")
    assert call(s, "http", "is_model_ready", "pid_python")


def test_unload_and_shutdown_leave_no_stub(servers, tmp_path):
    repo = tmp_path / "repo"
    write_py_model(repo, "pid_python", PID_CONFIG.replace("{name}", "pid_python"), PID_MODEL)
    shutil.copytree(EXAMPLES / "identity_python", repo / "identity_python")
    shm_before = dev_shm()
    s = servers.start(repo, ["--model-control-mode=explicit"])
    assert not {p for p in children(s.proc.pid) if alive(p)}, "a stub before any model loaded"

    call(s, "http", "load_model", "pid_python")
    stub = pid_of(s)
    assert stub in children(s.proc.pid)
    call(s, "grpc", "unload_model", "pid_python")
    wait_for(lambda: not alive(stub) and stub not in children(s.proc.pid), timeout=TIMEOUT_S, what="the stub to exit")
    ours = {s.proc.pid} | children(s.proc.pid)
    wait_for(lambda: not new_shm(shm_before, ours), timeout=TIMEOUT_S, what="/dev/shm to be as before the load")
    assert not call(s, "http", "is_model_ready", "pid_python")

    # Load again: a new stub; then shut the server down with it running.
    call(s, "http", "load_model", "pid_python")
    call(s, "http", "load_model", "identity_python")
    stub2 = pid_of(s)
    assert stub2 != stub
    stubs = {p for p in children(s.proc.pid) if alive(p)}
    assert stub2 in stubs and len(stubs) == 2, stubs
    server_pid = s.proc.pid
    s.stop_gracefully()
    for p in stubs:
        wait_for(lambda p=p: not alive(p), timeout=TIMEOUT_S, what=f"stub {p} to exit after shutdown")
    leaked = new_shm(shm_before, {server_pid} | stubs)
    assert not leaked, leaked


# --------------------------------------------------------------------------
# EXECUTION_ENV_PATH: a model runs in another Python environment


@pytest.fixture(scope="module")
def stub_python(server_cls):
    """The interpreter whose packages the server's default stubs use."""
    return PYTHON_STUB_EXE


@pytest.fixture(scope="module")
def second_env(tmp_path_factory, stub_python):
    """A virtualenv made from the stubs' Python, that sees the same numpy."""
    base = tmp_path_factory.mktemp("python_env")
    env = base / "env"
    try:
        subprocess.run(
            [str(stub_python), "-m", "venv", "--system-site-packages", "--without-pip", str(env)],
            check=True,
            capture_output=True,
            timeout=120,
        )
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"cannot make a virtualenv with {stub_python}: {e}")
    # --system-site-packages reaches the base interpreter's packages, not the
    # tests' venv's, where numpy is: add those with a .pth file.
    site = subprocess.run(
        [str(stub_python), "-c", "import numpy, os; print(os.path.dirname(os.path.dirname(numpy.__file__)))"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    env_site = subprocess.run(
        [str(env / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    (pathlib.Path(env_site) / "nereid_e2e_numpy.pth").write_text(site + "\n")
    check = subprocess.run([str(env / "bin" / "python"), "-c", "import numpy"], capture_output=True, timeout=60)
    if check.returncode != 0:
        pytest.skip(f"the second virtualenv cannot import numpy: {check.stderr.decode()}")
    return env


def test_execution_env_path_selects_interpreter(servers, tmp_path, second_env, server_cls, stub_python):
    repo = tmp_path / "repo"
    env_param = (
        'parameters { key: "EXECUTION_ENV_PATH" value { string_value: "%s" } }\n' % second_env
    )
    write_py_model(repo, "env_probe", PID_CONFIG.replace("{name}", "env_probe") + env_param, PID_MODEL)
    write_py_model(repo, "pid_python", PID_CONFIG.replace("{name}", "pid_python"), PID_MODEL)
    s = servers.start(repo)

    def probe(model):
        got = infer(s, "grpc", model, [("DELAY_MS", np.array([0], dtype=np.int32), "INT32")])
        return int(got["PID"][0]), got["EXE"][0].decode(), got["PREFIX"][0].decode()

    pid, exe, prefix = probe("env_probe")
    assert pathlib.Path(prefix).resolve() == second_env.resolve(), (exe, prefix)
    if kind(server_cls) == "nereid":
        # Nereid runs <env>/bin/python; Triton's stub embeds libpython.
        assert pathlib.Path(exe).parent.resolve() == (second_env / "bin").resolve(), exe
    assert pid in children(s.proc.pid)
    # A model without the parameter runs in the default interpreter.
    _, exe2, prefix2 = probe("pid_python")
    assert pathlib.Path(prefix2).resolve() != second_env.resolve()
    if kind(server_cls) == "nereid":
        assert pathlib.Path(prefix2).resolve() == pathlib.Path(
            subprocess.run(
                [str(stub_python), "-c", "import sys; print(sys.prefix)"],
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout.strip()
        ).resolve()


def test_execution_env_path_missing_fails_load(servers, tmp_path):
    repo = tmp_path / "repo"
    missing = tmp_path / "no_such_env"
    env_param = 'parameters { key: "EXECUTION_ENV_PATH" value { string_value: "%s" } }\n' % missing
    write_py_model(repo, "env_missing", PID_CONFIG.replace("{name}", "env_missing") + env_param, PID_MODEL)
    s = servers.start(repo, ["--model-control-mode=explicit"])
    with pytest.raises(InferenceServerException) as e:
        call(s, "http", "load_model", "env_missing")
    assert "env_missing" in e.value.message()
    assert str(missing) in e.value.message() or "no_such_env" in e.value.message(), e.value.message()
