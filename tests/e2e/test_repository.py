"""Model repository extension and model control modes (none, explicit,
poll), and models that fail to load."""

import base64
import json
import os
import shutil
import threading
import time

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from conftest import DELAY_MS, IN_FLIGHT_WAIT_S, identity_config, wait_for, write_identity_model
from e2e_util import assert_tensor_equal, grpc_inputs, http_inputs

EXPLICIT = ["--model-control-mode=explicit", "--load-model=identity_fp32"]
FP32 = np.array([[0.5, -1.0, 2.0]], dtype=np.float32)


def _index(client):
    return {e["name"]: e for e in client.get_model_repository_index()}


def _grpc_index(client):
    return {m.name: m for m in client.get_model_repository_index().models}


def _ready(client, model):
    try:
        return client.is_model_ready(model)
    except InferenceServerException:
        return False


def _infer_fp32(client, model="identity_fp32", data=FP32):
    r = client.infer(model, http_inputs([data], ["FP32"]))
    assert_tensor_equal(r.as_numpy("OUTPUT0"), data)


def _identity_json(name, datatype="TYPE_FP32", max_batch_size=8):
    return json.dumps(
        {
            "name": name,
            "backend": "identity",
            "max_batch_size": max_batch_size,
            "input": [{"name": "INPUT0", "data_type": datatype, "dims": [-1]}],
            "output": [{"name": "OUTPUT0", "data_type": datatype, "dims": [-1]}],
        }
    )


# ---- explicit mode ---------------------------------------------------------


def test_explicit_index_lists_loaded_and_unloaded(nereid, good_repo):
    s = nereid.start(good_repo, EXPLICIT)
    idx = _index(s.http())
    assert set(idx) == {p.name for p in good_repo.iterdir() if p.is_dir()}
    assert idx["identity_fp32"]["state"] == "READY"
    assert idx["identity_fp32"]["version"] == "1"
    for name in ("identity_bytes", "identity_multi", "identity_nobatch_int32"):
        # Never loaded: Triton lists the name only.
        assert idx[name].get("state", "") == "", idx[name]

    ready = s.request("POST", "/v2/repository/index", {"ready": True})
    assert ready.status == 200, ready
    assert [e["name"] for e in ready.json()] == ["identity_fp32"]

    gidx = _grpc_index(s.grpc())
    assert set(gidx) == set(idx)
    assert gidx["identity_fp32"].state == "READY"
    assert gidx["identity_bytes"].state == ""

    assert not _ready(s.http(), "identity_bytes")
    assert s.http().is_server_ready()


def test_explicit_load_unload_reload(nereid, good_repo):
    s = nereid.start(good_repo, EXPLICIT)
    http = s.http()
    words = np.array([[b"load", b"me"]], dtype=np.object_)

    http.load_model("identity_bytes")  # synchronous: ready when it returns
    assert http.is_model_ready("identity_bytes")
    assert _index(http)["identity_bytes"]["state"] == "READY"
    r = http.infer("identity_bytes", http_inputs([words], ["BYTES"]))
    assert_tensor_equal(r.as_numpy("OUTPUT0"), words)

    http.unload_model("identity_bytes")  # asynchronous
    wait_for(lambda: not _ready(http, "identity_bytes"), what="identity_bytes to unload")
    entry = wait_for(
        lambda: _index(http)["identity_bytes"].get("state") == "UNAVAILABLE"
        and _index(http)["identity_bytes"],
        what="index state UNAVAILABLE",
    )
    assert entry["reason"] == "unloaded"
    with pytest.raises(InferenceServerException) as e:
        http.infer("identity_bytes", http_inputs([words], ["BYTES"]))
    assert e.value.status() in ("404", "503"), e.value

    http.load_model("identity_bytes")  # load after unload
    assert http.is_model_ready("identity_bytes")
    r = http.infer("identity_bytes", http_inputs([words], ["BYTES"]))
    assert_tensor_equal(r.as_numpy("OUTPUT0"), words)

    http.load_model("identity_fp32")  # reload of a loaded model
    assert http.is_model_ready("identity_fp32")
    _infer_fp32(http)


def test_explicit_load_unload_grpc(nereid, good_repo):
    s = nereid.start(good_repo, EXPLICIT)
    g = s.grpc()
    g.unload_model("identity_fp32")
    wait_for(lambda: not _ready(g, "identity_fp32"), what="identity_fp32 to unload")
    assert _grpc_index(g)["identity_fp32"].state == "UNAVAILABLE"
    g.load_model("identity_fp32")
    assert g.is_model_ready("identity_fp32")
    r = g.infer("identity_fp32", grpc_inputs([FP32], ["FP32"]))
    assert_tensor_equal(r.as_numpy("OUTPUT0"), FP32)


def test_unload_of_model_not_loaded_succeeds(nereid, good_repo):
    s = nereid.start(good_repo, EXPLICIT)
    s.http().unload_model("identity_multi")  # Triton: not an error
    assert s.http().is_server_live()


