"""Fixtures for Nereid's end-to-end tests.

Every test talks to a real `bin/nereid` process on loopback ports with the
real Python clients (tritonclient http and grpc) or, for malformed requests
that those clients refuse to build, with http.client and raw gRPC stubs.

A server is started with `nereid.start(repo, flags)` (function scope) or
shared through the session-scoped `server` fixture. Stopping a server sends
SIGTERM and asserts that it exits with status 0 within 30 s: every test
that starts a server also checks graceful shutdown.

The model repositories are built once per session in a temporary folder:
a copy of model_repo_examples/ plus the test models below.
"""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
NEREID_BIN = pathlib.Path(os.environ.get("NEREID_BIN", ROOT / "bin" / "nereid"))
EXAMPLES = ROOT / "model_repo_examples"
# The interpreter that runs the Python backend's stubs (models with
# backend "python"): the venv the tests run in, which has numpy.
PYTHON_STUB_EXE = pathlib.Path(os.environ.get("NEREID_PYTHON_STUB", ROOT / ".venv" / "bin" / "python"))

START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 30

# Protocol datatype -> model configuration data type.
CONFIG_TYPES = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING",
    "BF16": "TYPE_BF16",
}

# Execution delay of the identity_delay model: long enough to act while a
# request is in flight, short enough to keep the suite quick.
DELAY_MS = 2000
# How long a test waits after sending a request to identity_delay before it
# acts on the request "in flight". The server exposes no in-flight signal, so
# this is a margin: loopback delivery takes milliseconds, execution DELAY_MS.
IN_FLIGHT_WAIT_S = 0.75


# The classification test model and the labels of its output's classes.
CLASSIFICATION_MODEL = "identity_cls"
CLASSIFICATION_LABELS = ["zero", "one", "two", "three", "four"]


def per_type_model(datatype: str) -> str:
    """Name of the test model that echoes one tensor of `datatype`."""
    return "identity_t_" + datatype.lower()


# --------------------------------------------------------------------------
# Model repositories


def identity_config(name, tensors, max_batch_size=0, parameters=None, backend="identity"):
    """config.pbtxt text for an identity model.

    tensors: list of (protocol datatype, dims); input i is INPUTi, output i
    is OUTPUTi with the same type and dims.
    """
    lines = [f'name: "{name}"', f'backend: "{backend}"', f"max_batch_size: {max_batch_size}"]
    for kind, prefix in (("input", "INPUT"), ("output", "OUTPUT")):
        entries = []
        for i, (dtype, dims) in enumerate(tensors):
            entries.append(
                "  {\n"
                f'    name: "{prefix}{i}"\n'
                f"    data_type: {CONFIG_TYPES[dtype]}\n"
                f"    dims: [ {', '.join(str(d) for d in dims)} ]\n"
                "  }"
            )
        lines.append(f"{kind} [\n" + ",\n".join(entries) + "\n]")
    for key, value in (parameters or {}).items():
        lines.append(f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}')
    return "\n".join(lines) + "\n"


def write_model(repo: pathlib.Path, name: str, config_text: str, versions=(1,)) -> pathlib.Path:
    model_dir = repo / name
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(config_text)
    for v in versions:
        vdir = model_dir / str(v)
        vdir.mkdir(exist_ok=True)
        (vdir / "README").write_text("The identity backend needs no model file.\n")
    return model_dir


def write_identity_model(repo, name, tensors, max_batch_size=0, parameters=None, backend="identity"):
    return write_model(repo, name, identity_config(name, tensors, max_batch_size, parameters, backend))


def build_good_repo(repo: pathlib.Path) -> pathlib.Path:
    """model_repo_examples plus the models the tests need; all load."""
    shutil.copytree(EXAMPLES, repo, dirs_exist_ok=True)
    for dtype in CONFIG_TYPES:
        write_identity_model(repo, per_type_model(dtype), [(dtype, [-1])])
    # identity_fp32 of the examples is an ONNX model; the tests of the
    # identity backend's own configuration use this one.
    write_identity_model(repo, "identity_backend_fp32", [("FP32", [-1])], max_batch_size=8)
    # Batch-limit errors.
    write_identity_model(repo, "identity_int32_b4", [("INT32", [-1])], max_batch_size=4)
    # In-flight requests during unload and shutdown.
    write_identity_model(
        repo, "identity_delay", [("FP32", [-1])], parameters={"execute_delay_ms": str(DELAY_MS)}
    )
    # Statistics: used by nothing else, so the counts are exact.
    write_identity_model(repo, "identity_stats", [("INT32", [-1])])
    write_identity_model(repo, "identity_stats_batch", [("FP32", [-1])], max_batch_size=8)
    # Repository tests that override the configuration.
    write_identity_model(repo, "identity_cfg", [("FP32", [-1])], max_batch_size=8)
    # Classification: OUTPUT0 is labelled by labels.txt next to config.pbtxt.
    cls = write_identity_model(repo, CLASSIFICATION_MODEL, [("FP32", [-1])], max_batch_size=8)
    config = (cls / "config.pbtxt").read_text()
    (cls / "config.pbtxt").write_text(
        config.replace('name: "OUTPUT0"', 'name: "OUTPUT0"\n    label_filename: "labels.txt"')
    )
    (cls / "labels.txt").write_text("".join(label + "\n" for label in CLASSIFICATION_LABELS))
    return repo


def build_broken_repo(repo: pathlib.Path) -> pathlib.Path:
    """The good repository plus two models that cannot load."""
    build_good_repo(repo)
    write_model(
        repo,
        "broken_config",
        'name: "broken_config"\nbackend: "identity"\nmax_batch_size: eight\n'
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] }\n',
    )
    write_identity_model(repo, "unknown_backend", [("FP32", [-1])], backend="no_such_backend")
    return repo


