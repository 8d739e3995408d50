"""s3:// model repositories: bin/nereid serving a repository kept in a real
S3-protocol server (gofakes3, run on loopback by the fakes3 helper of
repository/cloud/cloudtest), through tritonclient, and following the
bucket's changes on poll."""

import shutil
import subprocess
import urllib.request

import numpy as np
import pytest

from conftest import EXAMPLES, ROOT, identity_config, wait_for, write_model
from e2e_util import assert_tensor_equal, grpc_inputs, http_inputs

FP32 = np.array([[1.5, -2.0, 0.25]], dtype=np.float32)
ORT_LIB = ROOT / ".ort" / "lib" / "libonnxruntime.so.1"


@pytest.fixture(scope="module")
def fakes3_bin(tmp_path_factory):
    go = shutil.which("go")
    if go is None:
        pytest.skip("the fake S3 server is built with go, which is not on PATH")
    out = tmp_path_factory.mktemp("fakes3") / "fakes3"
    subprocess.run([go, "build", "-o", str(out), "./repository/cloud/cloudtest/fakes3"], cwd=ROOT, check=True)
    return out


class FakeS3:
    def __init__(self, binary, upload, log_path):
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [str(binary), "-bucket=models", "-prefix=repo/", f"-upload={upload}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
        )
        line = self.proc.stdout.readline().decode()
        if not line.startswith("endpoint http://"):
            self.stop()
            pytest.fail(f"fakes3 did not start: {line!r}, see {log_path}")
        self.endpoint = line.split()[1]
        self.hostport = self.endpoint.removeprefix("http://")

    def put(self, key, data: bytes):
        req = urllib.request.Request(f"{self.endpoint}/models/{key}", data=data, method="PUT")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200, r.status

    def delete(self, key):
        req = urllib.request.Request(f"{self.endpoint}/models/{key}", method="DELETE")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status in (200, 204), r.status

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """Static credentials in the environment, nothing else for the SDK."""
    none = tmp_path / "no-aws-files"
    for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
              "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
              "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(none))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(none))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nereid-e2e")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nereid-e2e-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def _echo_config(tag):
    return identity_config("echo", [("FP32", [-1])], max_batch_size=4, parameters={"tag": tag})


@pytest.fixture
def bucket(fakes3_bin, tmp_path):
    repo = tmp_path / "upload"
    write_model(repo, "echo", _echo_config("one"))
    write_model(repo, "gone", identity_config("gone", [("FP32", [-1])], max_batch_size=4))
    if ORT_LIB.exists():
        shutil.copytree(EXAMPLES / "identity_fp32", repo / "identity_fp32")
    s3 = FakeS3(fakes3_bin, repo, tmp_path / "fakes3.log")
    yield s3
    s3.stop()


def _version(client, model):
    r = client.infer(model, http_inputs([FP32], ["FP32"]))
    assert_tensor_equal(r.as_numpy("OUTPUT0"), FP32)
    return r.get_response()["model_version"]


def test_s3_repository_poll(nereid, bucket, aws_env, tmp_path):
    mount = tmp_path / "mount"
    mount.mkdir()
    server = nereid.start(None, [
        f"--model-repository=s3://{bucket.hostport}/models/repo",
        "--model-control-mode=poll", "--repository-poll-secs=1",
        f"--cloud-mount-directory={mount}",
    ])
    client = server.http()
    assert _version(client, "echo") == "1"
    assert _version(client, "gone") == "1"
    grpc = server.grpc()
    r = grpc.infer("echo", grpc_inputs([FP32], ["FP32"]))
    assert_tensor_equal(r.as_numpy("OUTPUT0"), FP32)
    if ORT_LIB.exists():
        assert _version(client, "identity_fp32") == "1"
    assert any(mount.iterdir()), "nothing copied into --cloud-mount-directory"

    bucket.put("repo/echo/config.pbtxt", _echo_config("two").encode())
    bucket.put("repo/echo/2/README", b"version 2\n")
    bucket.delete("repo/gone/config.pbtxt")
    bucket.delete("repo/gone/1/README")
    wait_for(lambda: _version(client, "echo") == "2", what="version 2 of echo from the bucket")
    tag = client.get_model_config("echo")["parameters"]["tag"]["string_value"]
    assert tag == "two"
    wait_for(lambda: not client.is_model_ready("gone"), what="the deleted model to unload")
    index = {e["name"] for e in client.get_model_repository_index()}
    assert "gone" not in index, index

    server.stop_gracefully()
    assert not any(mount.iterdir()), f"the copies are left in {mount}: {list(mount.iterdir())}"


def _start_fails(nereid, flags, want):
    server = nereid.start(None, flags, wait=False)
    rc = server.wait_exit(30)
    log = server.log_tail()
    assert rc != 0, log
    assert want in log, log


def test_s3_missing_bucket(nereid, bucket, aws_env):
    _start_fails(nereid, [f"--model-repository=s3://{bucket.hostport}/nosuchbucket/repo"], "bucket 'nosuchbucket' does not exist")


def test_s3_missing_credentials(nereid, bucket, aws_env, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    _start_fails(nereid, [f"--model-repository=s3://{bucket.hostport}/models/repo"], "no usable AWS credentials")


@pytest.mark.parametrize("url,want", [
    ("gs://bucket/repo", "gs:// repositories are not supported yet"),
    ("as://account/container/repo", "as:// repositories are not supported yet"),
    ("hdfs://namenode/repo", "scheme 'hdfs' is not supported"),
])
def test_cloud_schemes_refused(nereid, url, want):
    _start_fails(nereid, [f"--model-repository={url}"], want)