def test_load_of_unknown_model_fails(nereid, good_repo):
    s = nereid.start(good_repo, EXPLICIT)
    resp = s.request("POST", "/v2/repository/models/no_such_model/load")
    assert resp.status in (400, 404, 500), resp
    assert "no_such_model" in resp.json()["error"]
    assert s.http().is_server_live()
    _infer_fp32(s.http())


def test_load_with_config_override(nereid, good_repo):
    s = nereid.start(good_repo, ["--model-control-mode=explicit"])
    http = s.http()
    http.load_model("identity_cfg", config=_identity_json("identity_cfg", max_batch_size=2))
    assert http.get_model_config("identity_cfg")["max_batch_size"] == 2
    _infer_fp32(http, "identity_cfg", np.ones((2, 3), np.float32))
    with pytest.raises(InferenceServerException) as e:
        _infer_fp32(http, "identity_cfg", np.ones((3, 3), np.float32))
    assert e.value.status() == "400"

    # Loading without an override reloads config.pbtxt (max_batch_size 8).
    http.load_model("identity_cfg")
    assert http.get_model_config("identity_cfg")["max_batch_size"] == 8
    _infer_fp32(http, "identity_cfg", np.ones((3, 3), np.float32))

    g = s.grpc()
    g.load_model("identity_cfg", config=_identity_json("identity_cfg", max_batch_size=4))
    assert g.get_model_config("identity_cfg").config.max_batch_size == 4


def test_load_with_invalid_config_override(nereid, good_repo):
    s = nereid.start(good_repo, ["--model-control-mode=explicit"])
    resp = s.request(
        "POST",
        "/v2/repository/models/identity_cfg/load",
        {"parameters": {"config": "{not json"}},
    )
    assert resp.status in (400, 500), resp
    assert not _ready(s.http(), "identity_cfg")
    assert s.http().is_server_live()


def test_load_with_files_override(nereid, good_repo):
    """config + file:<version>/<path> entries form a model directory of their
    own: the model need not exist in the repository."""
    s = nereid.start(good_repo, ["--model-control-mode=explicit"])
    http = s.http()
    name = "identity_from_files"
    http.load_model(
        name,
        config=_identity_json(name, "TYPE_INT32", max_batch_size=0),
        files={"file:1/README": b"an override model directory\n"},
    )
    assert http.is_model_ready(name)
    data = np.array([4, 5, 6], dtype=np.int32)
    r = http.infer(name, http_inputs([data], ["INT32"]))
    assert_tensor_equal(r.as_numpy("OUTPUT0"), data)
    assert _index(http)[name]["state"] == "READY"
    assert not (good_repo / name).exists(), "override files must not be written into the repository"


def test_load_files_without_config_is_rejected(nereid, good_repo):
    s = nereid.start(good_repo, ["--model-control-mode=explicit"])
    body = {"parameters": {"file:1/README": base64.b64encode(b"x").decode()}}
    resp = s.request("POST", "/v2/repository/models/identity_cfg/load", body)
    assert resp.status == 400, resp
    assert "error" in resp.json()


def test_unload_with_request_in_flight(nereid, good_repo):
    """Unload returns at once; the request already executing completes."""
    s = nereid.start(good_repo, ["--model-control-mode=explicit", "--load-model=identity_delay"])
    data = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    box = {}

    def run():
        try:
            box["result"] = s.grpc().infer(
                "identity_delay", grpc_inputs([data], ["FP32"]), client_timeout=60
            )
        except Exception as e:  # noqa: BLE001 - reported below
            box["error"] = e

    t = threading.Thread(target=run)
    t.start()
    time.sleep(IN_FLIGHT_WAIT_S)  # the request is now executing (execute_delay_ms = DELAY_MS)
    start = time.monotonic()
    s.http().unload_model("identity_delay")
    unload_s = time.monotonic() - start
    t.join(60)
    assert not t.is_alive()
    assert "error" not in box, f"in-flight request failed: {box.get('error')}"
    assert_tensor_equal(box["result"].as_numpy("OUTPUT0"), data)
    assert unload_s < DELAY_MS / 1000 - 0.5, f"unload took {unload_s:.2f}s: it must not wait for the drain"
    wait_for(lambda: not _ready(s.http(), "identity_delay"), what="identity_delay to unload")
    with pytest.raises(InferenceServerException):
        s.http().infer("identity_delay", http_inputs([data], ["FP32"]))


# ---- none mode ---------------------------------------------------------------


def test_none_mode_rejects_load_and_unload(nereid, good_repo):
    s = nereid.start(good_repo)  # --model-control-mode defaults to none
    http, g = s.http(), s.grpc()
    for call in (lambda c: c.load_model("identity_fp32"), lambda c: c.unload_model("identity_fp32")):
        with pytest.raises(InferenceServerException) as e:
            call(http)
        assert e.value.status() == "503", e.value
        with pytest.raises(InferenceServerException) as e:
            call(g)
        assert e.value.status() == "StatusCode.UNAVAILABLE", e.value
    assert http.is_model_ready("identity_fp32")
    _infer_fp32(http)
    # In none mode every model in the repository is loaded.
    idx = _index(http)
    assert all(e.get("state") == "READY" for e in idx.values()), idx


