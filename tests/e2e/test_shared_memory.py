"""System and CUDA shared-memory extensions, with tritonclient's own
shared_memory helpers creating real POSIX regions in /dev/shm.

The shm_server fixture runs with --allow-client-shm=true; the shared
`server` fixture runs with Triton's default (disabled) and must refuse
every shared-memory call with 501 / UNIMPLEMENTED.
"""

import base64
import os
import threading

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient import utils
from tritonclient.utils import InferenceServerException

from conftest import DELAY_MS, IN_FLIGHT_WAIT_S, NereidFactory, _factory_teardown, per_type_model, wait_for
from e2e_util import assert_tensor_equal, grpc_inputs, http_inputs, sample

DISABLED = "Client shared memory is disabled. Start the server with '--allow-client-shm=true' to enable."
RESERVED = "triton_python_backend_shm_region_"
PROTOCOLS = ["http", "grpc"]


@pytest.fixture(scope="module")
def shm_server(tmp_path_factory, good_repo):
    factory = NereidFactory(tmp_path_factory.mktemp("shm_server"))
    yield factory.start(good_repo, ["--allow-client-shm=true"])
    _factory_teardown(factory)


class Regions:
    """Regions created with tritonclient's helpers; destroyed at teardown."""

    def __init__(self):
        self.handles = []

    def create(self, name, size):
        key = f"/nereid_e2e_{os.getpid()}_{name}"
        handle = shm.create_shared_memory_region(name, key, size, create_only=True)
        self.handles.append(handle)
        return handle, key

    def destroy(self):
        for h in self.handles:
            shm.destroy_shared_memory_region(h)
        self.handles = []


@pytest.fixture
def regions(shm_server):
    r = Regions()
    yield r
    # Leave the server as the test found it, then remove the objects.
    shm_server.http().unregister_system_shared_memory()
    r.destroy()


def client(server, protocol):
    return server.http() if protocol == "http" else server.grpc()


def module(protocol):
    return httpclient if protocol == "http" else grpcclient


def status_names(c, protocol, name=""):
    st = c.get_system_shared_memory_status(name)
    if protocol == "http":
        return sorted(r["name"] for r in st)
    return sorted(st.regions.keys())


def error_status(protocol, http_code, grpc_code):
    return http_code if protocol == "http" else f"StatusCode.{grpc_code}"


