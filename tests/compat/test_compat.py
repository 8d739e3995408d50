"""Nereid against a real Triton: the same requests, the same answers.

Both servers run on loopback on one model repository of Python models
(Triton's model.py contract, which both serve): identity_python, add_sub,
metric_python, simple_pre and repeat_python (decoupled) from
model_repo_examples, plus identity_spare (a copy of identity_python). A
second pair runs in explicit model control mode for load and unload. Every
request, good and bad, goes to both, over HTTP (raw http.client, so that
the exact status, media type and JSON body are seen) and gRPC (raw stubs:
the exact code and details; tritonclient for compression). The answers are
compared by compat_diff: status codes, media types, JSON shapes (keys,
types, lengths), the values that are not volatile (durations, timestamps)
and error texts.

A difference fails the test unless ALLOWLIST below names it with its
reason; an allowlist entry that no longer matches anything fails the last
test, so the list stays true. Set COMPAT_REPORT=<file> to write every
difference seen (allowed or not) to a file.

The real Triton is the tritonserver of the PyPI wheel nvidia-pytriton
(Triton 2.51, Python backend only), installed by scripts/install-triton.sh
into .triton/: `make compat` runs the installer and this suite.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import pathlib
import shutil
import sys
import zlib

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf.json_format import MessageToDict
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException
from tritonclient.utils import shared_memory as shm

E2E = pathlib.Path(__file__).resolve().parents[1] / "e2e"
sys.path.insert(0, str(E2E))

import conftest as e2e  # noqa: E402 - tests/e2e's server launcher, as a plain module
from compat_diff import Allowed, Allowlist, Answer, compare, http_answer, names_what_triton_names  # noqa: E402
from triton_oracle import TRITON_START_TIMEOUT_S, Triton, available  # noqa: E402

if not available():
    pytest.skip("the .triton/ install is missing: run scripts/install-triton.sh (make compat does)", allow_module_level=True)

MODELS = ["identity_python", "add_sub", "metric_python", "repeat_python", "simple_pre"]
# A copy of identity_python for requests that Triton executes and Nereid
# refuses (see ALLOWLIST): its statistics are not compared, so that those
# requests do not shift the counts of the others.
SPARE = "identity_spare"
# A copy of repeat_python for the one request that Triton runs to its end
# and Nereid cancels (generate_decoupled_many): not compared either.
REPEAT_SPARE = "repeat_spare"
TIMEOUT_S = 30

# Flags for Nereid only: Triton 2.51 always allows client shared memory,
# Nereid only with --allow-client-shm=true.
NEREID_FLAGS = ["--allow-client-shm=true"]

# --------------------------------------------------------------------------
# Known differences. Each entry: "<case> <kind> <path>" with * for any text,
# an optional condition on the difference, and why it is not a bug.
# Everything else that differs fails.


def client_mistake(d) -> bool:
    """Nereid 400 where Triton 2.51 answers 500 (or 503)."""
    return d.nereid == 400 and d.triton in (500, 503)


def same_lead(d) -> bool:
    """Both error texts agree up to their first ': ' (the part that says
    what was wrong); the detail after it differs."""
    return all(isinstance(x, str) and ": " in x for x in (d.nereid, d.triton)) and (
        d.nereid.split(": ", 1)[0] == d.triton.split(": ", 1)[0]
    )


def unlabelled_json(d) -> bool:
    return d.triton == "text/plain" and d.nereid in (None, "application/json")


ALLOWLIST = Allowlist(
    [
        # -- identity
        Allowed("*server_metadata value $.version",
                "Nereid reports its own version, Triton 2.51.0; clients print it, none compares it."),
        # -- media types
        Allowed("* content-type ",
                "Triton labels empty bodies and the JSON error bodies its HTTP layer writes itself text/plain; "
                "Nereid labels JSON application/json and an empty body not at all. Clients go by the status and "
                "parse the body as JSON whatever the label (tritonclient's _raise_if_error).",
                when=unlabelled_json),
        # -- client mistakes: Triton 500, Nereid 400
        *[
            Allowed(f"{case} status ",
                    "Triton 2.51 reports failures of its JSON reader (malformed JSON, a value of the wrong JSON type, "
                    "a missing member), an unmappable shared-memory range and a bad config override as INTERNAL (500) "
                    "and a bad log_format as UNAVAILABLE (503); they are the client's mistakes, and Nereid answers "
                    "400 (a client error is the client's 400, naming the problem).",
                    when=client_mistake)
            for case in [
                "*bad_json", "http_index_bad_ready", "explicit_load_bad_config", "explicit_load_file_without_config",
                "infer_bad_negative_dim", "infer_bad_too_few_values", "infer_bad_too_many_values",
                "infer_bad_string_for_number", "infer_bad_inputs_not_list", "infer_bad_input_without_shape",
                "trace_bad_rate_type", "log_bad_verbose", "log_bad_type", "log_bad_format", "shm_register_past_end",
            ]
        ],
        # -- error texts
        Allowed("http_index_bad_ready message ",
                "Triton's text is its JSON reader's ('attempt to access JSON non-boolean as boolean'); Nereid's "
                "names the member: Unable to parse 'ready': expected a boolean."),
        Allowed("infer_bad_extra_input message ",
                "Triton counts inputs ('expected 1 inputs but got 2 ... missing required input(s) ]', an empty "
                "list); Nereid names the input the model does not have."),
        Allowed("*infer_bad_missing_input message ",
                "Both name the missing input; Triton also lists the inputs given ('Got input(s) [...]')."),
        Allowed("infer_bad_wrong_shape message ",
                "Both inputs have the wrong shape; Triton reports INPUT1 first, Nereid INPUT0 (request order), and "
                "Triton adds a NOTE about the batch dimension."),
        Allowed("infer_binary_size_mismatch message ",
                "Both 400; Nereid says which input's byte size is wrong and by how much, Triton only that there is "
                "'unexpected additional input data for model'."),
        Allowed("grpc_infer_bad_raw_size_mismatch message ",
                "Both INVALID_ARGUMENT naming the input and both sizes; Triton also names the model."),
        Allowed("infer_bad_invalid_datatype message ",
                "Triton: 'invalid datatype for input INPUT0'; Nereid also names the datatype sent."),
        Allowed("* message ",
                "Wording differs (and Triton 2.51 prefixes inference errors with '[request id: <id>] '); no client "
                "parses these texts. The condition holds Nereid to naming every quoted subject (model, input, "
                "datatype, parameter) that Triton's text names.",
                when=names_what_triton_names),
        Allowed("* message ",
                "The same lead ('Unable to parse 'data'', 'failed to parse the request JSON buffer'); the detail "
                "after it comes from another JSON reader (RapidJSON in Triton, Go's in Nereid).",
                when=same_lead),
        Allowed("compress_request_corrupt message ",
                "Both 400. Triton 2.51 does not report that the gzip body does not inflate: it goes on to read the "
                "bytes as a raw binary request and complains about the model's input count; Nereid says the gzip "
                "data is invalid."),
        # -- Triton accepts, Nereid refuses (fail closed)
        Allowed("infer_bad_empty_body *",
                "Triton 2.51 takes a POST with an empty body as a binary request holding one zero-byte input and "
                "runs the model on a [1, 0] tensor; Nereid refuses it (400, 'the document is empty'). The request "
                "goes to identity_spare, whose statistics are not compared."),
        Allowed("trace_bad_level *",
                "Triton ignores an unknown trace level (200, settings unchanged); Nereid refuses it naming the "
                "accepted levels (fail closed)."),
        Allowed("trace_unknown_key *",
                "Triton ignores an unknown trace setting (200); Nereid refuses it naming the known ones (fail closed)."),
        Allowed("log_unknown_key *",
                "Triton ignores an unknown log setting (200); Nereid refuses it naming the known ones (fail closed)."),
        Allowed("generate_decoupled_many *",
                "/generate on a model that sends 3 responses: Triton answers 200 with an {'error': ...} body, so a "
                "client checking the status takes it for a success; Nereid sends the same text with 500."),
        # -- Nereid-only data
        Allowed("*stats* shape $.model_stats[*].memory_usage.length",
                "Nereid reports the CPU memory a model and its instances hold (the figure its model cache counts); "
                "Triton's Python backend reports none. Same field, same element shape."),
        Allowed("*stats* shape $.model_stats[*].response_stats.*",
                "Nereid fills the per-response statistics for Python models; Triton 2.51's Python backend does not "
                "report them (response_stats stays {}). Same field, same element shape."),
        # -- statistics of requests a Python model answered with an error
        *[
            Allowed(pattern,
                    "A request that a Python model answers with InferenceResponse(error=...) (simple_pre with a bad "
                    "TEXT, repeat_python with DELAY and IN of different lengths): Triton 2.51's Python backend counts "
                    "it as a success, with its queue and compute phases; its other backends, and Nereid for every "
                    "backend, count a request answered with an error as a failure (Triton's users report the Python "
                    "backend's count as a bug: triton-inference-server/server#7713). The client sees the same error "
                    "from both.")
            for pattern in [
                "stats_simple_pre value $.model_stats[0].*", "stats_repeat_python value $.model_stats[0].*",
                "*stats_all value $.model_stats[3].*", "*stats_all value $.model_stats[4].*",
            ]
        ],
        Allowed("stream_repeat_empty_final value $[3].infer_response.model_version",
                "The flag-only final stream response: Triton leaves model_version empty, Nereid names the version; "
                "it carries no outputs and clients read only its final flag."),
    ]
)

# --------------------------------------------------------------------------
# Servers


def build_repo(repo: pathlib.Path) -> pathlib.Path:
    repo.mkdir(parents=True)
    for name in MODELS:
        shutil.copytree(e2e.EXAMPLES / name, repo / name)
    for source, spare in (("identity_python", SPARE), ("repeat_python", REPEAT_SPARE)):
        shutil.copytree(e2e.EXAMPLES / source, repo / spare)
        config = repo / spare / "config.pbtxt"
        config.write_text(config.read_text().replace(f'name: "{source}"', f'name: "{spare}"'))
    return repo


class Pair:
    """A Nereid and a Triton on the same repository and flags."""

    def __init__(self, tmp: pathlib.Path, repo: pathlib.Path, flags=()):
        self.factory = e2e.NereidFactory(tmp)
        self.nereid = e2e.Nereid(repo=repo, flags=NEREID_FLAGS + list(flags), log_path=tmp / "nereid.log")
        self.triton = Triton(repo=repo, flags=list(flags), log_path=tmp / "triton.log")
        self.factory.servers += [self.nereid, self.triton]
        # Both start at once; Triton takes the longer.
        try:
            self.nereid.start(wait=False)
            self.triton.start(wait=False)
            self.nereid.wait_live()
            self.triton.wait_live(timeout=TRITON_START_TIMEOUT_S)
        except BaseException:
            self.factory.stop_all()
            raise

    def stop(self):
        e2e._factory_teardown(self.factory)

    def both(self):
        return (self.nereid, self.triton)


def _wait_ready(pair: Pair):
    for s in pair.both():
        e2e.wait_for(lambda s=s: s.request("GET", "/v2/health/ready", timeout=5).status == 200, what=f"{s} ready")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compat_none")
    p = Pair(tmp, build_repo(tmp / "repo"))
    _wait_ready(p)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def explicit(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compat_explicit")
    p = Pair(tmp, build_repo(tmp / "repo"), ["--model-control-mode=explicit", "--load-model=identity_python"])
    _wait_ready(p)
    yield p
    p.stop()


# --------------------------------------------------------------------------
# Sending and comparing


def http_of(server, method, path, body=b"", headers=None) -> Answer:
    r = server.request(method, path, body=body, headers=headers, timeout=TIMEOUT_S)
    a = http_answer(r.status, r.headers, r.body)
    a.headers = r.headers
    return a


def as_dict(message) -> dict:
    # Zeros and empty strings printed too: a field that is 0 on one side is
    # a value difference, not a missing key.
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def grpc_of(server, rpc, request) -> Answer:
    channel, stub = server.grpc_stub()
    try:
        resp = getattr(stub, rpc)(request, timeout=TIMEOUT_S)
        return Answer(status="OK", body=as_dict(resp))
    except grpc.RpcError as e:
        return Answer(status=e.code().name, message=e.details())
    finally:
        channel.close()


def stream_of(server, requests) -> Answer:
    """ModelStreamInfer: every message the stream carries, then its status."""
    channel, stub = server.grpc_stub()
    got = []
    try:
        for resp in stub.ModelStreamInfer(iter(requests), timeout=TIMEOUT_S):
            got.append(as_dict(resp))
            params = resp.infer_response.parameters
            final = "triton_final_response" in params and params["triton_final_response"].bool_param
            # One request per stream here: its final response (or its
            # error) ends it.
            if resp.error_message or final or "triton_final_response" not in params:
                break
        return Answer(status="OK", body=got)
    except grpc.RpcError as e:
        return Answer(status=e.code().name, body=got, message=e.details())
    finally:
        channel.close()


class Check:
    """The differences of one test; `done()` fails on those not allowed."""

    def __init__(self):
        self.bad = []

    def diff(self, case, n: Answer, t: Answer, values=True, volatile=()):
        self.bad += ALLOWLIST.sift(compare(case, n, t, values=values, volatile=volatile), cases=[case])
        return n, t

    def http(self, pair, case, method, path, body=b"", headers=None, values=True, volatile=(), want=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        n = http_of(pair.nereid, method, path, body, headers)
        t = http_of(pair.triton, method, path, body, headers)
        if want is not None:
            # What this request is meant to get; checked on Triton, so a
            # case cannot compare two answers to a request that went wrong.
            assert t.status == want, f"{case}: Triton answered {t.brief()}, the case expects {want}"
        return self.diff(case, n, t, values, volatile)

    def grpc(self, pair, case, rpc, request, values=True, volatile=(), want=None):
        n = grpc_of(pair.nereid, rpc, request)
        t = grpc_of(pair.triton, rpc, request)
        if want is not None:
            assert t.status == want, f"{case}: Triton answered {t.brief()} {t.message}, the case expects {want}"
        return self.diff(case, n, t, values, volatile)

    def done(self):
        assert not self.bad, "differences from Triton not in the allowlist:\n" + "\n".join(map(str, self.bad))


@pytest.fixture
def check():
    return Check()


def pb(cls, **kw):
    return getattr(service_pb2, cls)(**kw)


# --------------------------------------------------------------------------
# Health, metadata, configuration


def test_health(pair, check):
    check.http(pair, "http_live", "GET", "/v2/health/live", want=200)
    check.http(pair, "http_ready", "GET", "/v2/health/ready", want=200)
    for m in MODELS:
        check.http(pair, f"http_model_ready_{m}", "GET", f"/v2/models/{m}/ready", want=200)
    check.http(pair, "http_model_ready_version", "GET", "/v2/models/add_sub/versions/1/ready", want=200)
    check.http(pair, "http_model_ready_bad_version", "GET", "/v2/models/add_sub/versions/2/ready")
    check.http(pair, "http_model_ready_unknown", "GET", "/v2/models/nope/ready")
    check.grpc(pair, "grpc_live", "ServerLive", pb("ServerLiveRequest"), want="OK")
    check.grpc(pair, "grpc_ready", "ServerReady", pb("ServerReadyRequest"), want="OK")
    check.grpc(pair, "grpc_model_ready", "ModelReady", pb("ModelReadyRequest", name="add_sub"), want="OK")
    check.grpc(pair, "grpc_model_ready_bad_version", "ModelReady", pb("ModelReadyRequest", name="add_sub", version="2"))
    check.grpc(pair, "grpc_model_ready_unknown", "ModelReady", pb("ModelReadyRequest", name="nope"))
    check.done()


def test_metadata(pair, check):
    check.http(pair, "http_server_metadata", "GET", "/v2", want=200)
    for m in MODELS:
        check.http(pair, f"http_model_metadata_{m}", "GET", f"/v2/models/{m}", want=200)
        check.grpc(pair, f"grpc_model_metadata_{m}", "ModelMetadata", pb("ModelMetadataRequest", name=m), want="OK")
    check.http(pair, "http_model_metadata_version", "GET", "/v2/models/add_sub/versions/1", want=200)
    check.http(pair, "http_model_metadata_bad_version", "GET", "/v2/models/add_sub/versions/9")
    check.http(pair, "http_model_metadata_unknown", "GET", "/v2/models/nope", want=404)
    check.http(pair, "http_unknown_path", "GET", "/v2/nothing/here")
    check.http(pair, "http_wrong_method", "DELETE", "/v2/models/add_sub")
    check.grpc(pair, "grpc_server_metadata", "ServerMetadata", pb("ServerMetadataRequest"), want="OK")
    check.grpc(pair, "grpc_model_metadata_bad_version", "ModelMetadata", pb("ModelMetadataRequest", name="add_sub", version="9"))
    check.grpc(pair, "grpc_model_metadata_unknown", "ModelMetadata", pb("ModelMetadataRequest", name="nope"), want="NOT_FOUND")
    check.done()


def test_model_config(pair, check):
    for m in MODELS:
        check.http(pair, f"http_config_{m}", "GET", f"/v2/models/{m}/config", want=200)
        check.grpc(pair, f"grpc_config_{m}", "ModelConfig", pb("ModelConfigRequest", name=m), want="OK")
    check.http(pair, "http_config_unknown", "GET", "/v2/models/nope/config")
    check.grpc(pair, "grpc_config_unknown", "ModelConfig", pb("ModelConfigRequest", name="nope"))
    check.done()


# --------------------------------------------------------------------------
# Repository


def test_repository_none_mode(pair, check):
    check.http(pair, "http_index", "POST", "/v2/repository/index", want=200)
    check.http(pair, "http_index_ready", "POST", "/v2/repository/index", {"ready": True}, want=200)
    check.http(pair, "http_index_bad_ready", "POST", "/v2/repository/index", {"ready": "yes"})
    check.http(pair, "http_index_bad_json", "POST", "/v2/repository/index", b"{nope")
    check.http(pair, "http_load_none_mode", "POST", "/v2/repository/models/add_sub/load")
    check.http(pair, "http_unload_none_mode", "POST", "/v2/repository/models/add_sub/unload")
    check.grpc(pair, "grpc_index", "RepositoryIndex", pb("RepositoryIndexRequest"), want="OK")
    check.grpc(pair, "grpc_index_ready", "RepositoryIndex", pb("RepositoryIndexRequest", ready=True), want="OK")
    check.grpc(pair, "grpc_load_none_mode", "RepositoryModelLoad", pb("RepositoryModelLoadRequest", model_name="add_sub"))
    check.grpc(pair, "grpc_unload_none_mode", "RepositoryModelUnload", pb("RepositoryModelUnloadRequest", model_name="add_sub"))
    check.done()


def _settled_index(server):
    """The repository index once no model is LOADING or UNLOADING (Triton
    unloads asynchronously)."""

    def settled():
        a = http_of(server, "POST", "/v2/repository/index")
        busy = any(m.get("state") in ("LOADING", "UNLOADING") for m in a.body)
        return None if busy else a

    return e2e.wait_for(settled, timeout=TIMEOUT_S, what="a settled repository")


def test_repository_explicit_mode(explicit, check):
    p = explicit
    check.http(p, "explicit_index_initial", "POST", "/v2/repository/index", want=200)
    check.http(p, "explicit_ready_unloaded", "GET", "/v2/models/add_sub/ready")
    check.http(p, "explicit_metadata_unloaded", "GET", "/v2/models/add_sub")
    check.grpc(p, "explicit_grpc_ready_unloaded", "ModelReady", pb("ModelReadyRequest", name="add_sub"))
    check.http(p, "explicit_config_unloaded", "GET", "/v2/models/add_sub/config")
    check.grpc(p, "explicit_grpc_config_unloaded", "ModelConfig", pb("ModelConfigRequest", name="add_sub"))
    check.http(p, "explicit_infer_unloaded", "POST", "/v2/models/add_sub/infer", infer_body(ADD_SUB))
    check.http(p, "explicit_stats_unloaded", "GET", "/v2/models/add_sub/stats")
    check.http(p, "explicit_load", "POST", "/v2/repository/models/add_sub/load", want=200)
    check.http(p, "explicit_reload", "POST", "/v2/repository/models/add_sub/load", want=200)
    check.http(p, "explicit_infer_loaded", "POST", "/v2/models/add_sub/infer", infer_body(ADD_SUB), want=200)
    check.http(p, "explicit_ready_loaded", "GET", "/v2/models/add_sub/ready", want=200)
    check.http(p, "explicit_index_loaded", "POST", "/v2/repository/index", want=200)
    check.http(p, "explicit_load_unknown", "POST", "/v2/repository/models/nope/load")
    check.http(p, "explicit_load_bad_json", "POST", "/v2/repository/models/add_sub/load", b"{nope")
    check.http(p, "explicit_load_bad_config", "POST", "/v2/repository/models/add_sub/load",
               {"parameters": {"config": "{not json"}})
    check.http(p, "explicit_load_file_without_config", "POST", "/v2/repository/models/add_sub/load",
               {"parameters": {"file:1/model.py": base64.b64encode(b"x = 1\n").decode()}})
    # A configuration override: add_sub with a batch limit of 4.
    config = json.loads(http_of(p.triton, "GET", "/v2/models/add_sub/config").raw)
    override = {"name": "add_sub", "backend": "python", "max_batch_size": 4,
                "input": config["input"], "output": config["output"]}
    check.http(p, "explicit_load_override", "POST", "/v2/repository/models/add_sub/load",
               {"parameters": {"config": json.dumps(override)}}, want=200)
    check.http(p, "explicit_config_after_override", "GET", "/v2/models/add_sub/config", want=200)
    check.http(p, "explicit_unload", "POST", "/v2/repository/models/add_sub/unload", want=200)
    check.diff("explicit_index_unloaded", _settled_index(p.nereid), _settled_index(p.triton))
    check.http(p, "explicit_ready_after_unload", "GET", "/v2/models/add_sub/ready")
    check.http(p, "explicit_unload_unknown", "POST", "/v2/repository/models/nope/unload")
    check.http(p, "explicit_unload_dependents", "POST", "/v2/repository/models/identity_python/unload",
               {"parameters": {"unload_dependents": True}}, want=200)
    check.diff("explicit_index_unloaded_dependents", _settled_index(p.nereid), _settled_index(p.triton))
    # gRPC
    check.grpc(p, "explicit_grpc_load", "RepositoryModelLoad", pb("RepositoryModelLoadRequest", model_name="add_sub"), want="OK")
    check.grpc(p, "explicit_grpc_index", "RepositoryIndex", pb("RepositoryIndexRequest"), want="OK")
    check.grpc(p, "explicit_grpc_load_unknown", "RepositoryModelLoad", pb("RepositoryModelLoadRequest", model_name="nope"))
    check.grpc(p, "explicit_grpc_unload", "RepositoryModelUnload", pb("RepositoryModelUnloadRequest", model_name="add_sub"), want="OK")
    check.diff("explicit_grpc_index_unloaded", _settled_index(p.nereid), _settled_index(p.triton))
    check.grpc(p, "explicit_grpc_unload_unknown", "RepositoryModelUnload", pb("RepositoryModelUnloadRequest", model_name="nope"))
    check.done()


# --------------------------------------------------------------------------
# Inference over HTTP


def infer_body(inputs, outputs=None, **extra):
    """A JSON inference body; inputs: (name, datatype, shape, data)."""
    body = {"inputs": [{"name": n, "datatype": d, "shape": s, "data": v} for n, d, s, v in inputs]}
    if outputs is not None:
        body["outputs"] = outputs
    body.update(extra)
    return body


ROW = list(range(16))
ADD_SUB = [("INPUT0", "INT32", [1, 16], ROW), ("INPUT1", "INT32", [1, 16], ROW[::-1])]


def test_http_infer_good(pair, check):
    url = "/v2/models/{}/infer"
    check.http(pair, "infer_identity", "POST", url.format("identity_python"),
               infer_body([("INPUT0", "FP32", [1, 4], [1.5, -2.0, 0.25, 3e38])]), want=200)
    check.http(pair, "infer_identity_id", "POST", url.format("identity_python"),
               infer_body([("INPUT0", "FP32", [2, 2], [[1, 2], [3, 4]])], id="req-7"), want=200)
    check.http(pair, "infer_add_sub", "POST", url.format("add_sub"),
               infer_body([(n, d, [2, 16], v + v) for n, d, _, v in ADD_SUB]), want=200)
    check.http(pair, "infer_add_sub_one_output", "POST", url.format("add_sub"),
               infer_body(ADD_SUB, outputs=[{"name": "OUTPUT1"}]), want=200)
    check.http(pair, "infer_add_sub_version", "POST", "/v2/models/add_sub/versions/1/infer",
               infer_body(ADD_SUB), want=200)
    check.http(pair, "infer_metric", "POST", url.format("metric_python"),
               infer_body([("INPUT0", "INT32", [3], [7, 8, 9])]), want=200)
    check.http(pair, "infer_parameters", "POST", url.format("identity_python"),
               infer_body([("INPUT0", "FP32", [1, 1], [1])], parameters={"custom_key": "v", "n": 3}), want=200)
    text = ",".join(str(i) for i in range(16))
    check.http(pair, "infer_bytes_input", "POST", url.format("simple_pre"),
               {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [2, 1], "data": [text, text]}]}, want=200)
    check.http(pair, "infer_classification", "POST", url.format("identity_python"),
               infer_body([("INPUT0", "FP32", [1, 4], [0.5, 3.0, -1.0, 2.0])],
                          outputs=[{"name": "OUTPUT0", "parameters": {"classification": 2}}]), want=200)
    check.http(pair, "infer_binary_output_param", "POST", url.format("add_sub"),
               infer_body(ADD_SUB, outputs=[{"name": "OUTPUT0", "parameters": {"binary_data": True}}]), want=200,
               values=False)
    check.done()


def _binary_request(model_inputs, outputs=None):
    ins = []
    for name, arr, dt in model_inputs:
        i = httpclient.InferInput(name, list(arr.shape), dt)
        i.set_data_from_numpy(arr, binary_data=True)
        ins.append(i)
    outs = [httpclient.InferRequestedOutput(o, binary_data=True) for o in outputs] if outputs else None
    body, json_size = httpclient.InferenceServerClient.generate_request_body(ins, outputs=outs)
    return body, {"Inference-Header-Content-Length": str(json_size), "Content-Type": "application/octet-stream"}


def _binary_answer(a: Answer) -> Answer:
    """A binary response: its JSON header as the body, the tensor bytes
    after it as `raw` (compared as bytes)."""
    size = a.headers.get("inference-header-content-length")
    if size is None:
        return a
    size = int(size)
    out = Answer(status=a.status, content_type=a.content_type, body=json.loads(a.raw[:size]), raw=a.raw[size:])
    return out


def test_http_infer_binary(pair, check):
    a = np.arange(32, dtype=np.int32).reshape(2, 16)
    body, headers = _binary_request([("INPUT0", a, "INT32"), ("INPUT1", a * 3, "INT32")], ["OUTPUT0", "OUTPUT1"])
    n = http_of(pair.nereid, "POST", "/v2/models/add_sub/infer", body, headers)
    t = http_of(pair.triton, "POST", "/v2/models/add_sub/infer", body, headers)
    assert t.status == 200, t.brief()
    check.diff("infer_binary_headers", Answer(200, body=_header_view(n)), Answer(200, body=_header_view(t)))
    nb, tb = _binary_answer(n), _binary_answer(t)
    check.diff("infer_binary", nb, tb)
    assert tb.raw == (a + a * 3).tobytes() + (a - a * 3).tobytes()
    # Binary input, JSON output (no binary_data asked).
    body, headers = _binary_request([("INPUT0", np.ones((1, 4), np.float32), "FP32")])
    check.http(pair, "infer_binary_in_json_out", "POST", "/v2/models/identity_python/infer", body, headers, want=200)
    # Inference-Header-Content-Length: 0, a raw binary request: the body is
    # the one input's bytes, every output comes back binary.
    raw = np.array([[1.0, 2.0, 3.0]], np.float32).tobytes()
    n = http_of(pair.nereid, "POST", "/v2/models/identity_python/infer", raw, {"Inference-Header-Content-Length": "0"})
    t = http_of(pair.triton, "POST", "/v2/models/identity_python/infer", raw, {"Inference-Header-Content-Length": "0"})
    assert t.status == 200, t.brief()
    check.diff("infer_raw_binary_headers", Answer(200, body=_header_view(n)), Answer(200, body=_header_view(t)))
    check.diff("infer_raw_binary", _binary_answer(n), _binary_answer(t))
    check.http(pair, "infer_raw_binary_two_inputs", "POST", "/v2/models/add_sub/infer", raw,
               {"Inference-Header-Content-Length": "0"})
    # Inference-Header-Content-Length past the end of the body.
    headers = dict(headers, **{"Inference-Header-Content-Length": str(len(body) + 10)})
    check.http(pair, "infer_binary_header_too_long", "POST", "/v2/models/identity_python/infer", body, headers)
    # binary_data_size that disagrees with the bytes sent.
    js = json.dumps(infer_body([("INPUT0", "FP32", [1, 4], None)])).replace('"data": null', '"parameters": {"binary_data_size": 12}').encode()
    raw = np.ones(4, np.float32).tobytes()
    check.http(pair, "infer_binary_size_mismatch", "POST", "/v2/models/identity_python/infer", js + raw,
               {"Inference-Header-Content-Length": str(len(js))})
    check.done()


def _header_view(a: Answer) -> dict:
    """The response headers a client reads for a binary response."""
    h = a.headers
    return {
        "inference-header-content-length": "inference-header-content-length" in h,
        "content-type": h.get("content-type"),
    }


def test_http_infer_bad(pair, check):
    url = "/v2/models/{}/infer"
    fp = [("INPUT0", "FP32", [1, 4], [1, 2, 3, 4])]
    cases = {
        "unknown_model": ("nope", infer_body(fp)),
        "unknown_version": ("add_sub/versions/7", infer_body(ADD_SUB)),
        "unknown_input": ("identity_python", infer_body([("BOGUS", "FP32", [1, 4], [1, 2, 3, 4])])),
        "extra_input": ("identity_python", infer_body(fp + [("BOGUS", "FP32", [1, 4], [1, 2, 3, 4])])),
        "wrong_datatype": ("identity_python", infer_body([("INPUT0", "INT32", [1, 4], [1, 2, 3, 4])])),
        "invalid_datatype": ("identity_python", infer_body([("INPUT0", "FLOAT", [1, 4], [1, 2, 3, 4])])),
        "wrong_shape": ("add_sub", infer_body([(n, d, [1, 15], v[:15]) for n, d, _, v in ADD_SUB])),
        "wrong_rank": ("add_sub", infer_body([(n, d, [16], v) for n, d, _, v in ADD_SUB])),
        "batch_too_large": ("add_sub", infer_body([(n, d, [9, 16], v * 9) for n, d, _, v in ADD_SUB])),
        "negative_dim": ("identity_python", infer_body([("INPUT0", "FP32", [1, -4], [1, 2, 3, 4])])),
        "missing_input": ("add_sub", infer_body(ADD_SUB[:1])),
        "duplicate_input": ("add_sub", infer_body(ADD_SUB + ADD_SUB[:1])),
        "too_few_values": ("identity_python", infer_body([("INPUT0", "FP32", [1, 4], [1, 2, 3])])),
        "too_many_values": ("identity_python", infer_body([("INPUT0", "FP32", [1, 4], [1, 2, 3, 4, 5])])),
        "string_for_number": ("identity_python", infer_body([("INPUT0", "FP32", [1, 1], ["x"])])),
        "unknown_output": ("identity_python", infer_body(fp, outputs=[{"name": "NOPE"}])),
        "no_inputs": ("identity_python", {"inputs": []}),
        "inputs_not_list": ("identity_python", {"inputs": {}}),
        "input_without_shape": ("identity_python", {"inputs": [{"name": "INPUT0", "datatype": "FP32", "data": [1]}]}),
        "bad_json": ("identity_python", b"{not json"),
        "empty_body": (SPARE, b""),
        "decoupled_model": ("repeat_python", infer_body([("IN", "INT32", [2], [1, 2])])),
        "decoupled_model_error": ("repeat_python", infer_body([("IN", "INT32", [2], [1, 2]), ("DELAY", "UINT32", [1], [1])])),
        # simple_pre answers INVALID_ARG for text that is not 16 integers.
        "model_error": ("simple_pre", {"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1, 1], "data": ["1,2"]}]}),
    }
    # Requests Triton 2.51 executes although they are malformed (see ALLOWLIST).
    triton_accepts = {"empty_body"}
    for name, (model, body) in cases.items():
        n, t = check.http(pair, f"infer_bad_{name}", "POST", url.format(model), body)
        assert (t.status == 200) == (name in triton_accepts), f"{name}: Triton answered {t.brief()}"
    check.http(pair, "infer_wrong_method", "GET", url.format("identity_python"))
    check.done()


def test_http_compression(pair, check):
    """Content-Encoding on requests, Accept-Encoding on responses."""
    url = "/v2/models/add_sub/infer"
    plain = json.dumps(infer_body(ADD_SUB)).encode()
    for enc, data in (("gzip", gzip.compress(plain)), ("deflate", zlib.compress(plain))):
        check.http(pair, f"compress_request_{enc}", "POST", url, data, {"Content-Encoding": enc}, want=200)
    check.http(pair, "compress_request_unknown", "POST", url, plain, {"Content-Encoding": "br"})
    check.http(pair, "compress_request_corrupt", "POST", url, b"\x1f\x8bnot gzip", {"Content-Encoding": "gzip"})
    for enc in ("gzip", "deflate"):
        answers = []
        for s in pair.both():
            a = http_of(s, "POST", url, plain, {"Accept-Encoding": enc})
            got = a.headers.get("content-encoding")
            if got == "gzip":
                a = http_answer(a.status, a.headers, gzip.decompress(a.raw))
            elif got == "deflate":
                a = http_answer(a.status, a.headers, zlib.decompress(a.raw))
            a.body = {"content-encoding": got, "body": a.body}
            answers.append(a)
        assert answers[1].status == 200, answers[1].brief()
        check.diff(f"compress_response_{enc}", *answers)
    check.done()


def test_grpc_compression(pair, check):
    """tritonclient's compression_algorithm, both ways."""
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    got = []
    for s in pair.both():
        client = s.grpc()
        try:
            ins = []
            for name in ("INPUT0", "INPUT1"):
                i = grpcclient.InferInput(name, [1, 16], "INT32")
                i.set_data_from_numpy(a)
                ins.append(i)
            r = client.infer("add_sub", ins, compression_algorithm="gzip", client_timeout=TIMEOUT_S)
            got.append(Answer("OK", body=as_dict(r.get_response())))
        except InferenceServerException as e:
            got.append(Answer(e.status(), message=e.message()))
        finally:
            client.close()
    assert got[1].status == "OK", got[1]
    check.diff("grpc_compress_gzip", *got)
    check.done()


