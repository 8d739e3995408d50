"""`nereid batch` end to end: generated JSONL and CSV data sets through
model_repo_examples/mlp_fp32 and simple, in process and against a real
bin/nereid by URL, compared with each other and with tritonclient; a job
interrupted (SIGINT, SIGKILL) and resumed; malformed records; a job that
stops on its error fraction."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess

import numpy as np
import pytest
import tritonclient.http as httpclient

from conftest import EXAMPLES, NEREID_BIN, ROOT, wait_for, write_identity_model

RECORDS = 3000
RUN_TIMEOUT_S = 180


@pytest.fixture(scope="module")
def batch_repo(tmp_path_factory) -> pathlib.Path:
    repo = tmp_path_factory.mktemp("batch_repo")
    for name in ("mlp_fp32", "simple", "simple_ensemble"):
        shutil.copytree(EXAMPLES / name, repo / name)
    # A slow echo, so that a job of a few thousand records lasts long
    # enough to be interrupted: 2 ms per request.
    write_identity_model(repo, "echo_slow", [("FP32", [4])], max_batch_size=8, parameters={"execute_delay_ms": "2"})
    return repo


def batch_argv(*args) -> list[str]:
    return [str(NEREID_BIN), "batch", *map(str, args)]


def run_batch(*args, expect=0) -> subprocess.CompletedProcess:
    """Runs `nereid batch` to its end and checks its exit status."""
    if not NEREID_BIN.exists():
        pytest.fail(f"{NEREID_BIN} does not exist: run `make build` first")
    p = subprocess.run(batch_argv(*args), capture_output=True, text=True, timeout=RUN_TIMEOUT_S, cwd=ROOT)
    assert p.returncode == expect, f"exit {p.returncode}, want {expect}\n{p.stderr}"
    return p


def in_process(repo) -> list[str]:
    return [f"--model-repository={repo}"]


def read_jsonl(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def tensor(out: dict, name: str) -> np.ndarray:
    o = next(o for o in out["outputs"] if o["name"] == name)
    return np.array(o["data"]).reshape(o["shape"])


def write_simple(path: pathlib.Path, rng, n: int, bad: dict[int, str]):
    """n records of simple (INPUT0, INPUT1: 16 INT32 each), one a line;
    the lines in bad are replaced. Returns the inputs by line number."""
    a = rng.integers(-1000, 1000, size=(n + 1, 16), dtype=np.int32)
    b = rng.integers(-1000, 1000, size=(n + 1, 16), dtype=np.int32)
    with path.open("w") as f:
        for line in range(1, n + 1):
            if line in bad:
                f.write(bad[line] + "\n")
            else:
                f.write(json.dumps({"INPUT0": a[line].tolist(), "INPUT1": b[line].tolist()}) + "\n")
    return a, b


# Malformed lines of simple, each one kind of bad record.
SIMPLE_BAD = {
    10: '{"INPUT0": [1, 2, 3',  # not JSON
    1000: json.dumps({"INPUT0": list(range(15)), "INPUT1": list(range(16))}),  # 15 values, not 16
    2000: json.dumps({"INPUT0": ["a"] * 16, "INPUT1": list(range(16))}),  # strings for INT32
    2500: json.dumps({"INPUT9": list(range(16))}),  # no such input
}


def check_simple_output(out_dir: pathlib.Path, shard: str, a, b, n: int, bad: dict):
    outs = read_jsonl(out_dir / f"{shard}.out.jsonl")
    want_lines = [line for line in range(1, n + 1) if line not in bad]
    assert [o["line"] for o in outs] == want_lines
    for o in outs:
        line = o["line"]
        np.testing.assert_array_equal(tensor(o, "OUTPUT0"), [a[line] + b[line]])
        np.testing.assert_array_equal(tensor(o, "OUTPUT1"), [a[line] - b[line]])
    errors = read_jsonl(out_dir / f"{shard}.errors.jsonl")
    assert [e["line"] for e in errors] == sorted(bad)
    return errors


def test_simple_in_process_and_by_url(batch_repo, nereid, tmp_path):
    rng = np.random.default_rng(16)
    data = tmp_path / "simple.jsonl"
    a, b = write_simple(data, rng, RECORDS, SIMPLE_BAD)

    local = tmp_path / "local"
    p = run_batch("--model", "simple", "--input", data, "--output", local, *in_process(batch_repo))
    assert f"{RECORDS} records, {len(SIMPLE_BAD)} errors" in p.stderr
    errors = check_simple_output(local, "simple", a, b, RECORDS, SIMPLE_BAD)
    by_line = {e["line"]: e["error"] for e in errors}
    assert "failed to parse the request JSON" in by_line[10]
    assert "unexpected shape for input 'INPUT0' for model 'simple'. Expected [-1,16], got [1,15]" in by_line[1000]
    assert "expected an integer for element 0 of INT32 input 'INPUT0'" in by_line[2000]
    assert "unknown input 'INPUT9'" in by_line[2500]

    # The same job against a server, over HTTP: the same bytes out.
    server = nereid.start(batch_repo, ["--model-control-mode=explicit", "--load-model=simple"])
    remote = tmp_path / "remote"
    run_batch("--model", "simple", "--input", data, "--output", remote, "--url", f"http://{server.http_url}",
              "--batch-size", "5", "--max-concurrency", "8")
    assert (remote / "simple.out.jsonl").read_bytes() == (local / "simple.out.jsonl").read_bytes()
    assert (remote / "simple.errors.jsonl").read_bytes() == (local / "simple.errors.jsonl").read_bytes()


def test_mlp_in_process_and_by_url(batch_repo, nereid, tmp_path):
    rng = np.random.default_rng(64)
    x = rng.standard_normal((RECORDS, 64), dtype=np.float32)
    data = tmp_path / "mlp.jsonl"
    # A model with one input takes a record that is the value alone.
    data.write_text("".join(json.dumps(row.tolist()) + "\n" for row in x))
    csv = tmp_path / "csv" / "mlp_rows.csv"
    csv.parent.mkdir()
    csv.write_text(",".join(f"c{i}" for i in range(64)) + "\n" + "".join(",".join(repr(float(v)) for v in row) + "\n" for row in x[:500]))

    local = tmp_path / "local"
    run_batch("--model", "mlp_fp32", "--input", data, "--output", local, *in_process(batch_repo))
    server = nereid.start(batch_repo, ["--model-control-mode=explicit", "--load-model=mlp_fp32"])
    remote = tmp_path / "remote"
    run_batch("--model", "mlp_fp32", "--input", data, "--output", remote, "--url", server.http_url, "--batch-size", "1")
    local_out, remote_out = read_jsonl(local / "mlp.out.jsonl"), read_jsonl(remote / "mlp.out.jsonl")
    assert [o["line"] for o in local_out] == list(range(1, RECORDS + 1))
    assert [o["line"] for o in remote_out] == list(range(1, RECORDS + 1))
    y_local = np.concatenate([tensor(o, "OUTPUT0") for o in local_out])
    y_remote = np.concatenate([tensor(o, "OUTPUT0") for o in remote_out])
    assert y_local.shape == (RECORDS, 16)
    # Batched (64 a request) against one record a request: the same
    # model, summed in another order.
    np.testing.assert_allclose(y_local, y_remote, rtol=1e-5, atol=1e-5)

    # And as the real-time endpoint answers, record by record.
    client = httpclient.InferenceServerClient(server.http_url)
    for i in rng.choice(RECORDS, 20, replace=False):
        inp = httpclient.InferInput("INPUT0", [1, 64], "FP32")
        inp.set_data_from_numpy(x[i : i + 1], binary_data=True)
        want = client.infer("mlp_fp32", [inp]).as_numpy("OUTPUT0")
        np.testing.assert_allclose(y_local[i : i + 1], want, rtol=1e-5, atol=1e-5)

    # A CSV row is the one input's 64 values; a directory is read file by
    # file.
    rows = tmp_path / "rows"
    run_batch("--model", "mlp_fp32", "--input", csv.parent, "--output", rows, "--url", server.http_url)
    csv_out = read_jsonl(rows / "mlp_rows.out.jsonl")
    assert [o["line"] for o in csv_out] == list(range(2, 502))
    np.testing.assert_allclose(np.concatenate([tensor(o, "OUTPUT0") for o in csv_out]), y_local[:500], rtol=1e-5, atol=1e-5)


def test_ensemble(batch_repo, tmp_path):
    """An ensemble is run like any model: simple twice, OUTPUT0 = 2 * INPUT0."""
    rng = np.random.default_rng(8)
    data = tmp_path / "pairs.jsonl"
    a, b = write_simple(data, rng, 500, {})
    out = tmp_path / "out"
    run_batch("--model", "simple_ensemble", "--input", data, "--output", out, *in_process(batch_repo))
    outs = read_jsonl(out / "pairs.out.jsonl")
    assert [o["line"] for o in outs] == list(range(1, 501))
    for o in outs:
        np.testing.assert_array_equal(tensor(o, "OUTPUT0"), [2 * a[o["line"]]])
        np.testing.assert_array_equal(tensor(o, "OUTPUT1"), [2 * b[o["line"]]])


def test_csv_columns(batch_repo, tmp_path):
    """A column per input: each cell a JSON list; a bad cell fails its row."""
    rng = np.random.default_rng(3)
    a = rng.integers(-50, 50, size=(200, 16), dtype=np.int32)
    b = rng.integers(-50, 50, size=(200, 16), dtype=np.int32)
    lines = ["INPUT1,INPUT0"]
    for i in range(200):
        cell0 = "oops" if i == 50 else json.dumps(a[i].tolist())
        lines.append(f'"{json.dumps(b[i].tolist())}","{cell0}"')
    data = tmp_path / "cols.csv"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    run_batch("--model", "simple", "--input", data, "--output", out, *in_process(batch_repo))
    outs = read_jsonl(out / "cols.out.jsonl")
    assert [o["line"] for o in outs] == [i + 2 for i in range(200) if i != 50]
    for o in outs:
        i = o["line"] - 2
        np.testing.assert_array_equal(tensor(o, "OUTPUT0"), [a[i] + b[i]])
    errors = read_jsonl(out / "cols.errors.jsonl")
    assert errors == [{"line": 52, "error": "column 'INPUT0': \"oops\" is not a number or a boolean or a JSON list"}]


def echo_data(path: pathlib.Path, n: int):
    path.write_text("".join(json.dumps({"INPUT0": [i, i, i, i]}) + "\n" for i in range(1, n + 1)))


def done_shards(out: pathlib.Path) -> list[str]:
    try:
        return sorted(json.loads((out / "_manifest.json").read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_interrupted_and_resumed(batch_repo, tmp_path, sig):
    data = tmp_path / "echo.jsonl"
    echo_data(data, RECORDS)
    out = tmp_path / "out"
    # One record a request, one at a time: 3000 requests of 2 ms or more.
    args = ["--model", "echo_slow", "--input", data, "--output", out, "--split-lines", "250",
            "--batch-size", "1", "--max-concurrency", "1", *in_process(batch_repo)]
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(batch_argv(*args), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_for(lambda: len(done_shards(out)) >= 2, timeout=60, interval=0.02, what="two finished shards")
        proc.send_signal(sig)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    first_log = (tmp_path / "first.log").read_text()
    done = done_shards(out)
    assert 2 <= len(done) < RECORDS // 250, f"the job finished before it was interrupted:\n{first_log}"
    if sig == signal.SIGINT:
        assert rc == 130, first_log
        assert "interrupted; run the same command again to resume" in first_log
        assert not list(out.glob("*.tmp")), "an interrupted job left temporary files"
    else:
        assert rc == -signal.SIGKILL

    p = run_batch(*args)
    assert f"{len(done)} finished before" in p.stderr, p.stderr
    assert len(done_shards(out)) == RECORDS // 250
    seen = []
    for shard in done_shards(out):
        for o in read_jsonl(out / f"{shard}.out.jsonl"):
            np.testing.assert_array_equal(tensor(o, "OUTPUT0"), [[o["line"]] * 4])
            seen.append(o["line"])
        assert (out / f"{shard}.errors.jsonl").read_text() == ""
    assert seen == list(range(1, RECORDS + 1)), "records missing or repeated"
    assert not list(out.glob("*.tmp"))


def test_error_fraction_stops_the_job(batch_repo, tmp_path):
    rng = np.random.default_rng(5)
    data = tmp_path / "simple.jsonl"
    # From record 501 on every record is refused by the model (15 values).
    bad = {line: json.dumps({"INPUT0": list(range(15)), "INPUT1": list(range(15))}) for line in range(501, 1001)}
    write_simple(data, rng, 1000, bad)
    out = tmp_path / "out"
    args = ["--model", "simple", "--input", data, "--output", out, "--split-lines", "100", "--max-concurrency", "1",
            *in_process(batch_repo)]
    p = run_batch(*args, expect=1)
    assert "too many records failed" in p.stderr and "running it again resumes it" in p.stderr, p.stderr
    assert done_shards(out) == [f"simple-{i:05d}" for i in range(5)]
    # Allowed every failure, the job resumes at shard 5 and finishes.
    p = run_batch(*args, "--max-error-fraction", "1")
    assert "5 finished before" in p.stderr
    assert len(done_shards(out)) == 10
    errors = [e["line"] for i in range(5, 10) for e in read_jsonl(out / f"simple-{i:05d}.errors.jsonl")]
    assert errors == list(range(501, 1001))


def test_usage_errors(batch_repo, tmp_path):
    data = tmp_path / "d.jsonl"
    echo_data(data, 3)
    p = run_batch("--model", "echo_slow", "--input", data, "--output", tmp_path, *in_process(batch_repo), expect=1)
    assert "is the directory of the input files" in p.stderr
    p = run_batch("--model", "no_such_model", "--input", data, "--output", tmp_path / "o", *in_process(batch_repo), expect=1)
    assert "no_such_model" in p.stderr
    p = run_batch("--model", "echo_slow", "--input", data, expect=2)
    assert "--model, --input and --output are required" in p.stderr
    os.makedirs(tmp_path / "o2")
    run_batch("--model", "echo_slow", "--input", data, "--output", tmp_path / "o2", "--split-lines", "2", *in_process(batch_repo))
    p = run_batch("--model", "echo_slow", "--input", data, "--output", tmp_path / "o2", *in_process(batch_repo), expect=1)
    assert "holds the results of another job" in p.stderr
