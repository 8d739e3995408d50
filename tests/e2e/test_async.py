"""Asynchronous inference (--allow-async): submit, poll, fetch, over a real
bin/nereid on its own port.

A request is answered 202 with an id at once, stored on disk, run through
the model when it has a free slot, and its result fetched by id. The queue
is durable: a server killed with SIGKILL while a job runs is restarted on
the same --async-dir and every accepted request completes, or fails with
its reason once it was interrupted --async-max-attempts times. Bad input:
bodies over the cap (413), unknown models and ids (404), a full queue (503
with its depth), a webhook that hangs (bounded retries, the queue runs on).
A large body streams to disk: the server's memory stays far below its size.
"""

from __future__ import annotations

import http.client
import http.server
import json
import pathlib
import shutil
import signal
import threading
import time

import numpy as np
import pytest
import tritonclient.http as httpclient

from conftest import EXAMPLES, _free_ports, wait_for, write_identity_model
from e2e_util import scrape

MIB = 1 << 20
SLOW_MS = 3000


@pytest.fixture(scope="module")
def async_repo(tmp_path_factory) -> pathlib.Path:
    """simple and identity_fp32 of the examples, and a slow identity model."""
    repo = tmp_path_factory.mktemp("async_repo")
    for name in ("simple", "identity_fp32"):
        shutil.copytree(EXAMPLES / name, repo / name)
    write_identity_model(repo, "slow", [("FP32", [-1])], parameters={"execute_delay_ms": str(SLOW_MS)})
    write_identity_model(repo, "fast", [("FP32", [-1])])
    write_identity_model(repo, "blocker", [("FP32", [-1])], parameters={"execute_delay_ms": "60000"})
    return repo


class Async:
    """A client of one server's asynchronous inference port."""

    def __init__(self, server, port: int):
        self.server, self.port = server, port

    def request(self, method, path, body=b"", headers=None, timeout=60):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def submit(self, model, body, headers=None, version=None):
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        status, hdrs, out = self.request("POST", path, body, headers)
        assert status == 202, (status, out)
        sub = json.loads(out)
        assert sub["status"] == "pending" and hdrs["location"] == sub["result_url"], sub
        assert sub["result_url"].endswith("/v2/async/results/" + sub["id"])
        return sub["id"]

    def status(self, rid):
        status, _, out = self.request("GET", f"/v2/async/requests/{rid}")
        assert status == 200, (status, out)
        return json.loads(out)

    def wait(self, rid, states=("done", "failed"), timeout=60):
        return wait_for(
            lambda: (st := self.status(rid))["status"] in states and st,
            timeout=timeout,
            interval=0.05,
            what=f"request {rid} to be {'/'.join(states)}",
        )

    def result(self, rid):
        return self.request("GET", f"/v2/async/results/{rid}")


def start_async(nereid, repo, tmp_path, *flags, async_dir=None, metrics=False):
    port, metrics_port = _free_ports(2)
    async_dir = async_dir or tmp_path / "async"
    args = [
        "--allow-async=true",
        "--async-address=127.0.0.1",
        f"--async-port={port}",
        f"--async-dir={async_dir}",
        *flags,
    ]
    if metrics:
        args += ["--allow-metrics=true", f"--metrics-port={metrics_port}", "--metrics-address=127.0.0.1"]
    server = nereid.start(repo, args)
    client = Async(server, port)
    wait_for(lambda: _port_open(port), what="the async port")
    client.metrics_port = metrics_port
    return server, client


def _port_open(port):
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def request_body(inputs, outputs=None):
    """A v2 body as tritonclient builds it, and its JSON length (None when
    there is no binary data)."""
    body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs, outputs=outputs)
    return body, json_size


def parse_result(headers, body):
    n = headers.get("inference-header-content-length")
    return httpclient.InferenceServerClient.parse_response_body(body, header_length=int(n) if n else None)


def simple_inputs(binary):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.int32)
    ins = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
    ins[0].set_data_from_numpy(a, binary_data=binary)
    ins[1].set_data_from_numpy(b, binary_data=binary)
    outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("OUTPUT0", "OUTPUT1")]
    return ins, outs, a, b


def fp32_inputs(x, binary):
    inp = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    return [inp], [httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)]


