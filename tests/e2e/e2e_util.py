"""Tensors and request builders shared by the end-to-end tests."""

import http.client
import re

import ml_dtypes
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

DATATYPES = [
    "BOOL",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "FP16",
    "BF16",
    "FP32",
    "FP64",
    "BYTES",
]

# Triton rejects these in JSON: they travel only as binary data.
BINARY_ONLY = {"FP16", "BF16"}


def _ints(dtype):
    info = np.iinfo(dtype)
    return np.array([info.min, 0, 1, info.max, info.max // 3], dtype=dtype)


# Values chosen to catch truncation, sign and precision bugs: extremes,
# denormals, and values with long decimal expansions.
SAMPLES = {
    "BOOL": np.array([True, False, True, True, False]),
    "INT8": _ints(np.int8),
    "INT16": _ints(np.int16),
    "INT32": _ints(np.int32),
    "INT64": _ints(np.int64),
    "UINT8": _ints(np.uint8),
    "UINT16": _ints(np.uint16),
    "UINT32": _ints(np.uint32),
    "UINT64": _ints(np.uint64),
    "FP16": np.array([0.0, -1.5, 65504.0, 2.0**-24, 0.1], dtype=np.float16),
    "BF16": np.array([0.0, -1.5, 3.0e38, 1.0 / 3.0, 0.1], dtype=ml_dtypes.bfloat16),
    "FP32": np.array([0.0, -1.5, 3.4028235e38, 1e-45, 0.1], dtype=np.float32),
    "FP64": np.array([0.0, -2.5e300, 5e-324, 0.1, 1.0 / 3.0], dtype=np.float64),
    "BYTES": np.array(
        [b"hello", b"", b"\x00\xff\xfe binary", "h\u00e9llo \u65e5\u672c".encode(), b""],
        dtype=np.object_,
    ),
}

# JSON carries BYTES as UTF-8 strings: no invalid UTF-8 here.
JSON_BYTES = np.array(
    [b"hello", b"", "h\u00e9llo \u65e5\u672c \u2603".encode(), b"tab\tquote\"back\\slash", b""],
    dtype=np.object_,
)


def sample(datatype, json_mode=False):
    if datatype == "BYTES" and json_mode:
        return JSON_BYTES.copy()
    return SAMPLES[datatype].copy()


def assert_tensor_equal(got, want, datatype=None):
    """Exact equality, including dtype and the bit pattern of floats."""
    assert got is not None, "output missing"
    assert tuple(got.shape) == tuple(want.shape), (got.shape, want.shape)
    if want.dtype == np.object_:
        norm = [x.encode() if isinstance(x, str) else bytes(x) for x in got.flatten()]
        assert norm == list(want.flatten())
    else:
        assert got.dtype == want.dtype, (got.dtype, want.dtype)
        assert got.tobytes() == want.tobytes(), (got, want)


def http_inputs(arrays, datatypes, binary=True):
    inputs = []
    for i, (arr, dt) in enumerate(zip(arrays, datatypes)):
        inp = httpclient.InferInput(f"INPUT{i}", list(arr.shape), dt)
        inp.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(inp)
    return inputs


def http_outputs(n, binary=True):
    return [httpclient.InferRequestedOutput(f"OUTPUT{i}", binary_data=binary) for i in range(n)]


def grpc_inputs(arrays, datatypes):
    inputs = []
    for i, (arr, dt) in enumerate(zip(arrays, datatypes)):
        inp = grpcclient.InferInput(f"INPUT{i}", list(arr.shape), dt)
        inp.set_data_from_numpy(arr)
        inputs.append(inp)
    return inputs


def grpc_outputs(n):
    return [grpcclient.InferRequestedOutput(f"OUTPUT{i}") for i in range(n)]


# --------------------------------------------------------------------------
# Prometheus text parsing

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(port):
    """GET /metrics on 127.0.0.1:port: ({(name, frozenset(labels)): value},
    {name: type}, the body's text)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        body = resp.read().decode()
        assert resp.status == 200, body
    finally:
        conn.close()
    samples, types = {}, {}
    for line in body.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            types[name] = typ
            continue
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, line
        labels = frozenset(_LABEL.findall(m.group(2) or ""))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples, types, body