# ---- poll mode -------------------------------------------------------------


def _replace_file(path, text):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_poll_mode_add_modify_remove(nereid, fresh_repo, tmp_path):
    s = nereid.start(fresh_repo, ["--model-control-mode=poll", "--repository-poll-secs=1"])
    http = s.http()
    name = "identity_polled"
    assert not _ready(http, name)

    # Add: build the model elsewhere, then move it in whole.
    staging = tmp_path / "staging"
    write_identity_model(staging, name, [("INT32", [-1])])
    os.rename(staging / name, fresh_repo / name)
    wait_for(lambda: _ready(http, name), timeout=20, what=f"{name} to load")
    data = np.array([9, 8, 7], dtype=np.int32)
    r = http.infer(name, http_inputs([data], ["INT32"]))
    assert_tensor_equal(r.as_numpy("OUTPUT0"), data)

    # Modify: a changed config.pbtxt is reloaded.
    _replace_file(
        fresh_repo / name / "config.pbtxt", identity_config(name, [("INT32", [-1])], max_batch_size=4)
    )
    wait_for(
        lambda: http.get_model_config(name)["max_batch_size"] == 4,
        timeout=20,
        what=f"{name} to reload with max_batch_size 4",
    )
    batched = np.array([[1, 2], [3, 4]], dtype=np.int32)
    r = http.infer(name, http_inputs([batched], ["INT32"]))
    assert_tensor_equal(r.as_numpy("OUTPUT0"), batched)

    # Remove.
    shutil.rmtree(fresh_repo / name)
    wait_for(lambda: not _ready(http, name), timeout=20, what=f"{name} to unload")
    _infer_fp32(http)  # the others are untouched


def test_poll_mode_rejects_load_and_unload(nereid, fresh_repo):
    s = nereid.start(fresh_repo, ["--model-control-mode=poll", "--repository-poll-secs=1"])
    with pytest.raises(InferenceServerException) as e:
        s.http().load_model("identity_fp32")
    assert e.value.status() == "503"
    with pytest.raises(InferenceServerException) as e:
        s.grpc().unload_model("identity_fp32")
    assert e.value.status() == "StatusCode.UNAVAILABLE"


# ---- models that cannot load -------------------------------------------------


def test_broken_models_are_reported_and_others_served(nereid, broken_repo):
    s = nereid.start(broken_repo, ["--exit-on-error=false"])
    http = s.http()
    idx = _index(http)

    broken = idx["broken_config"]
    assert broken["state"] == "UNAVAILABLE", broken
    assert "config.pbtxt" in broken["reason"], broken
    unknown = idx["unknown_backend"]
    assert unknown["state"] == "UNAVAILABLE", unknown
    assert "no_such_backend" in unknown["reason"], unknown
    assert idx["identity_fp32"]["state"] == "READY"

    gidx = _grpc_index(s.grpc())
    assert gidx["broken_config"].state == "UNAVAILABLE"
    assert "config.pbtxt" in gidx["broken_config"].reason

    assert http.is_server_live()
    # --strict-readiness (default true): not ready while a model failed.
    assert not http.is_server_ready()
    assert not s.grpc().is_server_ready()
    assert not _ready(http, "broken_config")

    _infer_fp32(http)
    r = s.grpc().infer("identity_fp32", grpc_inputs([FP32], ["FP32"]))
    assert_tensor_equal(r.as_numpy("OUTPUT0"), FP32)
    with pytest.raises(InferenceServerException) as e:
        _infer_fp32(http, "broken_config")
    assert e.value.status() in ("404", "503"), e.value


def test_broken_models_without_strict_readiness(nereid, broken_repo):
    s = nereid.start(broken_repo, ["--exit-on-error=false", "--strict-readiness=false"])
    assert s.http().is_server_ready()
    assert s.grpc().is_server_ready()


def test_exit_on_error_default_exits_nonzero(nereid, broken_repo):
    s = nereid.start(broken_repo, wait=False)  # --exit-on-error defaults to true
    rc = s.wait_exit(30)
    assert rc != 0, f"want a non-zero exit status\n{s.log_tail()}"
    log = s.log_tail(400)
    assert "broken_config" in log or "unknown_backend" in log, log


def test_explicit_load_of_broken_model_fails(nereid, broken_repo):
    s = nereid.start(broken_repo, ["--model-control-mode=explicit", "--exit-on-error=false"])
    with pytest.raises(InferenceServerException) as e:
        s.http().load_model("broken_config")
    assert e.value.status() in ("400", "500"), e.value
    assert "config.pbtxt" in e.value.message()
    assert not _ready(s.http(), "broken_config")
    assert s.http().is_server_live()
