"""A client that shrinks its shared-memory object while the server uses it
must not crash the server: it used to die of SIGBUS inside ONNX Runtime,
which read the input straight out of the mapping. Every request is answered
(200, or 400 when the object was too short at the moment it was read) and
the server keeps serving, for an ONNX Runtime model and a Go backend."""

import os
import threading
import time
import uuid

import numpy as np
import pytest

SIZE = 1 << 20
TRUNCATE_S = 3.0
REQUESTS = 400


@pytest.mark.parametrize("model,inputs", [
    ("simple", ["INPUT0", "INPUT1"]),  # ONNX Runtime: native code reads the inputs
    ("identity_t_int32", ["INPUT0"]),  # the Go identity backend
])
def test_truncation_race_never_crashes(nereid, good_repo, model, inputs):
    server = nereid.start(good_repo, ["--allow-client-shm=true"])
    key = f"/nereid_trunc_{uuid.uuid4().hex[:12]}"
    fd = os.open(f"/dev/shm{key}", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, SIZE)
        os.pwrite(fd, np.arange(32, dtype=np.int32).tobytes(), 0)
        r = server.request("POST", "/v2/systemsharedmemory/region/trunc/register",
                           {"key": key, "offset": 0, "byte_size": SIZE})
        assert r.status == 200, r.body

        shape = [1, 16] if model == "simple" else [16]
        body = {"inputs": [
            {"name": name, "shape": shape, "datatype": "INT32",
             "parameters": {"shared_memory_region": "trunc", "shared_memory_byte_size": 64,
                            "shared_memory_offset": 64 * i}}
            for i, name in enumerate(inputs)
        ]}

        stop = threading.Event()

        def shrink():
            deadline = time.monotonic() + TRUNCATE_S
            while not stop.is_set() and time.monotonic() < deadline:
                os.ftruncate(fd, 0)
                os.ftruncate(fd, SIZE)

        t = threading.Thread(target=shrink)
        t.start()
        statuses = {}
        try:
            for _ in range(REQUESTS):
                r = server.request("POST", f"/v2/models/{model}/infer", body)
                statuses[r.status] = statuses.get(r.status, 0) + 1
        finally:
            stop.set()
            t.join()
        assert server.proc.poll() is None, f"the server died:\n{server.log_tail()}"
        assert set(statuses) <= {200, 400}, statuses
        # Once the object keeps its size, requests through it succeed again.
        os.pwrite(fd, np.arange(32, dtype=np.int32).tobytes(), 0)
        r = server.request("POST", f"/v2/models/{model}/infer", body)
        assert r.status == 200, r.body
        assert server.request("GET", "/v2/health/ready").status == 200
        server.request("POST", "/v2/systemsharedmemory/region/trunc/unregister")
    finally:
        os.close(fd)
        os.unlink(f"/dev/shm{key}")