# --------------------------------------------------------------------------
# Inference over gRPC


def grpc_infer(model, inputs, raw=None, outputs=None, version="", **kw):
    """inputs: (name, datatype, shape[, contents dict]); raw: raw_input_contents."""
    req = service_pb2.ModelInferRequest(model_name=model, model_version=version, **kw)
    for spec in inputs:
        name, dt, shape = spec[:3]
        t = req.inputs.add(name=name, datatype=dt, shape=shape)
        if len(spec) > 3:
            for field, values in spec[3].items():
                getattr(t.contents, field).extend(values)
    if raw is not None:
        req.raw_input_contents.extend(raw)
    for o in outputs or []:
        req.outputs.add(name=o)
    return req


def test_grpc_infer(pair, check):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    raws = [a.tobytes(), (a * 2).tobytes()]
    both = [("INPUT0", "INT32", [1, 16]), ("INPUT1", "INT32", [1, 16])]
    good = {
        "add_sub_raw": grpc_infer("add_sub", both, raws),
        "add_sub_contents": grpc_infer("add_sub", [n + ({"int_contents": list(range(16))},) for n in both]),
        "add_sub_one_output": grpc_infer("add_sub", both, raws, outputs=["OUTPUT1"]),
        "add_sub_id": grpc_infer("add_sub", both, raws, id="grpc-1"),
        "identity": grpc_infer("identity_python", [("INPUT0", "FP32", [1, 2])], [np.array([1, 2], np.float32).tobytes()]),
        "metric": grpc_infer("metric_python", [("INPUT0", "INT32", [3])], [np.array([1, 2, 3], np.int32).tobytes()]),
    }
    for name, req in good.items():
        check.grpc(pair, f"grpc_infer_{name}", "ModelInfer", req, want="OK")
    bad = {
        "unknown_model": grpc_infer("nope", both, raws),
        "unknown_version": grpc_infer("add_sub", both, raws, version="7"),
        "unknown_input": grpc_infer("add_sub", [("BOGUS", "INT32", [1, 16]), both[1]], raws),
        "wrong_datatype": grpc_infer("add_sub", [("INPUT0", "FP32", [1, 16]), both[1]], raws),
        "wrong_shape": grpc_infer("add_sub", [("INPUT0", "INT32", [2, 8]), both[1]], raws),
        "missing_input": grpc_infer("add_sub", both[:1], raws[:1]),
        "unknown_output": grpc_infer("add_sub", both, raws, outputs=["NOPE"]),
        "raw_size_mismatch": grpc_infer("add_sub", both, [raws[0][:60], raws[1]]),
        "raw_count_mismatch": grpc_infer("add_sub", both, raws[:1]),
        "contents_and_raw": grpc_infer("add_sub", [both[0] + ({"int_contents": list(range(16))},), both[1]], raws),
        "contents_wrong_type": grpc_infer("add_sub", [n + ({"fp32_contents": [1.0] * 16},) for n in both]),
        "decoupled_model": grpc_infer("repeat_python", [("IN", "INT32", [2])], [np.array([1, 2], np.int32).tobytes()]),
        "model_error": grpc_infer("simple_pre", [("TEXT", "BYTES", [1, 1], {"bytes_contents": [b"1,2"]})]),
    }
    for name, req in bad.items():
        n, t = check.grpc(pair, f"grpc_infer_bad_{name}", "ModelInfer", req)
        assert t.status != "OK", f"{name}: Triton accepted it"
    check.done()