def submit_tensors(client, model, inputs, outputs, headers=None, version=None):
    body, json_size = request_body(inputs, outputs)
    h = dict(headers or {})
    if json_size is not None:
        h["Inference-Header-Content-Length"] = str(json_size)
    return client.submit(model, body, h, version=version)


# --------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_submit_poll_fetch(nereid, async_repo, tmp_path, binary):
    server, client = start_async(nereid, async_repo, tmp_path, metrics=True)
    ins, outs, a, b = simple_inputs(binary)
    sid = submit_tensors(client, "simple", ins, outs)
    x = np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 12)
    fin, fout = fp32_inputs(x, binary)
    fid = submit_tensors(client, "identity_fp32", fin, fout, version=1)

    for rid in (sid, fid):
        st = client.wait(rid)
        assert st["status"] == "done" and st["attempts"] == 1, st
        assert st["created"] <= st["started"] <= st["finished"], st
    status, headers, body = client.result(sid)
    assert status == 200, body
    assert (headers.get("inference-header-content-length") is not None) == binary, headers
    res = parse_result(headers, body)
    np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(res.as_numpy("OUTPUT1"), a - b)
    status, headers, body = client.result(fid)
    assert status == 200, body
    np.testing.assert_array_equal(parse_result(headers, body).as_numpy("OUTPUT0"), x)
    assert client.status(fid)["model_version"] == "1"

    # The same answer as the real-time endpoint.
    sync = server.http().infer("identity_fp32", fin, outputs=fout)
    np.testing.assert_array_equal(sync.as_numpy("OUTPUT0"), x)

    samples, types, _ = scrape(client.metrics_port)
    assert types["nereid_async_queue_depth"] == "gauge"
    assert samples[("nereid_async_queue_depth", frozenset({("model", "simple")}))] == 0
    assert samples[("nereid_async_requests_total", frozenset({("model", "simple"), ("status", "accepted")}))] == 1
    assert samples[("nereid_async_requests_total", frozenset({("model", "simple"), ("status", "done")}))] == 1
    assert samples[("nereid_async_request_duration_seconds_count",
                    frozenset({("model", "identity_fp32"), ("status", "done")}))] == 1

    # Deleted: gone with its result.
    assert client.request("DELETE", f"/v2/async/requests/{sid}")[0] == 200
    assert client.result(sid)[0] == 404
    assert not (tmp_path / "async" / "results" / sid).exists()


def test_gzip_body(nereid, async_repo, tmp_path):
    import gzip

    _, client = start_async(nereid, async_repo, tmp_path)
    x = np.arange(8, dtype=np.float32).reshape(1, 8)
    fin, fout = fp32_inputs(x, True)
    body, json_size = request_body(fin, fout)
    rid = client.submit("identity_fp32", gzip.compress(body),
                        {"Content-Encoding": "gzip", "Inference-Header-Content-Length": str(json_size)})
    assert client.wait(rid)["status"] == "done"
    status, headers, out = client.result(rid)
    np.testing.assert_array_equal(parse_result(headers, out).as_numpy("OUTPUT0"), x)


def slow_body(i, n=4):
    x = np.full((n,), float(i), dtype=np.float32)
    fin, fout = fp32_inputs(x, True)
    return (*request_body(fin, fout), x)


def test_kill_mid_job_and_restart(nereid, async_repo, tmp_path):
    """SIGKILL while a job runs, restart on the same directory: every
    accepted request completes, the interrupted one on its second attempt."""
    server, client = start_async(nereid, async_repo, tmp_path)
    ids, want = [], {}
    for i in range(4):
        body, n, x = slow_body(i)
        rid = client.submit("slow", body, {"Inference-Header-Content-Length": str(n)})
        ids.append(rid)
        want[rid] = x
    client.wait(ids[0], states=("running",))
    time.sleep(0.3)  # inside the 3 s execution
    server.proc.send_signal(signal.SIGKILL)
    assert server.proc.wait(timeout=10) == -signal.SIGKILL
    server.stop()

    server2, client2 = start_async(nereid, async_repo, tmp_path, async_dir=tmp_path / "async")
    first = client2.status(ids[0])
    assert first["status"] in ("pending", "running"), first
    for rid in ids:
        st = client2.wait(rid, timeout=4 * SLOW_MS / 1000 + 30)
        assert st["status"] == "done", st
        assert st["attempts"] == (2 if rid == ids[0] else 1), st
        status, headers, body = client2.result(rid)
        assert status == 200, body
        np.testing.assert_array_equal(parse_result(headers, body).as_numpy("OUTPUT0"), want[rid])
    assert not any((tmp_path / "async" / "requests").iterdir()), "request bodies left after their jobs"


