"""Cancellation end to end: a client that cancels or goes away while its
request waits in the queue has it dropped, and the statistics count it as
failed (Triton counts cancelled requests as failures)."""

import json
import queue
import socket
import time

import numpy as np
import tritonclient.grpc as grpcclient

from conftest import DELAY_MS, IN_FLIGHT_WAIT_S, wait_for


def delay_input(client_module, value):
    inp = client_module.InferInput("INPUT0", [2], "FP32")
    inp.set_data_from_numpy(np.array([value, value], dtype=np.float32))
    return [inp]


def counts(server, model):
    st = server.grpc().get_inference_statistics(model, as_json=True)["model_stats"][0]["inference_stats"]
    return int(st.get("success", {}).get("count", 0)), int(st.get("fail", {}).get("count", 0))


def test_grpc_async_infer_cancel_drops_queued_request(nereid, fresh_repo):
    server = nereid.start(fresh_repo)
    client = server.grpc()
    results = queue.Queue()
    # The first request occupies identity_delay's one instance; the second
    # waits in the queue and is cancelled there.
    client.async_infer("identity_delay", delay_input(grpcclient, 1), lambda result, error: results.put(("busy", result, error)))
    time.sleep(IN_FLIGHT_WAIT_S)
    queued = client.async_infer("identity_delay", delay_input(grpcclient, 2), lambda result, error: results.put(("queued", result, error)))
    time.sleep(IN_FLIGHT_WAIT_S)  # the second request reaches the server's queue
    queued.cancel()
    outcomes = {}
    for _ in range(2):
        name, result, error = results.get(timeout=DELAY_MS / 1000 + 30)
        outcomes[name] = (result, error)
    assert outcomes["busy"][1] is None, outcomes["busy"][1]
    assert outcomes["queued"][1] is not None and "CANCELLED" in str(outcomes["queued"][1].status())
    assert wait_for(lambda: counts(server, "identity_delay") == (1, 1), what="one success and one cancelled failure")


def test_http_disconnect_cancels_queued_request(nereid, fresh_repo):
    server = nereid.start(fresh_repo)
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}).encode()
    head = (
        f"POST /v2/models/identity_delay/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    busy = socket.create_connection(("127.0.0.1", server.http_port))
    busy.sendall(head + body)
    time.sleep(IN_FLIGHT_WAIT_S)
    started = time.monotonic()
    gone = socket.create_connection(("127.0.0.1", server.http_port))
    gone.sendall(head + body)
    time.sleep(0.3)
    gone.close()  # the client goes away while its request is queued
    # The dropped request is counted as failed well before the busy one
    # frees the instance it would have waited for.
    assert wait_for(lambda: counts(server, "identity_delay")[1] == 1, what="the dropped request")
    assert counts(server, "identity_delay")[0] == 0
    assert time.monotonic() - started < DELAY_MS / 1000, "the request was not dropped while queued"
    busy.settimeout(30)
    assert busy.recv(65536).startswith(b"HTTP/1.1 200")
    busy.close()
    assert wait_for(lambda: counts(server, "identity_delay") == (1, 1), what="one success and one failure")
