"""Helpers for the deployment tests (deploy/: image, Helm chart, KServe,
ModelMesh and autoscaling manifests).

The tools are the pinned ones `make deploy-tools` installs into .tools:
helm, kubeconform, hadolint and deploytool (deploy/deploytool: Dockerfile checks,
schema conversion, YAML to JSON, OCI layout), and the JSON schemas it
converts from the pinned Kubernetes, KServe, KEDA and Prometheus Operator
Go modules. `make test-deploy` passes their places in the environment;
run alone, the tests look in .tools and fail, saying so, when a tool is
missing.
"""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "nereid"
TOOLS = pathlib.Path(os.environ.get("NEREID_DEPLOY_TOOLS", ROOT / ".tools"))
NEREID_BIN = pathlib.Path(os.environ.get("NEREID_BIN", ROOT / "bin" / "nereid"))
# The Kubernetes version the chart is rendered for and validated against:
# the version of k8s.io/kubernetes whose OpenAPI the schemas come from.
KUBE_VERSION = os.environ.get("NEREID_DEPLOY_KUBE_VERSION", "1.34.1")


def _schemas_dir() -> pathlib.Path:
    if "NEREID_DEPLOY_SCHEMAS" in os.environ:
        return pathlib.Path(os.environ["NEREID_DEPLOY_SCHEMAS"])
    found = sorted((TOOLS / "deploy-schemas").glob("*/.done"))
    return found[-1].parent if found else TOOLS / "deploy-schemas" / "missing"


SCHEMAS = _schemas_dir()


def tool(name: str) -> pathlib.Path:
    path = TOOLS / name
    if not path.exists():
        pytest.fail(f"{path} does not exist: run `make deploy-tools` (or `make test-deploy`)")
    return path


def run(argv, check=True, **kwargs) -> subprocess.CompletedProcess:
    p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kwargs)
    if check and p.returncode != 0:
        pytest.fail(f"{' '.join(map(str, argv))}: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def yaml_docs(text: str) -> list:
    """Every document of a YAML stream, as JSON values (via deploytool)."""
    return json.loads(run([tool("deploytool"), "yaml2json"], input=text).stdout)


def yaml_file(path: pathlib.Path) -> list:
    return yaml_docs(path.read_text())


def helm_template(values: list[pathlib.Path] = (), release: str = "nereid", check=True, extra=()):
    argv = [tool("helm"), "template", release, CHART, "--kube-version", KUBE_VERSION]
    for v in values:
        argv += ["-f", v]
    return run(argv + list(extra), check=check)


def kubeconform(paths, check=True, stdin: str | None = None) -> dict:
    """kubeconform -strict over files or stdin, with the converted schemas
    and never the network; the JSON summary."""
    if not (SCHEMAS / ".done").exists():
        pytest.fail(f"no schemas at {SCHEMAS}: run `make deploy-tools`")
    argv = [
        tool("kubeconform"), "-strict", "-output", "json", "-summary",
        "-kubernetes-version", KUBE_VERSION,
        "-schema-location", f"{SCHEMAS}/kubernetes/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
        "-schema-location",
        f"{SCHEMAS}/crds/{{{{ .Group }}}}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json",
    ]
    argv += [str(p) for p in paths] if stdin is None else ["-"]
    p = subprocess.run(argv, capture_output=True, text=True, input=stdin)
    try:
        out = json.loads(p.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"kubeconform: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    if check and p.returncode != 0:
        pytest.fail("kubeconform found problems:\n" + json.dumps(out.get("resources"), indent=1))
    return out


# --------------------------------------------------------------------------
# Running nereid with a manifest's command line


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def http_get(port: int, path: str, timeout=5) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def http_post(port: int, path: str, body: dict, timeout=30) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        conn.close()


class Server:
    """A nereid process on loopback; stop() sends SIGTERM and wants exit 0."""

    def __init__(self, argv, log_path: pathlib.Path, http_port: int, env=None, cwd=None, via_child=False):
        # via_child: argv is a launcher (unshare --fork) that neither
        # forwards signals nor exits before its child: signal the child.
        self.argv, self.log_path, self.http_port = [str(a) for a in argv], log_path, http_port
        self.via_child = via_child
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            self.argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def fail(self, why):
        pytest.fail(f"{why}\ncommand: {' '.join(self.argv)}\n--- log ---\n{self.log()}")

    def wait_ready(self, path="/v2/health/ready", timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.fail(f"nereid exited with status {self.proc.returncode} during start-up")
            try:
                if http_get(self.http_port, path, timeout=1)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.fail(f"{path} was not 200 within {timeout} s")

    def stop(self):
        if self.proc.poll() is None:
            pid = self.proc.pid
            if self.via_child:
                children = pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                pid = int(children[0]) if children else pid
            os.kill(pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._log.close()
                self.fail("nereid did not exit within 30 s of SIGTERM")
        self._log.close()
        if self.proc.returncode != 0:
            self.fail(f"nereid exited with status {self.proc.returncode} after SIGTERM, want 0")


def simple_repo(dest: pathlib.Path, models=("simple",)) -> pathlib.Path:
    """A repository with copies of the example models."""
    for m in models:
        shutil.copytree(ROOT / "model_repo_examples" / m, dest / m)
    return dest


SIMPLE_REQUEST = {
    "inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": list(range(16))},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": [1] * 16},
    ]
}


def check_simple_infer(port: int):
    status, body = http_post(port, "/v2/models/simple/infer", SIMPLE_REQUEST)
    assert status == 200, body
    out = {o["name"]: o["data"] for o in body["outputs"]}
    assert out["OUTPUT0"] == [i + 1 for i in range(16)]
    assert out["OUTPUT1"] == [i - 1 for i in range(16)]


FLAG_RE = re.compile(r"^--([a-z0-9-]+)(?:=(.*))?$")


def localize_args(args: list[str], repo: pathlib.Path, ports: dict[str, int]) -> list[str]:
    """A manifest's nereid arguments for a process on this machine: the
    repository and the ports replaced, listeners on loopback. Every other
    flag is kept, so nereid itself judges them."""
    port_flags = {"http-port": "http", "grpc-port": "grpc", "metrics-port": "metrics",
                  "modelmesh-port": "modelmesh", "sagemaker-port": "sagemaker"}
    out = []
    for a in args:
        m = FLAG_RE.match(a)
        assert m, f"{a!r} is not a --flag[=value] argument"
        name = m.group(1)
        if name in ("model-repository", "model-store"):
            out.append(f"--{name}={repo}")
        elif name in port_flags:
            out.append(f"--{name}={ports[port_flags[name]]}")
        else:
            out.append(a)
    names = {FLAG_RE.match(a).group(1) for a in args}
    for kind, flag in (("http", "http-port"), ("grpc", "grpc-port"), ("metrics", "metrics-port")):
        if flag not in names:
            out.append(f"--{flag}={ports[kind]}")
    out += ["--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"]
    return out


def nereid_flag_names() -> set[str]:
    """The flags bin/nereid knows, from its -help."""
    p = subprocess.run([str(NEREID_BIN), "-help"], capture_output=True, text=True)
    return set(re.findall(r"^  -([a-z0-9-]+)", p.stdout + p.stderr, re.M))
