"""Compressed-body bombs are refused at the input limit, and the memory
their decompression took comes back.

A gzip body of 80 KB inflates to 80 MiB. Decompression goes through a
reader limited to the input limit (--http-max-input-size,
--grpc-max-message-size), into memory charged to the payload budget, a few
at a time (as many as there are CPUs); so concurrent bombs cost at most that
many limits, and each is refused once it passes its limit: HTTP 400, gRPC
RESOURCE_EXHAUSTED. The peak is reported (REPORT lines), not asserted:
tests/reliability/bombs.py measures it against 100 concurrent bombs. What is
asserted: every bomb refused with the right status, the server serving
compressed requests afterwards, memory back near idle, and a compressed body
that does not fit the budget refused with 503 naming it.
"""

import gzip
import http.client
import json
import pathlib
import threading
import time

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2

from conftest import wait_for, write_identity_model

MIB = 1 << 20
LIMIT = 8 * MIB
BOMBS = 40


def rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def peak_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for {pid}")


@pytest.fixture
def repo(tmp_path):
    r = tmp_path / "repo"
    write_identity_model(r, "id_u8", [("UINT8", [-1])])
    return r


def _concurrently(n, fn):
    out = [None] * n
    barrier = threading.Barrier(n)

    def run(i):
        barrier.wait()
        out[i] = fn(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def _post(server, body, encoding):
    c = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=120)
    try:
        c.request("POST", "/v2/models/id_u8/infer", body=body, headers={"Content-Encoding": encoding})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_concurrent_bombs_refused_and_memory_comes_back(nereid, repo):
    s = nereid.start(repo, [f"--http-max-input-size={LIMIT}", f"--grpc-max-message-size={LIMIT}",
                            "--payload-budget-bytes=536870912"])
    pid = s.proc.pid
    time.sleep(0.5)
    idle = rss_mib(pid)
    pathlib.Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM

    bomb = gzip.compress(bytes(80 * MIB), compresslevel=9)
    assert len(bomb) < 100_000
    results = _concurrently(BOMBS, lambda i: _post(s, bomb, "gzip"))
    for status, body in results:
        assert status == 400, (status, body[:200])
        assert json.loads(body)["error"] == (
            f"decompressed request body exceeds the maximum allowed value of {LIMIT} bytes; "
            "use --http-max-input-size to increase the limit")

    req = service_pb2.ModelInferRequest(model_name="id_u8")
    t = req.inputs.add()
    t.name, t.datatype = "INPUT0", "UINT8"
    t.shape.append(LIMIT + 1)
    req.raw_input_contents.append(bytes(LIMIT + 1))
    message = req.SerializeToString()
    channel = grpc.insecure_channel(s.grpc_url, options=[("grpc.max_send_message_length", -1)])
    try:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                   request_serializer=lambda b: b, response_deserializer=lambda b: b)

        def send(i):
            try:
                call(message, timeout=120, compression=grpc.Compression.Gzip if i % 2 else grpc.Compression.Deflate)
                return "OK"
            except grpc.RpcError as e:
                return e.code()

        codes = _concurrently(BOMBS, send)
    finally:
        channel.close()
    assert all(c == grpc.StatusCode.RESOURCE_EXHAUSTED for c in codes), codes
    peak = peak_mib(pid)

    # Compressed requests that fit are served, both ways, both protocols.
    x = np.arange(1000, dtype=np.uint8)
    for alg in ("gzip", "deflate"):
        h = s.http()
        i = httpclient.InferInput("INPUT0", [1000], "UINT8")
        i.set_data_from_numpy(x)
        out = h.infer("id_u8", [i], request_compression_algorithm=alg, response_compression_algorithm=alg)
        assert np.array_equal(out.as_numpy("OUTPUT0"), x)
        g = s.grpc()
        i = grpcclient.InferInput("INPUT0", [1000], "UINT8")
        i.set_data_from_numpy(x)
        out = g.infer("id_u8", [i], compression_algorithm=alg)
        assert np.array_equal(out.as_numpy("OUTPUT0"), x)

    start = time.monotonic()
    wait_for(lambda: rss_mib(pid) <= idle + 64, timeout=60, interval=0.5, what="memory back near idle")
    print(f"REPORT: {2 * BOMBS} concurrent bombs ({BOMBS} HTTP gzip of {len(bomb) // 1024} KiB inflating to 80 MiB, "
          f"{BOMBS} gRPC of {LIMIT // MIB + 1} MiB compressed; limits {LIMIT // MIB} MiB): idle {idle:.0f} MiB, "
          f"peak {peak:.0f} MiB, back to {rss_mib(pid):.0f} MiB {time.monotonic() - start:.1f} s after")


def test_compressed_body_over_the_budget_is_refused_naming_it(nereid, repo):
    s = nereid.start(repo, ["--payload-budget-bytes=4194304"])
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [3 * MIB], "datatype": "UINT8",
                                   "parameters": {"binary_data_size": 3 * MIB}}]}).encode()
    hdr = len(body)
    payload = gzip.compress(body + bytes(3 * MIB))
    c = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=60)
    try:
        c.request("POST", "/v2/models/id_u8/infer", body=payload,
                  headers={"Content-Encoding": "gzip", "Inference-Header-Content-Length": str(hdr)})
        r = c.getresponse()
        status, text = r.status, r.read()
    finally:
        c.close()
    assert status == 503 and b"--payload-budget-bytes" in text, (status, text[:300])
    # A small one goes through.
    small = json.dumps({"inputs": [{"name": "INPUT0", "shape": [2], "datatype": "UINT8", "data": [1, 2]}]}).encode()
    status, text = _post(s, gzip.compress(small), "gzip")
    assert status == 200, text[:300]
