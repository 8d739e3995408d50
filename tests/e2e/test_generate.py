"""Triton's generate extension over HTTP: /generate (one JSON response) and
/generate_stream (Server-Sent Events), read with urllib3 as a streaming
HTTP client would."""

import json

import urllib3


def post(server, path, body, preload=True):
    http = urllib3.PoolManager()
    return http.request(
        "POST", f"http://{server.http_url}{path}", body=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, preload_content=preload, timeout=30,
    )


def read_sse(resp):
    events, buf = [], b""
    for chunk in resp.stream(64):
        buf += chunk
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            lines = [line for line in event.split(b"\n") if line.startswith(b"data:")]
            assert lines, f"event without data: {event!r}"
            events.append(json.loads(b"".join(line[5:].strip() for line in lines)))
    assert buf.strip() == b"", f"trailing bytes {buf!r}"
    return events


def test_generate_maps_inputs_and_outputs(server):
    r = post(server, "/v2/models/identity_bytes/generate", {"id": "g1", "INPUT0": "hello"})
    assert r.status == 200, r.data
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"id": "g1", "model_name": "identity_bytes", "model_version": "1", "OUTPUT0": "hello"}
    # An array becomes a 1-D input (batch dimension 1 added: the model batches).
    r = post(server, "/v2/models/identity_backend_fp32/generate", {"INPUT0": [1.5, 2, -3]})
    assert r.status == 200, r.data
    assert r.json()["OUTPUT0"] == [1.5, 2.0, -3.0]


def test_generate_stream_decoupled(server):
    r = post(server, "/v2/models/repeat_int32/generate_stream", {"IN": [4, 5, 6], "DELAY": [10, 10, 10], "WAIT": 0}, preload=False)
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/event-stream")
    events = read_sse(r)
    assert [(e["OUT"], e["IDX"]) for e in events] == [(4, 0), (5, 1), (6, 2)]
    assert all(e["model_name"] == "repeat_int32" for e in events)


def test_generate_stream_zero_responses(server):
    r = post(server, "/v2/models/square_int32/generate_stream", {"IN": 0}, preload=False)
    assert r.status == 200
    assert read_sse(r) == []


def test_generate_needs_exactly_one_response(server):
    r = post(server, "/v2/models/square_int32/generate", {"IN": 1})
    assert r.status == 200, r.data
    assert r.json()["OUT"] == 1
    r = post(server, "/v2/models/square_int32/generate", {"IN": 3})
    assert r.status == 500
    assert "exactly 1 response" in r.json()["error"]


def test_generate_bad_input_names_it(server):
    r = post(server, "/v2/models/square_int32/generate", {"IN": "three"})
    assert r.status == 400
    assert "IN" in r.json()["error"]
    r = post(server, "/v2/models/repeat_int32/generate_stream", {"IN": [1]})
    assert r.status == 400, r.data
    assert "DELAY" in r.json()["error"]
    r = post(server, "/v2/models/no_such_model/generate", {"IN": 1})
    assert r.status == 404


def test_generate_stream_model_error_is_an_event(server):
    # DELAY shorter than IN: the model fails the request before its first
    # response. As in Triton, the answer takes the error's status and is an
    # event stream holding the error as its one event, so that a client
    # reading events sees it (a Go backend, then a Python model).
    r = post(server, "/v2/models/repeat_int32/generate_stream", {"IN": [1, 2], "DELAY": [1], "WAIT": 0}, preload=False)
    assert r.status == 400
    assert r.headers["Content-Type"].startswith("text/event-stream")
    events = read_sse(r)
    assert len(events) == 1 and list(events[0]) == ["error"] and "DELAY" in events[0]["error"], events
    r = post(server, "/v2/models/repeat_python/generate_stream", {"IN": [1, 2, 3], "DELAY": [1, 2]})
    assert (r.status, r.headers["Content-Type"]) == (400, "text/event-stream; charset=utf-8")
    assert r.data == b'data: {"error":"DELAY has 2 elements but IN has 3"}\n\n'


def test_generate_stream_refusal_before_the_model_is_json(server):
    # Found before the model runs: a plain JSON error, as in Triton.
    for path, body, status in [
        ("/v2/models/no_such_model/generate_stream", {"IN": [1]}, 404),
        ("/v2/models/repeat_python/generate_stream", {"BOGUS": [1]}, 400),
        ("/v2/models/repeat_python/generate_stream", {"IN": ["x"]}, 400),
    ]:
        r = post(server, path, body)
        assert r.status == status, (path, body, r.data)
        assert r.headers["Content-Type"] == "application/json", (path, body, r.headers)
        assert r.json()["error"], (path, body)