def test_grpc_stream(pair, check):
    values = np.array([4, 5, 6], np.int32)
    good = grpc_infer("repeat_python", [("IN", "INT32", [3])], [values.tobytes()], id="s1")
    n, t = stream_of(pair.nereid, [good]), stream_of(pair.triton, [good])
    assert t.status == "OK" and len(t.body) == 3, t.body
    check.diff("stream_repeat", n, t)
    # Asking for the empty final response: one more, flagged final.
    good.parameters["triton_enable_empty_final_response"].bool_param = True
    n, t = stream_of(pair.nereid, [good]), stream_of(pair.triton, [good])
    assert t.status == "OK" and len(t.body) == 4, t.body
    check.diff("stream_repeat_empty_final", n, t)
    bad_delay = grpc_infer("repeat_python", [("IN", "INT32", [3]), ("DELAY", "UINT32", [1])],
                           [values.tobytes(), np.array([1], np.uint32).tobytes()])
    check.diff("stream_model_error", stream_of(pair.nereid, [bad_delay]), stream_of(pair.triton, [bad_delay]))
    unknown = grpc_infer("nope", [("IN", "INT32", [3])], [values.tobytes()])
    check.diff("stream_unknown_model", stream_of(pair.nereid, [unknown]), stream_of(pair.triton, [unknown]))
    unary = grpc_infer("add_sub", [("INPUT0", "INT32", [1, 16]), ("INPUT1", "INT32", [1, 16])],
                       [np.zeros(16, np.int32).tobytes()] * 2)
    check.diff("stream_non_decoupled", stream_of(pair.nereid, [unary]), stream_of(pair.triton, [unary]))
    check.done()