@pytest.fixture(scope="session")
def good_repo(tmp_path_factory) -> pathlib.Path:
    return build_good_repo(tmp_path_factory.mktemp("good_repo"))


@pytest.fixture(scope="session")
def broken_repo(tmp_path_factory) -> pathlib.Path:
    return build_broken_repo(tmp_path_factory.mktemp("broken_repo"))


@pytest.fixture
def fresh_repo(tmp_path) -> pathlib.Path:
    """A private copy of the good repository that a test may change."""
    return build_good_repo(tmp_path / "repo")


# --------------------------------------------------------------------------
# Server processes


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class HTTPResponse:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Nereid:
    """One bin/nereid process."""

    repo: pathlib.Path
    flags: list
    log_path: pathlib.Path
    http_port: int = 0
    grpc_port: int = 0
    proc: subprocess.Popen | None = None
    _log: object = field(default=None, repr=False)

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def grpc_enabled(self) -> bool:
        return "--allow-grpc=false" not in self.flags

    def argv(self) -> list[str]:
        argv = [str(NEREID_BIN)]
        if self.repo is not None:
            argv.append(f"--model-repository={self.repo}")
        argv += [
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--allow-metrics=false",
            f"--backend-config=python,python-executable={PYTHON_STUB_EXE}",
        ]
        return argv + list(self.flags)

    def start(self, wait: bool = True) -> "Nereid":
        if not NEREID_BIN.exists():
            pytest.fail(f"{NEREID_BIN} does not exist: run `make build` first")
        self.http_port, self.grpc_port = _free_ports(2)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.argv(), stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        if wait:
            self.wait_live()
        return self

    def log_tail(self, n: int = 200) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def _fail(self, why: str):
        pytest.fail(f"{why}\ncommand: {' '.join(self.argv())}\n--- server log ---\n{self.log_tail()}")

    def wait_live(self, timeout: float = START_TIMEOUT_S):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                self._fail(f"nereid exited with status {rc} during start-up")
            try:
                live = self.request("GET", "/v2/health/live", timeout=1).status == 200
                if live and (not self.grpc_enabled or _port_open(self.grpc_port)):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self._fail(f"nereid was not live within {timeout} s")

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._fail(f"nereid did not exit within {timeout} s")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then the exit status (None if it had already exited)."""
        if self.proc is None:
            return None
        try:
            if self.proc.poll() is not None:
                return self.proc.returncode
            self.proc.send_signal(signal.SIGTERM)
            return self.wait_exit(timeout)
        finally:
            if self._log:
                self._log.close()
                self._log = None

    def stop_gracefully(self):
        """Stop and assert a graceful shutdown: exit status 0."""
        was_running = self.proc is not None and self.proc.poll() is None
        rc = self.stop()
        if not was_running:
            self._fail(f"nereid had already exited with status {rc} before shutdown")
        if rc != 0:
            self._fail(f"nereid exited with status {rc} after SIGTERM, want 0")

    # Clients -------------------------------------------------------------

    def request(self, method, path, body=b"", headers=None, timeout=30) -> HTTPResponse:
        """A raw HTTP request that never raises on an error status."""
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return HTTPResponse(
                resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
            )
        finally:
            conn.close()

    def http(self, **kwargs):
        import tritonclient.http as httpclient

        return httpclient.InferenceServerClient(self.http_url, **kwargs)

    def grpc(self, **kwargs):
        import tritonclient.grpc as grpcclient

        return grpcclient.InferenceServerClient(self.grpc_url, **kwargs)

    def grpc_stub(self):
        """A raw GRPCInferenceService stub for requests tritonclient refuses to build."""
        import grpc
        from tritonclient.grpc import service_pb2_grpc

        channel = grpc.insecure_channel(self.grpc_url)
        return channel, service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class NereidFactory:
    def __init__(self, log_dir: pathlib.Path):
        self.log_dir = log_dir
        self.servers: list[Nereid] = []

    def start(self, repo, flags=(), wait=True) -> Nereid:
        n = len(self.servers)
        server = Nereid(repo=repo, flags=list(flags), log_path=self.log_dir / f"nereid-{n}.log")
        self.servers.append(server)
        return server.start(wait=wait)

    def stop_all(self):
        """Stops every server still running; returns the ones that did not exit 0."""
        bad = []
        for s in self.servers:
            if s.proc is None or s.proc.poll() is not None:
                if s._log:
                    s._log.close()
                continue
            rc = s.stop()
            if rc != 0:
                bad.append((s, rc))
        return bad


def _factory_teardown(factory: NereidFactory):
    bad = factory.stop_all()
    if bad:
        report = "\n".join(
            f"{' '.join(s.argv())}: exit status {rc}\n{s.log_tail()}" for s, rc in bad
        )
        pytest.fail(f"graceful shutdown failed (SIGTERM must exit 0):\n{report}")


@pytest.fixture
def nereid(tmp_path):
    """Factory: nereid.start(repo, flags) -> a started, live Nereid.

    On teardown every server still running gets SIGTERM and must exit 0
    within 30 s.
    """
    factory = NereidFactory(tmp_path)
    yield factory
    _factory_teardown(factory)


@pytest.fixture(scope="session")
def server(tmp_path_factory, good_repo):
    """The shared server: model control mode none, the good repository."""
    factory = NereidFactory(tmp_path_factory.mktemp("shared_server"))
    yield factory.start(good_repo)
    _factory_teardown(factory)


# --------------------------------------------------------------------------
# Helpers


def wait_for(predicate, timeout=15.0, interval=0.1, what="condition"):
    """Polls predicate until it returns a truthy value; fails after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as e:  # noqa: BLE001 - report the last failure
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
