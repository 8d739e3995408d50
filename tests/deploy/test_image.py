"""The container image: deploy/Dockerfile checked without a daemon, and
the file tree it carries built here by the same script and run.

No image is built from the Dockerfile here: that needs its base images
from a container registry, which this machine cannot reach (README,
"What was validated here"). What is checked instead:
- BuildKit's own build checks (the rules of `docker build --check`,
  through deploytool) and hadolint;
- the Dockerfile's contract: targets, user, ports, entrypoint, the pins it
  shares with the Makefile;
- deploy/build-tree.sh, which the Dockerfile's build stage runs, builds
  the tree here; nereid runs from it and serves an ONNX model with the
  tree's ONNX Runtime, found next to the binary as in the image;
- the minimal image itself as an OCI layout (deploy/build-oci.sh: a
  Debian 12 base from this machine's packages, like distroless/cc, and
  that tree, assembled with go-containerregistry), unpacked and run as a
  container runtime would run it.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import tarfile

import pytest

from deploy_util import DEPLOY, ROOT, check_simple_infer, free_ports, run, simple_repo, tool

DOCKERFILE = DEPLOY / "Dockerfile"
PORTS = {"8000", "8001", "8002", "8080"}


def makefile_var(name: str) -> str:
    m = re.search(rf"^{name}\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert m, f"Makefile has no {name}"
    return m.group(1)


@pytest.fixture(scope="module")
def summary() -> dict:
    return json.loads(run([tool("deploytool"), "dockerfile-summary", DOCKERFILE]).stdout)


def stage(summary, name):
    for s in summary["stages"]:
        if s["name"] == name:
            return s
    pytest.fail(f"deploy/Dockerfile has no stage {name}")


def test_dockerfile_passes_buildkit_checks():
    p = run([tool("deploytool"), "lint-dockerfile", DOCKERFILE], check=False)
    assert p.returncode == 0, p.stdout + p.stderr


def test_dockerfile_passes_hadolint():
    p = run([tool("hadolint"), "--no-color", DOCKERFILE], check=False)
    assert p.returncode == 0, p.stdout + p.stderr


BAD_DOCKERFILE = """FROM golang:latest as build
RUN apt-get update && apt-get install curl
RUN cd /src && make | tee log
ADD . /src
FROM debian
COPY --from=build /src/app /app
ENTRYPOINT /app
"""


def test_linters_find_what_they_should(tmp_path):
    # Rules of both, so that a linter that finds nothing cannot pass.
    bad = tmp_path / "Dockerfile"
    bad.write_text(BAD_DOCKERFILE)
    p = run([tool("deploytool"), "lint-dockerfile", bad], check=False)
    assert p.returncode == 1
    assert {"FromAsCasing", "JSONArgsRecommended"} <= set(re.findall(r":\d+: (\w+):", p.stdout)), p.stdout
    p = run([tool("hadolint"), "--no-color", bad], check=False)
    assert p.returncode == 1
    codes = set(re.findall(r":\d+ (DL\d+) ", p.stdout))
    assert {"DL3007", "DL3006", "DL3014", "DL3015", "DL3003", "DL4006", "DL3020", "DL3025"} <= codes, p.stdout


def test_targets_user_ports_entrypoint(summary):
    last = summary["stages"][-1]
    assert last["name"] == "runtime", "the default target (the last stage) is the minimal image"
    for name in ("runtime", "python"):
        s = stage(summary, name)
        assert s["target"]
        assert s["user"].split(":")[0] not in ("", "0", "root"), f"{name} runs as root"
        assert set(s["expose"]) == PORTS
        # `docker run IMAGE` serves /models; `docker run IMAGE serve` is
        # nereid serve, SageMaker's entry: the entrypoint is nereid itself.
        assert s["entrypoint"] == ["/opt/nereid/bin/nereid"]
        assert s["cmd"] == ["--model-repository=/models"]
        assert "build:/rootfs/->/" in s["copy_from"]
    py = stage(summary, "python")
    assert any("python3 python3-numpy" in r for r in py["run"])
    base = summary["meta_args"]
    assert stage(summary, "runtime")["base_resolved"] == base["RUNTIME_IMAGE"]
    assert "distroless/cc" in base["RUNTIME_IMAGE"] or "slim" in base["RUNTIME_IMAGE"]


def test_build_stage_runs_the_tree_script(summary):
    b = stage(summary, "build")
    assert any(r.startswith("deploy/build-tree.sh ") for r in b["run"]), b["run"]
    assert "ort:/ort->/ort" in b["copy_from"] and "tf:/tf->/tf" in b["copy_from"]
    assert summary["meta_args"]["GO_IMAGE"].startswith("docker.io/library/golang:" + go_version())


def go_version() -> str:
    out = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True).stdout.strip()
    return ".".join(out.removeprefix("go").split(".")[:2])


def test_pins_match_the_makefile(summary):
    ort, tf = stage(summary, "ort")["args"], stage(summary, "tf-true")["args"]
    assert ort["ORT_VERSION"] == makefile_var("ORT_VERSION")
    assert ort["ORT_SHA256"] == makefile_var("ORT_SHA256")
    assert tf["TF_VERSION"] == makefile_var("TF_VERSION")
    assert tf["TF_SHA256"] == makefile_var("TF_SHA256")
    assert tf["TF_WHEEL"] == makefile_var("TF_WHEEL").replace("$(TF_VERSION)", makefile_var("TF_VERSION"))


def test_dockerignore_keeps_the_context_small():
    ignored = set((DEPLOY / "Dockerfile.dockerignore").read_text().split())
    assert {".git", ".venv", ".tools", ".ort", ".tf", "bin"} <= ignored


# --------------------------------------------------------------------------
# The tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("image-tree") / "rootfs"
    tf = ROOT / ".tf" / "lib"
    argv = ["bash", DEPLOY / "build-tree.sh", "--ort-lib", ROOT / ".ort/lib/libonnxruntime.so.1", out]
    if os.environ.get("NEREID_DEPLOY_TREE_TF") == "1":
        argv[2:2] = ["--tf-lib-dir", tf]
    run(argv)
    return out


def tree_size(root: pathlib.Path) -> int:
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def test_tree_layout(tree):
    exe = tree / "opt/nereid/bin/nereid"
    assert exe.is_file() and os.access(exe, os.X_OK)
    assert (tree / "opt/nereid/.ort/lib/libonnxruntime.so.1").is_file()
    for link in ("nereid", "tritonserver"):
        assert (tree / "usr/local/bin" / link).resolve() == exe.resolve()
    assert (tree / "models").is_dir()
    # Stripped (-s -w): no symbol table, no DWARF.
    sections = run(["readelf", "-S", "-W", exe]).stdout
    assert ".symtab" not in sections and ".debug_info" not in sections
    # Nothing of the checkout came along.
    names = {p.name for p in tree.rglob("*")}
    assert not names & {".git", ".venv", "go.mod", "model_repo_examples"}


def test_tree_size_report(tree):
    exe = tree / "opt/nereid/bin/nereid"
    ort = tree / "opt/nereid/.ort/lib/libonnxruntime.so.1"
    total = tree_size(tree)
    print(f"REPORT: image tree {total / 1e6:.1f} MB: nereid {exe.stat().st_size / 1e6:.1f} MB, "
          f"libonnxruntime {ort.stat().st_size / 1e6:.1f} MB")
    # The minimal image's own files; the base (distroless/cc) adds about 24 MB.
    assert total < 100e6, f"the image tree grew to {total / 1e6:.1f} MB"


def test_nereid_runs_from_the_tree(tree, tmp_path, servers):
    # As in the image: no library flag, no NEREID_ORT_LIBRARY, a working
    # directory without .ort/: the library is found next to the binary.
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEREID_")}
    http, grpc, metrics = free_ports(3)
    repo = simple_repo(tmp_path / "models")
    exe = tree / "usr/local/bin/nereid"  # through the link, as PATH finds it
    s = servers(
        [exe, f"--model-repository={repo}", f"--http-port={http}", f"--grpc-port={grpc}",
         f"--metrics-port={metrics}", "--http-address=127.0.0.1", "--grpc-address=127.0.0.1"],
        http, env=env, cwd=tmp_path,
    )
    s.wait_ready()
    check_simple_infer(http)


# --------------------------------------------------------------------------
# The image itself, without a daemon: an OCI layout of a Debian 12 base
# (from this machine's packages, like distroless/cc-debian12) and the tree


@pytest.fixture(scope="module")
def oci_image(tree, tmp_path_factory) -> tuple[pathlib.Path, dict]:
    out = tmp_path_factory.mktemp("oci") / "layout"
    p = run(["bash", DEPLOY / "build-oci.sh", "--deploytool", tool("deploytool"), "--tree", tree, out, "nereid:0.1.0"])
    return out, json.loads(p.stdout)


def blob(layout: pathlib.Path, digest: str) -> pathlib.Path:
    return layout / "blobs" / digest.replace(":", "/", 1)


def test_oci_layout(oci_image):
    layout, info = oci_image
    assert json.loads((layout / "oci-layout").read_text())["imageLayoutVersion"] == "1.0.0"
    (desc,) = json.loads((layout / "index.json").read_text())["manifests"]
    assert desc["annotations"]["org.opencontainers.image.ref.name"] == "nereid:0.1.0"
    manifest = json.loads(blob(layout, desc["digest"]).read_text())
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    config = json.loads(blob(layout, manifest["config"]["digest"]).read_text())
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    c = config["config"]
    assert c["Entrypoint"] == ["/opt/nereid/bin/nereid"] and c["Cmd"] == ["--model-repository=/models"]
    assert c["User"] == "65532:65532"
    assert set(c["ExposedPorts"]) == {p + "/tcp" for p in PORTS}
    assert c["Labels"]["org.opencontainers.image.title"] == "nereid"
    assert len(manifest["layers"]) == 2
    for layer, measured in zip(manifest["layers"], info["layers"]):
        assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
        assert blob(layout, layer["digest"]).stat().st_size == layer["size"] == measured["compressed_bytes"]
    base, top = info["layers"]
    print(f"REPORT: image nereid:0.1.0 {info['compressed_bytes'] / 1e6:.1f} MB compressed "
          f"({info['uncompressed_bytes'] / 1e6:.1f} MB unpacked): base {base['compressed_bytes'] / 1e6:.1f} MB, "
          f"nereid + ONNX Runtime {top['compressed_bytes'] / 1e6:.1f} MB")
    assert info["compressed_bytes"] < 60e6


def unpack(layout: pathlib.Path, dest: pathlib.Path) -> dict:
    """The image's layers unpacked in order, owners kept: its root file
    system. Returns the image configuration."""
    (desc,) = json.loads((layout / "index.json").read_text())["manifests"]
    manifest = json.loads(blob(layout, desc["digest"]).read_text())
    for layer in manifest["layers"]:
        with tarfile.open(blob(layout, layer["digest"]), "r:gz") as t:
            t.extractall(dest, numeric_owner=True, filter="tar")
    return json.loads(blob(layout, manifest["config"]["digest"]).read_text())["config"]


@pytest.mark.skipif(os.geteuid() != 0, reason="chroot and unshare need root")
def test_image_serves_with_only_its_own_files(oci_image, tmp_path, servers):
    """The image run much as a container runtime would run it: its
    entrypoint and command, as its user, in its root file system (chroot)
    with a /proc of its own PID namespace (nereid is PID 1), so nereid and
    ONNX Runtime find nothing of this machine's: glibc, libstdc++ and the
    library all come from the image. The network namespace is the
    machine's, so the test reaches it on loopback."""
    layout, _ = oci_image
    rootfs = tmp_path / "rootfs"
    config = unpack(layout, rootfs)
    simple_repo(rootfs / "models")
    assert (rootfs / "home/nonroot").stat().st_uid == 65532
    http, grpc, metrics = free_ports(3)
    env = dict(e.split("=", 1) for e in config["Env"])
    env["HOME"] = "/home/nonroot"
    (rootfs / "proc").mkdir()
    argv = ["unshare", "--mount", "--pid", "--fork", f"--mount-proc={rootfs}/proc",
            shutil.which("chroot") or "/usr/sbin/chroot", f"--userspec={config['User']}", rootfs]
    argv += config["Entrypoint"] + config["Cmd"] + [
        f"--http-port={http}", f"--grpc-port={grpc}", f"--metrics-port={metrics}",
        "--http-address=127.0.0.1", "--grpc-address=127.0.0.1"]
    s = servers(argv, http, env=env, cwd=tmp_path, via_child=True)
    s.wait_ready()
    check_simple_infer(http)
    # With /proc, nereid sees the machine's memory and budgets payloads by it.
    assert "payload_budget_bytes=0" not in s.log(), "no memory limit seen: is /proc there?"