def assert_serves(server):
    """After a refusal the server still answers inferences."""
    data = np.array([1, 2, 3], dtype=np.int32)
    inp = httpclient.InferInput("INPUT0", [3], "INT32")
    inp.set_data_from_numpy(data)
    r = server.http().infer(per_type_model("INT32"), [inp])
    assert_tensor_equal(r.as_numpy("OUTPUT0"), data)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_numeric_round_trip_with_offsets(shm_server, regions, protocol):
    c, m = client(shm_server, protocol), module(protocol)
    data = np.arange(-8, 8, dtype=np.int32) * 1000003
    # One object holds the input region, registered 100 bytes in (not page
    # aligned), with the tensor a further 12 bytes into the region.
    in_handle, in_key = regions.create("in", 4096)
    out_handle, out_key = regions.create("out", 8192)
    shm.set_shared_memory_region(in_handle, [data], offset=100 + 12)
    c.register_system_shared_memory("in", in_key, 1000, offset=100)
    c.register_system_shared_memory("out", out_key, 4096, offset=4096)

    inp = m.InferInput("INPUT0", [16], "INT32")
    inp.set_shared_memory("in", data.nbytes, offset=12)
    out = m.InferRequestedOutput("OUTPUT0") if protocol == "grpc" else m.InferRequestedOutput("OUTPUT0", binary_data=False)
    out.set_shared_memory("out", data.nbytes, offset=8)
    r = c.infer(per_type_model("INT32"), [inp], outputs=[out])

    got = shm.get_contents_as_numpy(out_handle, np.int32, [16], offset=4096 + 8)
    assert_tensor_equal(got, data)
    meta = r.get_output("OUTPUT0")
    if protocol == "http":
        # No data in the response: neither JSON nor binary.
        assert meta == {"name": "OUTPUT0", "datatype": "INT32", "shape": [16]}
    else:
        assert meta.datatype == "INT32" and list(meta.shape) == [16]
        assert r.get_response().raw_output_contents == [b""]

    st = c.get_system_shared_memory_status("in")
    if protocol == "http":
        assert st == [{"name": "in", "key": in_key, "offset": 100, "byte_size": 1000}]
    else:
        reg = st.regions["in"]
        assert (reg.name, reg.key, reg.offset, reg.byte_size) == ("in", in_key, 100, 1000)
    assert status_names(c, protocol) == ["in", "out"]
    c.unregister_system_shared_memory("in")
    assert status_names(c, protocol) == ["out"]
    c.unregister_system_shared_memory()
    assert status_names(c, protocol) == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bytes_round_trip(shm_server, regions, protocol):
    c, m = client(shm_server, protocol), module(protocol)
    words = np.array([b"hello", b"", b"\x00\xff binary", "h\u00e9llo".encode()], dtype=np.object_)
    serialized = utils.serialize_byte_tensor(words)
    size = utils.serialized_byte_size(serialized)
    in_handle, in_key = regions.create("bin", 256)
    out_handle, out_key = regions.create("bout", 256)
    shm.set_shared_memory_region(in_handle, [serialized], offset=3)
    c.register_system_shared_memory("bin", in_key, 256)
    c.register_system_shared_memory("bout", out_key, 200, offset=56)

    inp = m.InferInput("INPUT0", [4], "BYTES")
    inp.set_shared_memory("bin", size, offset=3)
    out = m.InferRequestedOutput("OUTPUT0") if protocol == "grpc" else m.InferRequestedOutput("OUTPUT0", binary_data=False)
    out.set_shared_memory("bout", 200)
    c.infer(per_type_model("BYTES"), [inp], outputs=[out])
    got = shm.get_contents_as_numpy(out_handle, np.object_, [4], offset=56)
    assert list(got) == list(words)

    # The same input, returned over the wire instead: the response must not
    # alias the region (it is unregistered right after).
    r = c.infer(per_type_model("BYTES"), [inp])
    c.unregister_system_shared_memory()
    assert list(r.as_numpy("OUTPUT0")) == list(words)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_mixed_shared_memory_and_wire_inputs(shm_server, regions, protocol):
    # identity_multi: INPUT0..3 = BOOL, FP16, BF16, INT64; only INT64 in shm.
    c, m = client(shm_server, protocol), module(protocol)
    big = np.array([1 << 62, -5, 7], dtype=np.int64)
    handle, key = regions.create("mixed", 64)
    shm.set_shared_memory_region(handle, [big])
    c.register_system_shared_memory("mixed", key, 64)
    wire = [sample("BOOL")[:3], sample("FP16")[:3], sample("BF16")[:3]]
    make = http_inputs if protocol == "http" else grpc_inputs
    inputs = make(wire, ["BOOL", "FP16", "BF16"])
    shm_input = m.InferInput("INPUT3", [3], "INT64")
    shm_input.set_shared_memory("mixed", big.nbytes)
    r = c.infer("identity_multi", inputs + [shm_input])
    for i, want in enumerate(wire):
        assert_tensor_equal(r.as_numpy(f"OUTPUT{i}"), want)
    assert_tensor_equal(r.as_numpy("OUTPUT3"), big)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_register_refusals(shm_server, regions, protocol):
    c = client(shm_server, protocol)
    handle, key = regions.create("reg", 64)
    c.register_system_shared_memory("reg", key, 64)

    def refused(fn, http_code, grpc_code, text):
        with pytest.raises(InferenceServerException) as e:
            fn()
        assert e.value.status() == error_status(protocol, http_code, grpc_code), e.value
        assert text in e.value.message(), e.value
        assert_serves(shm_server)

    refused(lambda: c.register_system_shared_memory("reg", key, 8), "400", "ALREADY_EXISTS",
            "shared memory region 'reg' already in manager")
    missing = f"/nereid_e2e_{os.getpid()}_no_such_key"
    refused(lambda: c.register_system_shared_memory("nokey", missing, 8), "500", "INTERNAL",
            f"Unable to open shared memory region: '{missing}'")
    for size, offset in [(65, 0), (64, 1), (1, 64), (0, 65)]:
        refused(lambda: c.register_system_shared_memory("oob", key, size, offset=offset), "400", "INVALID_ARGUMENT",
                "failed to register shared memory region 'oob': invalid args")
    reserved_key = RESERVED + "_mine"
    refused(lambda: c.register_system_shared_memory("mine", reserved_key, 8), "400", "INVALID_ARGUMENT",
            f"cannot register shared memory region 'mine' with key '{reserved_key}' as the key contains the reserved prefix '{RESERVED}'")
    refused(lambda: c.get_system_shared_memory_status("nope"), "404", "NOT_FOUND",
            "Unable to find system shared memory region: 'nope'")
    # Unregistering an unknown region is not an error.
    c.unregister_system_shared_memory("nope")
    assert status_names(c, protocol) == ["reg"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_infer_refusals(shm_server, regions, protocol):
    c, m = client(shm_server, protocol), module(protocol)
    data = np.arange(16, dtype=np.int32)
    handle, key = regions.create("ib", 64)
    shm.set_shared_memory_region(handle, [data])
    c.register_system_shared_memory("ib", key, 64)

    def refused(inp_args, out_args, http_code, grpc_code, text):
        inp = m.InferInput("INPUT0", [16], "INT32")
        inp.set_shared_memory(*inp_args)
        outputs = None
        if out_args:
            o = m.InferRequestedOutput("OUTPUT0") if protocol == "grpc" else m.InferRequestedOutput("OUTPUT0", binary_data=False)
            o.set_shared_memory(*out_args)
            outputs = [o]
        with pytest.raises(InferenceServerException) as e:
            c.infer(per_type_model("INT32"), [inp], outputs=outputs)
        assert e.value.status() == error_status(protocol, http_code, grpc_code), e.value
        assert text in e.value.message(), e.value
        assert_serves(shm_server)

    refused(("nope", 64), None, "404", "NOT_FOUND", "Unable to find shared memory region: 'nope'")
    refused(("ib", 64, 64), None, "400", "INVALID_ARGUMENT", "Invalid offset for shared memory region: 'ib'")
    refused(("ib", 64, 8), None, "400", "INVALID_ARGUMENT", "Invalid offset + byte size for shared memory region: 'ib'")
    refused(("ib", 32), None, "400", "INVALID_ARGUMENT",
            "input byte size mismatch for input 'INPUT0' for model 'identity_t_int32'. Expected 64, got 32")
    refused(("ib", 64), ("ib", 64, 60), "400", "INVALID_ARGUMENT", "Invalid offset + byte size for shared memory region: 'ib'")
    refused(("ib", 64), ("ib", 32), "500", "INTERNAL",
            "shared memory size specified with the request for output 'OUTPUT0' (32 bytes) should be at least 64 bytes to hold the results")
    if protocol == "http":
        # An offset that only fits in a uint64 (Triton's own test sends 2**64 - 32).
        refused(("ib", 64), ("ib", 64, 2**64 - 32), "400", "INVALID_ARGUMENT", "Invalid offset for shared memory region: 'ib'")
        refused(("ib", 2**64 - 32, 32), None, "400", "INVALID_ARGUMENT", "Integer overflow detected: byte_size")


def test_region_and_data_refused(shm_server, regions):
    handle, key = regions.create("rd", 64)
    shm_server.http().register_system_shared_memory("rd", key, 64)
    body = {"inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1], "data": [1],
                        "parameters": {"shared_memory_region": "rd", "shared_memory_byte_size": 4}}]}
    r = shm_server.request("POST", f"/v2/models/{per_type_model('INT32')}/infer", body)
    assert r.status == 400 and "But set 'data' 'shared_memory_region'" in r.json()["error"], r.body
    body["inputs"][0].pop("data")
    body["outputs"] = [{"name": "OUTPUT0", "parameters": {"binary_data": True, "shared_memory_region": "rd", "shared_memory_byte_size": 4}}]
    r = shm_server.request("POST", f"/v2/models/{per_type_model('INT32')}/infer", body)
    assert r.status == 400 and r.json()["error"] == "Output can't set both 'shared_memory_region' and 'binary_data'", r.body
    assert_serves(shm_server)


