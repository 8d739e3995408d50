"""gRPC transport flags as Triton has them: TLS and mutual TLS (with
certificates re-read when their files change), compression in both
directions, keepalive settings, and the refusals of combinations that
would otherwise serve something other than what was asked."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from conftest import NEREID_BIN, wait_for

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "model_repo_examples"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d: pathlib.Path):
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    d.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
            "-subj", "/CN=nereid test CA", "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    for name in ("server", "server2", "client"):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)
        (d / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=d)
    return d


def simple_repo(root: pathlib.Path):
    shutil.copytree(EXAMPLES / "simple", root / "simple")
    return root


def infer(client, **kwargs):
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        inp = grpcclient.InferInput(name, [1, 16], "INT32")
        inp.set_data_from_numpy(a)
        inputs.append(inp)
    out = client.infer("simple", inputs, **kwargs)
    np.testing.assert_array_equal(out.as_numpy("OUTPUT0"), a + a)


def tls_client(s, pki, cert=True):
    kwargs = dict(ssl=True, root_certificates=str(pki / "ca.crt"))
    if cert:
        kwargs.update(private_key=str(pki / "client.key"), certificate_chain=str(pki / "client.crt"))
    return grpcclient.InferenceServerClient(s.grpc_url, **kwargs)


def tls_server_name(s, pki):
    """The common name of the certificate the server presents."""
    import ssl
    import socket

    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", s.grpc_port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            subject = dict(x[0] for x in tls.getpeercert()["subject"])
            return subject["commonName"]


def test_tls(nereid, tmp_path):
    pki = make_pki(tmp_path / "pki")
    s = nereid.start(simple_repo(tmp_path / "repo"), [
        "--grpc-use-ssl=true", f"--grpc-server-cert={pki / 'server.crt'}", f"--grpc-server-key={pki / 'server.key'}",
    ])
    client = tls_client(s, pki, cert=False)
    assert client.is_server_live()
    infer(client)
    # A plaintext client gets no answer.
    plain = grpcclient.InferenceServerClient(s.grpc_url)
    with pytest.raises(InferenceServerException):
        plain.is_server_live(client_timeout=5)


def test_mutual_tls_and_reload(nereid, tmp_path):
    pki = make_pki(tmp_path / "pki")
    cert, key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(pki / "server.crt", cert)
    shutil.copy(pki / "server.key", key)
    s = nereid.start(simple_repo(tmp_path / "repo"), [
        "--grpc-use-ssl-mutual=true", f"--grpc-server-cert={cert}", f"--grpc-server-key={key}",
        f"--grpc-root-cert={pki / 'ca.crt'}",
    ])
    infer(tls_client(s, pki))
    # Without a client certificate the handshake fails.
    with pytest.raises(InferenceServerException):
        tls_client(s, pki, cert=False).is_server_live(client_timeout=5)
    assert tls_server_name(s, pki) == "server"
    # A renewed certificate is served without a restart.
    shutil.copy(pki / "server2.crt", cert)
    shutil.copy(pki / "server2.key", key)
    wait_for(lambda: tls_server_name(s, pki) == "server2", timeout=10, what="the renewed certificate")
    infer(tls_client(s, pki))


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(nereid, tmp_path, algorithm):
    s = nereid.start(simple_repo(tmp_path / "repo"))
    client = s.grpc()
    infer(client, compression_algorithm=algorithm)
    assert client.get_model_metadata("simple").name == "simple"


def test_response_compression_level(nereid, tmp_path):
    # Which encoding the response used is checked by server/grpc's unit
    # test (grpc-python hides the header); here a client decodes it.
    s = nereid.start(simple_repo(tmp_path / "repo"), ["--grpc-infer-response-compression-level=high"])
    infer(s.grpc())
    infer(s.grpc(), compression_algorithm="deflate")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--grpc-server-cert=/x.crt", "--grpc-server-key=/x.key"], "need --grpc-use-ssl=true"),
        (["--grpc-use-ssl=true"], "--grpc-use-ssl needs --grpc-server-cert and --grpc-server-key"),
        (["--grpc-use-ssl-mutual=true", "--grpc-server-cert=/x", "--grpc-server-key=/y"], "needs --grpc-root-cert"),
        (["--grpc-use-ssl=true", "--grpc-server-cert=/nonexistent.crt", "--grpc-server-key=/nonexistent.key"],
         "/nonexistent.crt"),
        (["--grpc-infer-response-compression-level=max"], "is not one of none, low, medium, high"),
        (["--grpc-http2-max-ping-strikes=5"], "--grpc-http2-max-ping-strikes=5: not implemented"),
        (["--grpc-keepalive-time=0"], "--grpc-keepalive-time: 0 milliseconds is out of range"),
    ],
)
def test_transport_flags_refused(tmp_path, flags, message):
    out = subprocess.run(
        [str(NEREID_BIN), f"--model-repository={tmp_path}", "--allow-metrics=false",
         "--http-port=0", "--grpc-port=0", *flags],
        capture_output=True, text=True, timeout=30,
    )
    assert out.returncode != 0, out
    assert message in out.stderr + out.stdout


def test_keepalive_flags_accepted(nereid, tmp_path):
    s = nereid.start(simple_repo(tmp_path / "repo"), [
        "--grpc-keepalive-time=10000", "--grpc-keepalive-timeout=5000", "--grpc-keepalive-permit-without-calls=true",
        "--grpc-http2-min-recv-ping-interval-without-data=1000", "--grpc-max-connection-age=60000",
        "--grpc-max-connection-age-grace=5000",
    ])
    infer(s.grpc())
    time.sleep(0.1)


def test_https_and_metrics_tls(nereid, tmp_path):
    """Nereid's own flags: HTTPS and mutual TLS on the HTTP port, TLS on the
    metrics port, through tritonclient's ssl options."""
    import http.client
    import ssl

    import tritonclient.http as httpclient

    from conftest import _free_ports

    pki = make_pki(tmp_path / "pki")
    (metrics_port,) = _free_ports(1)
    s = nereid.start(simple_repo(tmp_path / "repo"), [
        "--http-use-ssl-mutual=true", f"--http-server-cert={pki / 'server.crt'}",
        f"--http-server-key={pki / 'server.key'}", f"--http-root-cert={pki / 'ca.crt'}",
        "--allow-metrics=true", f"--metrics-port={metrics_port}", "--metrics-address=127.0.0.1",
        "--metrics-use-ssl=true", f"--metrics-server-cert={pki / 'server.crt'}", f"--metrics-server-key={pki / 'server.key'}",
    ], wait=False)

    def ctx(cert=True):
        c = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        if cert:
            c.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
        return c

    def live():
        conn = http.client.HTTPSConnection("127.0.0.1", s.http_port, context=ctx(), timeout=2)
        conn.request("GET", "/v2/health/live")
        return conn.getresponse().status == 200

    wait_for(live, what="HTTPS server live")
    client = httpclient.InferenceServerClient(
        s.http_url, ssl=True, ssl_context_factory=lambda: ctx(), insecure=False)
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        inp = httpclient.InferInput(name, [1, 16], "INT32")
        inp.set_data_from_numpy(a)
        inputs.append(inp)
    np.testing.assert_array_equal(client.infer("simple", inputs).as_numpy("OUTPUT0"), a + a)
    # No client certificate, or plaintext: refused.
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        conn = http.client.HTTPSConnection("127.0.0.1", s.http_port, context=ctx(cert=False), timeout=5)
        conn.request("GET", "/v2/health/live")
        conn.getresponse()
    with pytest.raises((ConnectionError, OSError, http.client.HTTPException)):
        conn = http.client.HTTPConnection("127.0.0.1", s.http_port, timeout=5)
        conn.request("GET", "/v2/health/live")
        conn.getresponse()
    conn = http.client.HTTPSConnection("127.0.0.1", metrics_port, context=ctx(cert=False), timeout=5)
    conn.request("GET", "/metrics")
    resp = conn.getresponse()
    assert resp.status == 200 and b"nv_" in resp.read()
    s.stop_gracefully()