def test_kill_mid_job_fails_after_max_attempts(nereid, async_repo, tmp_path):
    server, client = start_async(nereid, async_repo, tmp_path, "--async-max-attempts=1")
    body, n, _ = slow_body(1)
    rid = client.submit("slow", body, {"Inference-Header-Content-Length": str(n)})
    client.wait(rid, states=("running",))
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(timeout=10)
    server.stop()
    _, client2 = start_async(nereid, async_repo, tmp_path, "--async-max-attempts=1", async_dir=tmp_path / "async")
    st = client2.status(rid)
    assert st["status"] == "failed" and "the server stopped while the request was running" in st["error"], st
    status, _, out = client2.result(rid)
    assert status == 500 and "--async-max-attempts=1" in json.loads(out)["error"], out


def test_sigterm_leaves_pending_work(nereid, async_repo, tmp_path):
    """A graceful stop keeps what has not run; the next start runs it."""
    server, client = start_async(nereid, async_repo, tmp_path, "--exit-timeout-secs=1")
    ids = []
    for i in range(3):
        body, n, _ = slow_body(i)
        ids.append(client.submit("slow", body, {"Inference-Header-Content-Length": str(n)}))
    client.wait(ids[0], states=("running",))
    server.stop_gracefully()
    _, client2 = start_async(nereid, async_repo, tmp_path, async_dir=tmp_path / "async")
    for rid in ids:
        st = client2.wait(rid, timeout=30)
        assert st["status"] == "done" and st["attempts"] == 1, st


def test_bad_input(nereid, async_repo, tmp_path):
    _, client = start_async(nereid, async_repo, tmp_path, f"--async-max-request-bytes={MIB}", "--async-max-queue=2")
    x = np.zeros(4, dtype=np.float32)
    fin, fout = fp32_inputs(x, False)
    good, _ = request_body(fin, fout)

    # Over the cap: 413, declared or streamed, and nothing kept.
    status, _, out = client.request("POST", "/v2/models/fast/infer", b" " * (2 * MIB))
    assert status == 413 and "--async-max-request-bytes" in json.loads(out)["error"], out

    def chunks():
        for _ in range(3):
            yield b" " * MIB

    status, _, out = client.request("POST", "/v2/models/fast/infer", chunks())
    assert status == 413, out
    assert not any((tmp_path / "async" / "requests").iterdir())

    # Unknown model and ids: 404.
    status, _, out = client.request("POST", "/v2/models/nope/infer", good)
    assert status == 404 and json.loads(out)["error"] == "Request for unknown model: 'nope' is not found", out
    for path in ("/v2/async/requests/" + "0" * 32, "/v2/async/results/" + "0" * 32, "/v2/async/results/not-an-id"):
        assert client.request("GET", path)[0] == 404, path
    # Unknown encoding, bad webhook.
    status, headers, _ = client.request("POST", "/v2/models/fast/infer", good, {"Content-Encoding": "br"})
    assert status == 415 and headers["accept-encoding"] == "gzip, deflate"
    status, _, out = client.request("POST", "/v2/models/fast/infer", good, {"X-Nereid-Notify-Url": "file:///etc/passwd"})
    assert status == 400 and "http or https" in json.loads(out)["error"], out

    # A full queue: 503 with its depth; room again once a job is done.
    body, n, _ = slow_body(0)
    ids = [client.submit("slow", body, {"Inference-Header-Content-Length": str(n)}) for _ in range(2)]
    status, _, out = client.request("POST", "/v2/models/fast/infer", good)
    assert status == 503 and "2 requests are pending or running (--async-max-queue=2)" in json.loads(out)["error"], out
    # A running job cannot be deleted; a pending one is cancelled.
    client.wait(ids[0], states=("running",))
    assert client.request("DELETE", f"/v2/async/requests/{ids[0]}")[0] == 409
    status, _, out = client.request("DELETE", f"/v2/async/requests/{ids[1]}")
    assert status == 200 and json.loads(out)["status"] == "cancelled", out
    assert client.result(ids[1])[0] == 404
    # While pending or running the result endpoint answers 202 and the status.
    status, _, out = client.result(ids[0])
    assert status == 202 and json.loads(out)["status"] == "running", out
    client.wait(ids[0])
    client.submit("fast", good)