def test_unregister_while_in_flight(shm_server, regions):
    # identity_delay runs DELAY_MS: unregister every region while it runs.
    data = np.array([0.5, -1.25, 3.0], dtype=np.float32)
    handle, key = regions.create("busy", 64)
    shm.set_shared_memory_region(handle, [data])
    c = shm_server.http()
    c.register_system_shared_memory("busy", key, 64)
    result = {}

    def run():
        inp = httpclient.InferInput("INPUT0", [3], "FP32")
        inp.set_shared_memory("busy", data.nbytes)
        try:
            result["r"] = shm_server.http(network_timeout=60).infer("identity_delay", [inp])
        except Exception as e:  # noqa: BLE001 - reported below
            result["err"] = e

    t = threading.Thread(target=run)
    t.start()
    try:
        wait_for(lambda: status_names(c, "http") == ["busy"], what="registered")
        threading.Event().wait(IN_FLIGHT_WAIT_S)
        c.unregister_system_shared_memory()
        # In use: still listed (as Triton), unmapped once the request ends.
        assert status_names(c, "http") == ["busy"]
    finally:
        t.join(timeout=DELAY_MS / 1000 + 30)
    assert "err" not in result, result.get("err")
    assert_tensor_equal(result["r"].as_numpy("OUTPUT0"), data)
    wait_for(lambda: status_names(c, "http") == [], what="region released after the request")


