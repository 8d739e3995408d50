"""Memory follows the payloads in flight, and goes back when they are done.

A 512 MiB gRPC message once raised the server's RSS by four times its size
for good. Now a large message is decoded into one buffer of its own size,
mapped for it alone and unmapped once its response is written, and the
HTTP/2 frames it arrived in go back to the kernel as they are copied; HTTP
bodies of more than a few MiB are not kept with their connection; ONNX
Runtime writes an output whose shape it can tell from the inputs' straight
into the response buffer, from the first request; and the garbage a large
payload leaves on the Go heap is handed back to the OS once things are
quiet. The peak is reported (REPORT lines), not asserted: only that the
memory comes back, with a wide margin, within a minute.

The payload budget (--payload-budget-bytes) refuses, with 503 /
UNAVAILABLE naming it, a request that does not fit, and the server serves
on."""

import http.client
import json
import pathlib
import shutil
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import EXAMPLES, wait_for, write_identity_model

MIB = 1 << 20


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for {pid}")


@pytest.fixture
def big_repo(tmp_path):
    repo = tmp_path / "repo"
    write_identity_model(repo, "big", [("FP32", [-1])])
    # The ONNX identity of the examples ([batch, n]), which copies its
    # input into an output of its own.
    onnx = repo / "big_onnx"
    shutil.copytree(EXAMPLES / "identity_fp32", onnx)
    config = onnx / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "identity_fp32"', 'name: "big_onnx"'))
    return repo


def infer_grpc(server, x, model="big"):
    c = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        inp = grpcclient.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        return c.infer(model, [inp]).as_numpy("OUTPUT0")
    finally:
        c.close()


def infer_http(server, x, model="big"):
    c = httpclient.InferenceServerClient(server.http_url, network_timeout=300, connection_timeout=300)
    try:
        inp = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        return c.infer(model, [inp]).as_numpy("OUTPUT0")
    finally:
        c.close()


@pytest.mark.parametrize("protocol,mib,model", [("grpc", 256, "big"), ("http", 128, "big"), ("grpc", 256, "big_onnx")])
def test_large_payload_memory_comes_back(nereid, big_repo, protocol, mib, model):
    """The Go identity backend answers with the request's own bytes; the
    ONNX identity writes a second copy, so its payloads in flight are twice
    the request."""
    server = nereid.start(big_repo, ["--http-max-input-size=536870912"])
    pid = server.proc.pid
    time.sleep(0.5)
    idle = rss_mib(pid)
    x = np.arange(mib * MIB // 4, dtype=np.float32)
    if model == "big_onnx":
        x = x.reshape(1, -1)
    out = (infer_grpc if protocol == "grpc" else infer_http)(server, x, model)
    assert out.shape == x.shape and out.flat[-1] == x.flat[-1]
    del out, x
    peak = rss_mib(pid, "VmHWM")
    start = time.monotonic()
    settled = wait_for(lambda: (r := rss_mib(pid)) < idle + mib / 2 and r, timeout=60, interval=0.5,
                       what=f"RSS back within {mib // 2} MiB of idle ({idle:.0f} MiB)")
    kind = "ONNX identity" if model == "big_onnx" else "identity"
    print(f"REPORT: {protocol} {mib} MiB {kind} request: idle {idle:.0f} MiB, peak {peak:.0f} MiB "
          f"(+{(peak - idle) / mib:.2f} x the request), back to {settled:.0f} MiB "
          f"{time.monotonic() - start:.1f} s after the response")
    assert server.proc.poll() is None


def test_payload_budget_refuses_and_serves_on(nereid, big_repo):
    server = nereid.start(big_repo, [f"--payload-budget-bytes={8 * MIB}"])
    big = np.ones(4 * MIB, dtype=np.float32)  # 16 MiB
    fits = np.ones(MIB // 2, dtype=np.float32)  # 2 MiB

    # HTTP with a Content-Length: refused before the body is read.
    with pytest.raises(InferenceServerException) as e:
        infer_http(server, big)
    assert "--payload-budget-bytes" in str(e.value), e.value
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        conn.putrequest("POST", "/v2/models/big/infer")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(9 * MIB))
        conn.endheaders()  # the body is never sent: the answer comes first
        r = conn.getresponse()
        body = r.read()
    finally:
        conn.close()
    assert r.status == 503 and "payload budget" in json.loads(body)["error"], (r.status, body)

    # gRPC: the message is read (its size is known only then) and refused
    # without a copy.
    with pytest.raises(InferenceServerException) as e:
        infer_grpc(server, big)
    assert e.value.status() == "StatusCode.UNAVAILABLE" and "--payload-budget-bytes" in str(e.value), e.value

    # What fits is served, on both front ends.
    assert infer_http(server, fits)[-1] == 1
    assert infer_grpc(server, fits)[-1] == 1
    assert server.proc.poll() is None


def test_refused_chunked_body_memory_comes_back(nereid, big_repo):
    """A chunked body is read until it passes --http-max-input-size (64 MiB
    here); the memory fasthttp grew for it goes back once it is refused."""
    server = nereid.start(big_repo)
    pid = server.proc.pid
    time.sleep(0.5)
    idle = rss_mib(pid)
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=60)
    chunk = b"x" * MIB
    try:
        conn.putrequest("POST", "/v2/models/big/infer")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        try:
            for _ in range(70):
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.send(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered and closed before the end
        r = conn.getresponse()
        body = r.read()
    finally:
        conn.close()
    assert r.status == 400 and b"--http-max-input-size" in body, (r.status, body)
    peak = rss_mib(pid, "VmHWM")
    settled = wait_for(lambda: (v := rss_mib(pid)) < idle + 32 and v, timeout=60, interval=0.5,
                       what=f"RSS back within 32 MiB of idle ({idle:.0f} MiB)")
    print(f"REPORT: refused 70 MiB chunked body: idle {idle:.0f} MiB, peak {peak:.0f} MiB, back to {settled:.0f} MiB")
    assert infer_http(server, np.ones(4, dtype=np.float32))[-1] == 1
