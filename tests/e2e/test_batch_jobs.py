"""Batch transform as a server job API (--allow-batch-jobs): jobs
submitted to /v2/batch/jobs on the long jobs port (--async-port) of a real
bin/nereid, polled to the end, and their outputs compared with `nereid
batch`'s; a job cancelled and resumed; a server stopped (SIGTERM) and
killed (SIGKILL) mid-job and started again on the same --batch-jobs-root,
after which the job resumes from its finished shards and completes with
every record exactly once. Bad input: paths outside the root, unknown
models, bad numbers, conflicts, unknown ids and methods."""

from __future__ import annotations

import http.client
import json
import pathlib
import signal

import numpy as np
import pytest

from conftest import _free_ports, wait_for
from test_async import _port_open
from test_batch import (  # noqa: F401 - batch_repo is a fixture
    RECORDS,
    SIMPLE_BAD,
    batch_repo,
    check_simple_output,
    done_shards,
    echo_data,
    in_process,
    read_jsonl,
    run_batch,
    tensor,
    write_simple,
)

JOBS = "/v2/batch/jobs"


class Jobs:
    """A client of one server's batch job API."""

    def __init__(self, port: int):
        self.port = port

    def request(self, method, path, body=None, timeout=60):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            out = resp.read()
            assert resp.getheader("Content-Type") == "application/json", (method, path, resp.status, out)
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(out)
        finally:
            conn.close()

    def submit(self, **job):
        status, headers, st = self.request("POST", JOBS, job)
        assert status == 201, (status, st)
        assert headers["location"] == f"{JOBS}/{st['id']}"
        assert st["status"] in ("queued", "running"), st
        return st

    def status(self, jid):
        status, _, st = self.request("GET", f"{JOBS}/{jid}")
        assert status == 200, (status, st)
        return st

    def wait(self, jid, states=("done", "failed", "cancelled"), timeout=120):
        return wait_for(
            lambda: (st := self.status(jid))["status"] in states and st,
            timeout=timeout,
            interval=0.05,
            what=f"job {jid} to be {'/'.join(states)}",
        )

    def refused(self, method, path, body, code, want):
        status, _, out = self.request(method, path, body)
        assert status == code and want in out["error"], (method, path, body, status, out)


def start_jobs(nereid, repo, root, *flags, models=("simple", "echo_slow")):
    (port,) = _free_ports(1)
    args = [
        "--allow-batch-jobs=true",
        f"--batch-jobs-root={root}",
        "--async-address=127.0.0.1",
        f"--async-port={port}",
        "--model-control-mode=explicit",
        *[f"--load-model={m}" for m in models],
        *flags,
    ]
    server = nereid.start(repo, args)
    wait_for(lambda: _port_open(port), what="the long jobs port")
    return server, Jobs(port)


def test_submit_poll_and_outputs_as_nereid_batch(batch_repo, nereid, tmp_path):
    """A job's outputs are those of `nereid batch` in process, byte for
    byte; asynchronous inference shares the port when it is on too."""
    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    rng = np.random.default_rng(16)
    data = root / "data" / "simple.jsonl"
    a, b = write_simple(data, rng, RECORDS, SIMPLE_BAD)
    server, jobs = start_jobs(nereid, batch_repo, root, "--allow-async=true", f"--async-dir={tmp_path / 'async'}")

    st = jobs.submit(model="simple", input="data/simple.jsonl", output="out", batch_size=5, max_concurrency=8)
    assert st["input"] == "data/simple.jsonl" and st["output"] == "out" and st["model"] == "simple"
    assert st["batch_size"] == 5 and st["max_concurrency"] == 8 and st["max_error_fraction"] == 0.1
    st = jobs.wait(st["id"])
    assert st["status"] == "done", st
    assert st["records"] == RECORDS and st["errors"] == len(SIMPLE_BAD), st
    assert st["bytes_read"] == st["bytes_total"] == data.stat().st_size and st["percent"] == 100, st
    assert st["finished"] >= st["started"] >= st["created"], st
    assert st["summary"]["all_records"] == RECORDS and st["summary"]["shards"] == 1, st
    check_simple_output(root / "out", "simple", a, b, RECORDS, SIMPLE_BAD)

    local = tmp_path / "local"
    run_batch("--model", "simple", "--input", data, "--output", local, *in_process(batch_repo))
    for name in ("simple.out.jsonl", "simple.errors.jsonl"):
        assert (root / "out" / name).read_bytes() == (local / name).read_bytes(), name

    status, _, listing = jobs.request("GET", JOBS)
    assert status == 200 and [j["id"] for j in listing["jobs"]] == [st["id"]], listing

    # The asynchronous inference endpoints on the same port.
    body = {"inputs": [{"name": n, "shape": [1, 16], "datatype": "INT32", "data": list(range(16))} for n in ("INPUT0", "INPUT1")]}
    status, _, sub = jobs.request("POST", "/v2/models/simple/infer", body)
    assert status == 202, sub
    done = wait_for(lambda: (s := jobs.request("GET", f"/v2/async/requests/{sub['id']}")[2])["status"] == "done" and s,
                    what="the asynchronous request")
    assert done["model_name"] == "simple"
    server.stop_gracefully()