# --------------------------------------------------------------------------
# Generate


def _sse(a: Answer) -> Answer:
    """An event stream's events as a JSON list."""
    if a.content_type != "text/event-stream":
        return a
    events = [json.loads(line[len(b"data: "):]) for line in a.raw.split(b"\n") if line.startswith(b"data: ")]
    return Answer(status=a.status, content_type=a.content_type, body=events)


def test_generate(pair, check):
    gen = "/v2/models/{}/generate"
    check.http(pair, "generate_identity", "POST", gen.format("identity_python"), {"INPUT0": [1.0, 2.0]}, want=200)
    check.http(pair, "generate_metric_scalar", "POST", gen.format("metric_python"), {"INPUT0": 5}, want=200)
    check.http(pair, "generate_unknown_model", "POST", gen.format("nope"), {"INPUT0": 5})
    check.http(pair, "generate_bad_json", "POST", gen.format("identity_python"), b"{nope")
    check.http(pair, "generate_bad_parameter", "POST", gen.format("repeat_python"), {"BOGUS": [1]})
    # To repeat_spare: Triton streams all three responses to the model's end
    # and counts a success; Nereid's /generate refuses the second one and
    # cancels the request, which its statistics count as CANCELED.
    check.http(pair, "generate_decoupled_many", "POST", gen.format(REPEAT_SPARE), {"IN": [1, 2, 3]})
    for case, body in {
        "generate_stream_repeat": {"IN": [1, 2, 3]},
        "generate_stream_model_error": {"IN": [1, 2, 3], "DELAY": [1, 2]},
        "generate_stream_bad_parameter": {"BOGUS": [1]},
    }.items():
        b = json.dumps(body).encode()
        n = _sse(http_of(pair.nereid, "POST", gen.format("repeat_python") + "_stream", b))
        t = _sse(http_of(pair.triton, "POST", gen.format("repeat_python") + "_stream", b))
        check.diff(case, n, t)
    check.done()


