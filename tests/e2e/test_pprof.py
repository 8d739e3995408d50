"""--pprof-address: Go's runtime profiles on their own listener, off by default."""

import urllib.error
import urllib.request

import pytest

from conftest import _free_ports


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read().decode(errors="replace")


def test_pprof_served_only_when_asked(nereid, good_repo):
    (port,) = _free_ports(1)
    s = nereid.start(good_repo, flags=[f"--pprof-address=127.0.0.1:{port}"])
    status, body = get(f"http://127.0.0.1:{port}/debug/pprof/")
    assert status == 200 and "goroutine" in body
    status, body = get(f"http://127.0.0.1:{port}/debug/pprof/heap?debug=1")
    assert status == 200 and "heap profile" in body
    # Not on the inference port.
    with pytest.raises(urllib.error.HTTPError) as e:
        get(f"http://{s.http_url}/debug/pprof/")
    assert e.value.code == 404


def test_pprof_off_by_default(nereid, good_repo):
    s = nereid.start(good_repo)
    with pytest.raises(urllib.error.HTTPError) as e:
        get(f"http://{s.http_url}/debug/pprof/")
    assert e.value.code == 404


def test_pprof_address_in_use_fails_start(nereid, good_repo, tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        s = nereid.start(good_repo, flags=[f"--pprof-address=127.0.0.1:{port}"], wait=False)
        assert s.proc.wait(timeout=30) != 0
        assert "address already in use" in s.log_tail()