def _mapped(pid, key):
    with open(f"/proc/{pid}/maps") as f:
        return any(line.rstrip().endswith("/dev/shm" + key) for line in f)


def test_unmapped_on_unregister_and_clean_shutdown(nereid, good_repo):
    s = nereid.start(good_repo, ["--allow-client-shm=true"])
    r = Regions()
    try:
        handle, key = r.create("maps", 4096)
        c = s.http()
        c.register_system_shared_memory("maps", key, 4096)
        assert _mapped(s.proc.pid, key)
        c.unregister_system_shared_memory("maps")
        assert not _mapped(s.proc.pid, key), "the region is still mapped after unregister"
        # Regions left registered at SIGTERM: the server still exits 0.
        c.register_system_shared_memory("left", key, 4096)
        s.grpc().register_system_shared_memory("left2", key, 100, offset=3)
        assert _mapped(s.proc.pid, key)
        s.stop_gracefully()
    finally:
        r.destroy()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cuda_shared_memory_without_gpu(shm_server, protocol):
    c = client(shm_server, protocol)
    st = c.get_cuda_shared_memory_status()
    assert (st == []) if protocol == "http" else (len(st.regions) == 0)
    c.unregister_cuda_shared_memory()  # what perf_analyzer does on every run
    c.unregister_cuda_shared_memory("any")
    handle = b"\x00" * 64
    with pytest.raises(InferenceServerException) as e:
        if protocol == "http":
            c.register_cuda_shared_memory("gpu", base64.b64encode(handle).decode(), 0, 1024)
        else:
            c.register_cuda_shared_memory("gpu", handle, 0, 1024)
    # Triton's answer on a server without GPU support.
    assert e.value.status() == error_status(protocol, "400", "INVALID_ARGUMENT"), e.value
    assert "failed to register CUDA shared memory region: 'gpu', GPUs not supported" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        c.get_cuda_shared_memory_status("gpu")
    assert e.value.status() == error_status(protocol, "404", "NOT_FOUND")
    assert_serves(shm_server)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_disabled_by_default(server, protocol):
    c, m = client(server, protocol), module(protocol)
    calls = [
        lambda: c.get_system_shared_memory_status(),
        lambda: c.register_system_shared_memory("r", "/k", 8),
        lambda: c.unregister_system_shared_memory(),
        lambda: c.get_cuda_shared_memory_status(),
        lambda: c.unregister_cuda_shared_memory(),
    ]
    inp = m.InferInput("INPUT0", [1], "INT32")
    inp.set_shared_memory("r", 4)
    calls.append(lambda: c.infer(per_type_model("INT32"), [inp]))
    for call in calls:
        with pytest.raises(InferenceServerException) as e:
            call()
        assert e.value.status() == error_status(protocol, "501", "UNIMPLEMENTED"), e.value
        assert e.value.message() == DISABLED
    assert_serves(server)