# --------------------------------------------------------------------------
# Statistics: every earlier request went to both servers, so the counts
# must agree; durations and timestamps differ.

STATS_VOLATILE = ["*.ns", "*.last_inference"]


def _without_spare(a: Answer) -> Answer:
    if isinstance(a.body, dict) and "model_stats" in a.body:
        a.body["model_stats"] = [m for m in a.body["model_stats"] if m["name"] not in (SPARE, REPEAT_SPARE)]
    return a


def _zero_durations(stats, path=""):
    """Paths of {count, ns} pairs that counted something in no time."""
    out = []
    if isinstance(stats, dict):
        if set(stats) == {"count", "ns"}:
            if int(stats["count"]) > 0 and int(stats["ns"]) == 0:
                out.append(path)
        else:
            for k, v in stats.items():
                out += _zero_durations(v, f"{path}.{k}")
    elif isinstance(stats, list):
        for i, v in enumerate(stats):
            out += _zero_durations(v, f"{path}[{i}]")
    return out


def test_statistics(pair, check):
    n = _without_spare(http_of(pair.nereid, "GET", "/v2/models/stats"))
    t = _without_spare(http_of(pair.triton, "GET", "/v2/models/stats"))
    assert t.status == 200
    check.diff("stats_all", n, t, volatile=STATS_VOLATILE)
    # Durations are not compared, but a duration that counted requests
    # and took no time on one side only is a difference.
    zn, zt = set(_zero_durations(n.body)), set(_zero_durations(t.body))
    zero = "count > 0, ns = 0"
    check.diff("stats_all_zero_durations", Answer(200, body={p.lstrip("."): zero for p in zn - zt}),
               Answer(200, body={p.lstrip("."): zero for p in zt - zn}))
    for m in MODELS:
        check.http(pair, f"stats_{m}", "GET", f"/v2/models/{m}/stats", want=200, volatile=STATS_VOLATILE)
    check.http(pair, "stats_version", "GET", "/v2/models/add_sub/versions/1/stats", want=200, volatile=STATS_VOLATILE)
    check.http(pair, "stats_bad_version", "GET", "/v2/models/add_sub/versions/9/stats")
    check.http(pair, "stats_unknown", "GET", "/v2/models/nope/stats")
    req = pb("ModelStatisticsRequest")
    check.diff("grpc_stats_all", _without_spare(grpc_of(pair.nereid, "ModelStatistics", req)),
               _without_spare(grpc_of(pair.triton, "ModelStatistics", req)), volatile=STATS_VOLATILE)
    check.grpc(pair, "grpc_stats_add_sub", "ModelStatistics", pb("ModelStatisticsRequest", name="add_sub"), want="OK",
               volatile=STATS_VOLATILE)
    check.grpc(pair, "grpc_stats_unknown", "ModelStatistics", pb("ModelStatisticsRequest", name="nope"))
    check.done()


