"""Connection floods must not take the server down: a flood of idle TCP
connections used to exhaust the descriptors, and the HTTP listener's
'too many open files' shut the whole server down."""

import socket
import time

from conftest import Nereid


class LimitedNereid(Nereid):
    """A Nereid started under prlimit with a low descriptor limit."""

    nofile = 256

    def argv(self):
        return ["prlimit", f"--nofile={self.nofile}:{self.nofile}"] + super().argv()


def flood(port, n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        socks.append(s)
    return socks


def test_idle_connections_do_not_starve_a_fresh_client(nereid, good_repo):
    server = nereid.start(good_repo)
    socks = flood(server.http_port, 2000)
    try:
        started = time.monotonic()
        r = server.request("GET", "/v2/health/ready", timeout=5)
        assert r.status == 200
        assert time.monotonic() - started < 1.0
    finally:
        for s in socks:
            s.close()


def test_flood_past_the_descriptor_limit(tmp_path, good_repo):
    server = LimitedNereid(repo=good_repo, flags=["--log-verbose=0"], log_path=tmp_path / "nereid.log")
    server.start()
    try:
        # More connections than the process has descriptors: the excess
        # waits in the kernel's backlog instead of failing accept.
        socks = flood(server.http_port, 600)
        time.sleep(0.5)
        assert server.proc.poll() is None, f"the server stopped:\n{server.log_tail()}"
        # gRPC keeps serving meanwhile.
        assert server.grpc().is_server_live()
        for s in socks:
            s.close()
        # Once the flood ends, HTTP serves again.
        deadline = time.monotonic() + 30
        while True:
            try:
                if server.request("GET", "/v2/health/ready", timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"HTTP did not recover:\n{server.log_tail()}"
            time.sleep(0.1)
    finally:
        server.stop_gracefully()


def test_sigterm_under_keepalive_load_answers_instead_of_resetting(nereid, good_repo):
    """After SIGTERM, requests on open keep-alive connections get an answer
    (with Connection: close) rather than a reset."""
    import http.client
    import json
    import signal
    import threading

    server = nereid.start(good_repo)
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]})
    resets, answered, closed_by_server = [], [0], [0]
    lock = threading.Lock()
    stop = threading.Event()

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
        sent = 0
        while not stop.is_set():
            try:
                conn.request("POST", "/v2/models/identity_backend_fp32/infer", body=body)
                resp = conn.getresponse()
                resp.read()
            except (ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError) as e:
                if sent:  # a request on a connection that had already served one
                    with lock:
                        resets.append(repr(e))
                return
            except OSError:
                return  # could not connect: the listener is closed
            sent += 1
            with lock:
                answered[0] += 1
            if resp.getheader("Connection", "").lower() == "close":
                with lock:
                    closed_by_server[0] += 1
                return  # the server is draining: go elsewhere
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    server.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=30)
    stop.set()
    assert server.wait_exit(30) == 0
    assert not resets, resets
    assert answered[0] > 0
    assert closed_by_server[0] == len(threads), "every client was told to close its connection"