def test_bad_requests(batch_repo, nereid, tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    echo_data(root / "d.jsonl", 10)
    echo_data(outside / "secret.jsonl", 10)
    (root / "link.jsonl").symlink_to(outside / "secret.jsonl")
    (root / "away").symlink_to(outside)
    server, jobs = start_jobs(nereid, batch_repo, root)
    ok = {"model": "echo_slow", "input": "d.jsonl", "output": "o"}
    for change, code, want in [
        ({"input": "../outside/secret.jsonl"}, 400, "'input' \"../outside/secret.jsonl\" is outside the batch jobs root"),
        ({"input": str(outside / "secret.jsonl")}, 400, "is outside the batch jobs root"),
        ({"input": "link.jsonl"}, 400, "'input' \"link.jsonl\" links outside the batch jobs root"),
        ({"output": "../o"}, 400, "'output' \"../o\" is outside the batch jobs root"),
        ({"output": "away/o"}, 400, "'output' \"away/o\" links outside the batch jobs root"),
        ({"output": str(outside / "o")}, 400, "is outside the batch jobs root"),
        ({"input": "nope.jsonl"}, 400, "'input' \"nope.jsonl\" does not exist"),
        ({"model": "no_such_model"}, 404, "no_such_model"),
        ({"model": ""}, 400, "'model' is required"),
        ({"max_concurrency": 0}, 400, "'max_concurrency' 0 is not between 1 and 1024"),
        ({"max_error_fraction": -0.5}, 400, "'max_error_fraction' -0.5 is not between 0 and 1"),
        ({"split_lines": "ten"}, 400, "cannot unmarshal string"),
        ({"colour": "red"}, 400, 'unknown field "colour"'),
    ]:
        jobs.refused("POST", JOBS, {**ok, **change}, code, want)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.jsonl"], "a refused job wrote outside the root"
    jobs.refused("POST", JOBS, b"{", 400, "the job request is not valid")
    jobs.refused("GET", f"{JOBS}/nope", None, 404, "batch job 'nope' is not found")
    jobs.refused("DELETE", f"{JOBS}/nope", None, 404, "batch job 'nope' is not found")
    jobs.refused("POST", f"{JOBS}/nope/resume", None, 404, "batch job 'nope' is not found")
    jobs.refused("PUT", JOBS, None, 405, "method PUT is not allowed")
    jobs.refused("GET", f"{JOBS}/x/resume", None, 405, "method GET is not allowed")
    # Asynchronous inference is off: its paths are not served.
    jobs.refused("POST", "/v2/models/echo_slow/infer", b"{}", 404, "asynchronous inference is off")
    # The output of a running job is no other job's.
    echo_data(root / "big.jsonl", RECORDS)
    st = jobs.submit(model="echo_slow", input="big.jsonl", output="busy", batch_size=1, max_concurrency=1)
    jobs.refused("POST", JOBS, {**ok, "output": "busy"}, 409, f"is the output of job {st['id']}")
    jobs.refused("POST", f"{JOBS}/{st['id']}/resume", None, 409, "only a cancelled or failed job is resumed")
    server.stop_gracefully()

    # The root is required.
    bad = nereid.start(batch_repo, ["--allow-batch-jobs=true"], wait=False)
    assert bad.wait_exit(30) == 2
    assert "--batch-jobs-root is required with --allow-batch-jobs" in bad.log_tail()


def check_echo_outputs(out: pathlib.Path, n: int):
    """Every record 1..n exactly once, in order, each echoed, no errors."""
    seen = []
    for shard in done_shards(out):
        for o in read_jsonl(out / f"{shard}.out.jsonl"):
            np.testing.assert_array_equal(tensor(o, "OUTPUT0"), [[o["line"]] * 4])
            seen.append(o["line"])
        assert (out / f"{shard}.errors.jsonl").read_text() == ""
    assert seen == list(range(1, n + 1)), "records missing or repeated"
    assert not list(out.glob("*.tmp")), "temporary files left"


# One record a request, one at a time: 1500 requests of 2 ms or more, in
# six shards; a test acts once two are finished.
SLOW_RECORDS = 1500
SLOW_JOB = {"model": "echo_slow", "input": "echo.jsonl", "output": "out", "split_lines": 250, "batch_size": 1, "max_concurrency": 1}
SLOW_SHARDS = SLOW_RECORDS // SLOW_JOB["split_lines"]


def test_cancel_and_resume(batch_repo, nereid, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    echo_data(root / "echo.jsonl", SLOW_RECORDS)
    out = root / "out"
    server, jobs = start_jobs(nereid, batch_repo, root, "--batch-jobs-max-running=1")
    st = jobs.submit(**SLOW_JOB)
    # A second job waits for the first: one runs at a time.
    echo_data(root / "more.jsonl", 100)
    queued = jobs.submit(model="echo_slow", input="more.jsonl", output="more")
    assert queued["status"] == "queued", queued

    running = wait_for(lambda: (s := jobs.status(st["id"]))["records"] > 0 and s, what="progress")
    assert running["status"] == "running" and 0 < running["percent"] < 100 and running["records_per_second"] > 0, running
    assert running["bytes_total"] == (root / "echo.jsonl").stat().st_size
    wait_for(lambda: len(done_shards(out)) >= 2, timeout=60, interval=0.02, what="two finished shards")
    status, _, cancelled = jobs.request("DELETE", f"{JOBS}/{st['id']}")
    assert status == 200 and cancelled["status"] == "cancelled", cancelled
    done = done_shards(out)
    assert 2 <= len(done) < SLOW_SHARDS, cancelled
    assert not list(out.glob("*.tmp")), "a cancelled job left temporary files"
    # The queued job started once the first stopped.
    assert jobs.wait(queued["id"])["status"] == "done"
    assert done_shards(out) == done, "a cancelled job went on writing"

    status, _, resumed = jobs.request("POST", f"{JOBS}/{st['id']}/resume")
    assert status == 200 and resumed["status"] in ("queued", "running") and resumed["runs"] == 2, resumed
    final = jobs.wait(st["id"])
    assert final["status"] == "done", final
    assert final["summary"]["skipped_shards"] == len(done), final
    assert final["summary"]["all_records"] == SLOW_RECORDS, final
    check_echo_outputs(out, SLOW_RECORDS)

    # Deleting a finished job forgets it; its outputs stay.
    status, _, deleted = jobs.request("DELETE", f"{JOBS}/{st['id']}")
    assert status == 200 and deleted == {"id": st["id"], "status": "deleted"}, deleted
    jobs.refused("GET", f"{JOBS}/{st['id']}", None, 404, "is not found")
    check_echo_outputs(out, SLOW_RECORDS)
    server.stop_gracefully()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_restart_mid_job_resumes(batch_repo, nereid, tmp_path, sig):
    """A server stopped or killed mid-job, started again on the same root:
    the job resumes from its finished shards, a queued one runs, and a
    finished one is still listed."""
    root = tmp_path / "root"
    root.mkdir()
    echo_data(root / "echo.jsonl", SLOW_RECORDS)
    echo_data(root / "small.jsonl", 50)
    out = root / "out"
    server, jobs = start_jobs(nereid, batch_repo, root, "--batch-jobs-max-running=1")
    small = jobs.submit(model="echo_slow", input="small.jsonl", output="small")
    assert jobs.wait(small["id"])["status"] == "done"
    st = jobs.submit(**SLOW_JOB)
    queued = jobs.submit(model="echo_slow", input="small.jsonl", output="small2")
    wait_for(lambda: len(done_shards(out)) >= 2, timeout=60, interval=0.02, what="two finished shards")
    server.proc.send_signal(sig)
    rc = server.proc.wait(timeout=30)
    server.stop()
    assert rc == (0 if sig == signal.SIGTERM else -signal.SIGKILL), server.log_tail()
    done = done_shards(out)
    assert 2 <= len(done) < SLOW_SHARDS, "the job finished before the server stopped"
    on_disk = {j["id"]: j["status"] for j in json.loads((root / ".nereid-batch-jobs.json").read_text())["jobs"]}
    assert on_disk == {small["id"]: "done", st["id"]: "running", queued["id"]: "queued"}, on_disk

    server2, jobs2 = start_jobs(nereid, batch_repo, root, "--batch-jobs-max-running=1")
    final = jobs2.wait(st["id"])
    assert final["status"] == "done" and final["runs"] == 2, final
    assert final["summary"]["skipped_shards"] == len(done), final
    check_echo_outputs(out, SLOW_RECORDS)
    assert jobs2.wait(queued["id"])["status"] == "done"
    assert [o["line"] for o in read_jsonl(root / "small2" / "small.out.jsonl")] == list(range(1, 51))
    assert jobs2.status(small["id"])["status"] == "done"
    server2.stop_gracefully()