# --------------------------------------------------------------------------
# Trace and log settings


def test_trace_settings(pair, check):
    t = "/v2/trace/setting"
    mt = "/v2/models/add_sub/trace/setting"
    check.http(pair, "trace_get", "GET", t, want=200)
    check.http(pair, "trace_model_get", "GET", mt, want=200)
    check.http(pair, "trace_set_rate", "POST", t, {"trace_rate": "5"}, want=200)
    check.http(pair, "trace_set_count", "POST", t, {"trace_count": "10", "log_frequency": "2"}, want=200)
    check.http(pair, "trace_set_level", "POST", t, {"trace_level": ["TIMESTAMPS"]})
    check.http(pair, "trace_set_level_off", "POST", t, {"trace_level": ["OFF"]}, want=200)
    check.http(pair, "trace_model_set", "POST", mt, {"trace_rate": "7"}, want=200)
    check.http(pair, "trace_model_get_after", "GET", mt, want=200)
    check.http(pair, "trace_model_clear", "POST", mt, {"trace_rate": None}, want=200)
    check.http(pair, "trace_bad_rate", "POST", t, {"trace_rate": "abc"})
    check.http(pair, "trace_bad_rate_type", "POST", t, {"trace_rate": 5})
    check.http(pair, "trace_bad_level", "POST", t, {"trace_level": ["LOUD"]})
    check.http(pair, "trace_unknown_key", "POST", t, {"nope": "1"})
    check.http(pair, "trace_bad_json", "POST", t, b"{nope")
    check.http(pair, "trace_unknown_model", "GET", "/v2/models/nope/trace/setting")
    check.http(pair, "trace_versioned_path", "GET", "/v2/models/add_sub/versions/1/trace/setting")
    check.http(pair, "trace_restore", "POST", t, {"trace_rate": "1000", "trace_count": "-1", "log_frequency": "0"}, want=200)
    settings = service_pb2.TraceSettingRequest.SettingValue
    check.grpc(pair, "grpc_trace_get", "TraceSetting", pb("TraceSettingRequest"), want="OK")
    check.grpc(pair, "grpc_trace_set", "TraceSetting",
               pb("TraceSettingRequest", settings={"trace_rate": settings(value=["9"])}), want="OK")
    check.grpc(pair, "grpc_trace_model_set", "TraceSetting",
               pb("TraceSettingRequest", model_name="add_sub", settings={"trace_rate": settings(value=["3"])}), want="OK")
    check.grpc(pair, "grpc_trace_model_clear", "TraceSetting",
               pb("TraceSettingRequest", model_name="add_sub", settings={"trace_rate": settings()}), want="OK")
    check.grpc(pair, "grpc_trace_bad", "TraceSetting",
               pb("TraceSettingRequest", settings={"trace_rate": settings(value=["x"])}))
    check.grpc(pair, "grpc_trace_unknown_model", "TraceSetting", pb("TraceSettingRequest", model_name="nope"))
    check.grpc(pair, "grpc_trace_restore", "TraceSetting",
               pb("TraceSettingRequest", settings={"trace_rate": settings(value=["1000"])}), want="OK")
    check.done()