class Hooks(http.server.ThreadingHTTPServer):
    """A webhook receiver that hangs on the first `hang` paths."""

    daemon_threads = True

    def __init__(self):
        self.calls = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        super().__init__(("127.0.0.1", 0), HookHandler)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class HookHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.calls.append((self.path, time.monotonic(), body))
        if self.path == "/hang":
            self.server.release.wait(60)
            return
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def hooks():
    srv = Hooks()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


def test_webhooks(nereid, async_repo, tmp_path, hooks):
    """A hanging webhook gets bounded retries and holds up no request; a
    working one gets the outcome."""
    _, client = start_async(nereid, async_repo, tmp_path, "--async-notify-timeout-secs=1", "--async-notify-attempts=3")
    x = np.arange(4, dtype=np.float32)
    fin, fout = fp32_inputs(x, False)
    good, _ = request_body(fin, fout)
    t0 = time.monotonic()
    hang = [client.submit("fast", good, {"X-Nereid-Notify-Url": hooks.url + "/hang"}) for _ in range(6)]
    for rid in hang:
        assert client.wait(rid)["status"] == "done"
    took = time.monotonic() - t0
    assert took < 3, f"the queue waited for hanging webhooks: {took:.1f} s"
    ok = client.submit("fast", b'{"inputs": []}', {"X-Nereid-Notify-Url": hooks.url + "/ok"})
    # 3 attempts of 1 s with 1 s and 2 s between them: about 6 s each, 4 at once.
    wait_for(lambda: sum(1 for p, _, _ in hooks.calls if p == "/hang") == 3 * len(hang), timeout=40,
             what="every retry of the hanging webhook")
    time.sleep(2)
    calls = [c for c in hooks.calls if c[0] == "/hang"]
    assert len(calls) == 3 * len(hang), "more than the bounded retries"
    for rid in hang:
        times = sorted(t for _, t, b in calls if b["id"] == rid)
        assert len(times) == 3
        assert 1.8 <= times[1] - times[0] <= 4 and 2.8 <= times[2] - times[1] <= 6, times
    okcalls = wait_for(lambda: [b for p, _, b in hooks.calls if p == "/ok"], what="the working webhook")
    assert okcalls[0]["id"] == ok and okcalls[0]["status"] == "failed" and okcalls[0]["result_url"].endswith(ok)
    assert "error" in okcalls[0]


def vm(pid, field):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


def test_large_body_streams_to_disk(nereid, async_repo, tmp_path):
    """A 200 MB body is written to disk as it arrives: the server's peak
    memory rises far less than the body's size."""
    size = 200 * MIB
    # A short exit timeout: the blocker is cut off at the end.
    _, client = start_async(nereid, async_repo, tmp_path, "--exit-timeout-secs=1")
    pid = client.server.proc.pid
    # Hold the model's one slot for a minute, so that the large request
    # stays queued.
    body, n, _ = slow_body(0)
    blocker = client.submit("blocker", body, {"Inference-Header-Content-Length": str(n)})
    client.wait(blocker, states=("running",))

    header = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [size // 4],
                                     "parameters": {"binary_data_size": size}}]}).encode()
    chunk = np.arange(MIB // 4, dtype=np.float32).tobytes()

    def stream():
        yield header
        for _ in range(size // MIB):
            yield chunk

    before = vm(pid, "VmHWM")
    t0 = time.monotonic()
    rid = client.submit("blocker", stream(), {"Content-Length": str(len(header) + size),
                                           "Inference-Header-Content-Length": str(len(header))})
    took = time.monotonic() - t0
    after = vm(pid, "VmHWM")
    st = client.status(rid)
    assert st["status"] == "pending", st
    stored = tmp_path / "async" / "requests" / rid
    assert stored.stat().st_size == len(header) + size
    rise = after - before
    print(f"REPORT: async submit of {size // MIB} MiB: {took:.2f} s, peak RSS {before / MIB:.0f} -> {after / MIB:.0f} MiB "
          f"(+{rise / MIB:.1f} MiB)")
    assert rise < 32 * MIB, f"peak RSS rose by {rise / MIB:.0f} MiB for a {size // MIB} MiB body"
    assert client.request("DELETE", f"/v2/async/requests/{rid}")[0] == 200
    assert not stored.exists()