def test_log_settings(pair, check):
    u = "/v2/logging"
    check.http(pair, "log_get", "GET", u, want=200)
    check.http(pair, "log_set_verbose", "POST", u, {"log_verbose_level": 1}, want=200)
    check.http(pair, "log_set_flags", "POST", u, {"log_info": False, "log_warning": True}, want=200)
    check.http(pair, "log_set_format", "POST", u, {"log_format": "ISO8601"}, want=200)
    check.http(pair, "log_bad_format", "POST", u, {"log_format": "loud"})
    check.http(pair, "log_set_file", "POST", u, {"log_file": "/tmp/nereid-compat.log"})
    check.http(pair, "log_bad_verbose", "POST", u, {"log_verbose_level": -1})
    check.http(pair, "log_bad_type", "POST", u, {"log_info": "yes"})
    check.http(pair, "log_unknown_key", "POST", u, {"nope": 1})
    check.http(pair, "log_bad_json", "POST", u, b"{nope")
    check.http(pair, "log_restore", "POST", u,
               {"log_verbose_level": 0, "log_info": True, "log_format": "default"}, want=200)
    s = service_pb2.LogSettingsRequest.SettingValue
    check.grpc(pair, "grpc_log_get", "LogSettings", pb("LogSettingsRequest"), want="OK")
    check.grpc(pair, "grpc_log_set", "LogSettings",
               pb("LogSettingsRequest", settings={"log_verbose_level": s(uint32_param=2)}), want="OK")
    check.grpc(pair, "grpc_log_bad_type", "LogSettings",
               pb("LogSettingsRequest", settings={"log_info": s(string_param="yes")}))
    check.grpc(pair, "grpc_log_set_file", "LogSettings",
               pb("LogSettingsRequest", settings={"log_file": s(string_param="/tmp/x.log")}))
    check.grpc(pair, "grpc_log_restore", "LogSettings",
               pb("LogSettingsRequest", settings={"log_verbose_level": s(uint32_param=0)}), want="OK")
    check.done()


# --------------------------------------------------------------------------
# System shared memory (real /dev/shm regions)


@pytest.fixture
def regions():
    made = []

    def make(name, size):
        key = f"/nereid_compat_{os.getpid()}_{name}"
        h = shm.create_shared_memory_region(name, key, size)
        made.append(h)
        return key, h

    yield make
    for h in made:
        shm.destroy_shared_memory_region(h)


def test_system_shared_memory(pair, check, regions):
    base = "/v2/systemsharedmemory"
    in_key, in_h = regions("cin", 64)
    out_key, out_h = regions("cout", 64)
    data = np.array([1.5, 2.5, -3.0, 4.0], np.float32)
    shm.set_shared_memory_region(in_h, [data])
    check.http(pair, "shm_status_empty", "GET", f"{base}/status", want=200)
    check.http(pair, "shm_register", "POST", f"{base}/region/cin/register",
               {"key": in_key, "offset": 0, "byte_size": 64}, want=200)
    check.http(pair, "shm_register_out", "POST", f"{base}/region/cout/register",
               {"key": out_key, "offset": 0, "byte_size": 64}, want=200)
    check.http(pair, "shm_register_again", "POST", f"{base}/region/cin/register",
               {"key": in_key, "offset": 0, "byte_size": 64})
    check.http(pair, "shm_register_missing_key", "POST", f"{base}/region/ghost/register",
               {"key": "/nereid_compat_no_such_key", "offset": 0, "byte_size": 64})
    check.http(pair, "shm_register_past_end", "POST", f"{base}/region/big/register",
               {"key": in_key, "offset": 0, "byte_size": 1 << 20})
    check.http(pair, "shm_register_bad_body", "POST", f"{base}/region/bad/register", {"key": in_key})
    check.http(pair, "shm_status", "GET", f"{base}/status", want=200)
    check.http(pair, "shm_status_region", "GET", f"{base}/region/cin/status", want=200)
    check.http(pair, "shm_status_unknown", "GET", f"{base}/region/ghost/status")
    # Inference that reads its input from cin and writes its output to cout.
    body = {
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 4],
                    "parameters": {"shared_memory_region": "cin", "shared_memory_byte_size": 16}}],
        "outputs": [{"name": "OUTPUT0",
                     "parameters": {"shared_memory_region": "cout", "shared_memory_byte_size": 16}}],
    }
    outs = []
    answers = []
    for s in pair.both():
        shm.set_shared_memory_region(out_h, [np.zeros(4, np.float32)])
        answers.append(http_of(s, "POST", "/v2/models/identity_python/infer", json.dumps(body).encode()))
        outs.append(shm.get_contents_as_numpy(out_h, np.float32, [4]).copy())
    assert answers[1].status == 200, answers[1].brief()
    check.diff("shm_infer", *answers)
    np.testing.assert_array_equal(outs[1], data)
    check.diff("shm_infer_output", Answer(200, body=outs[0].tolist()), Answer(200, body=outs[1].tolist()))
    small = json.loads(json.dumps(body))
    small["outputs"][0]["parameters"]["shared_memory_byte_size"] = 8
    check.http(pair, "shm_infer_output_too_small", "POST", "/v2/models/identity_python/infer", small)
    past = json.loads(json.dumps(body))
    past["inputs"][0]["parameters"]["shared_memory_offset"] = 60
    check.http(pair, "shm_infer_input_past_end", "POST", "/v2/models/identity_python/infer", past)
    unknown = json.loads(json.dumps(body))
    unknown["inputs"][0]["parameters"]["shared_memory_region"] = "ghost"
    check.http(pair, "shm_infer_unknown_region", "POST", "/v2/models/identity_python/infer", unknown)
    check.http(pair, "shm_unregister", "POST", f"{base}/region/cin/unregister", want=200)
    check.http(pair, "shm_unregister_unknown", "POST", f"{base}/region/ghost/unregister")
    check.http(pair, "shm_status_after_unregister", "GET", f"{base}/status", want=200)
    check.http(pair, "shm_unregister_all", "POST", f"{base}/unregister", want=200)
    check.http(pair, "shm_status_after_all", "GET", f"{base}/status", want=200)
    # gRPC
    check.grpc(pair, "grpc_shm_register", "SystemSharedMemoryRegister",
               pb("SystemSharedMemoryRegisterRequest", name="gin", key=in_key, offset=0, byte_size=64), want="OK")
    check.grpc(pair, "grpc_shm_register_again", "SystemSharedMemoryRegister",
               pb("SystemSharedMemoryRegisterRequest", name="gin", key=in_key, offset=0, byte_size=64))
    check.grpc(pair, "grpc_shm_register_missing_key", "SystemSharedMemoryRegister",
               pb("SystemSharedMemoryRegisterRequest", name="gx", key="/nereid_compat_no_such_key", byte_size=64))
    check.grpc(pair, "grpc_shm_status", "SystemSharedMemoryStatus", pb("SystemSharedMemoryStatusRequest"), want="OK")
    check.grpc(pair, "grpc_shm_status_region", "SystemSharedMemoryStatus",
               pb("SystemSharedMemoryStatusRequest", name="gin"), want="OK")
    check.grpc(pair, "grpc_shm_status_unknown", "SystemSharedMemoryStatus", pb("SystemSharedMemoryStatusRequest", name="ghost"))
    req = grpc_infer("identity_python", [("INPUT0", "FP32", [1, 4])])
    req.inputs[0].parameters["shared_memory_region"].string_param = "gin"
    req.inputs[0].parameters["shared_memory_byte_size"].int64_param = 16
    check.grpc(pair, "grpc_shm_infer", "ModelInfer", req, want="OK")
    check.grpc(pair, "grpc_shm_unregister", "SystemSharedMemoryUnregister",
               pb("SystemSharedMemoryUnregisterRequest", name="gin"), want="OK")
    check.grpc(pair, "grpc_shm_unregister_unknown", "SystemSharedMemoryUnregister",
               pb("SystemSharedMemoryUnregisterRequest", name="ghost"))
    check.grpc(pair, "grpc_shm_unregister_all", "SystemSharedMemoryUnregister",
               pb("SystemSharedMemoryUnregisterRequest"), want="OK")
    check.grpc(pair, "grpc_shm_status_after", "SystemSharedMemoryStatus", pb("SystemSharedMemoryStatusRequest"), want="OK")
    check.http(pair, "cuda_shm_status", "GET", "/v2/cudasharedmemory/status")
    check.grpc(pair, "grpc_cuda_shm_status", "CudaSharedMemoryStatus", pb("CudaSharedMemoryStatusRequest"))
    check.done()


# --------------------------------------------------------------------------


def test_zz_allowlist_is_current(request):
    """Runs last: every allowlist entry whose case ran still allows a
    difference (else the difference is gone and the entry must go)."""
    report = os.environ.get("COMPAT_REPORT")
    if report:
        pathlib.Path(report).write_text(ALLOWLIST.report() + "\n")
    ours = {name for name in globals() if name.startswith("test_") and name != request.node.name}
    ran = {item.name for item in request.session.items if item.module is sys.modules[__name__]}
    if ours - ran:
        pytest.skip("the allowlist is checked for stale entries only when every test of this module runs")
    stale = ALLOWLIST.stale()
    assert not stale, "allowlist entries that matched nothing:\n" + "\n".join(f"{e.pattern}: {e.reason}" for e in stale)
