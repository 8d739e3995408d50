"""What both peer servers need to serve a Triton model directory with ONNX
Runtime and to be driven by perf_analyzer.

perf_analyzer (service kind "triton") reads a model's metadata *and* its
Triton model configuration before it sends the first request: over HTTP
GET /v2/models/NAME/config, over gRPC the ModelConfig call of
inference.GRPCInferenceService. MLServer and the KServe model server speak
the KServe v2 protocol, which has no such call, so each peer server answers
it in addition (built here from the model's config.pbtxt and ONNX file).
The call is made once per perf_analyzer run, before measuring; the
inference path of the peers is their own, untouched.
"""

from __future__ import annotations

import pathlib
import re

import onnxruntime as ort

# ONNX tensor element types -> KServe v2 datatypes.
ONNX_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

# Triton's DataType enum (model_config.proto).
TRITON_TYPES = {
    "BOOL": 1, "UINT8": 2, "UINT16": 3, "UINT32": 4, "UINT64": 5, "INT8": 6,
    "INT16": 7, "INT32": 8, "INT64": 9, "FP16": 10, "FP32": 11, "FP64": 12,
    "BYTES": 13, "BF16": 14,
}


class ModelSpec:
    """A model directory of a Triton repository: NAME/config.pbtxt and
    NAME/1/model.onnx."""

    def __init__(self, directory: pathlib.Path):
        self.name = directory.name
        self.path = str(directory / "1" / "model.onnx")
        config = (directory / "config.pbtxt").read_text()
        found = re.search(r"^\s*max_batch_size\s*:\s*(\d+)", config, re.M)
        self.max_batch_size = int(found.group(1)) if found else 0
        self.dynamic_batching = re.search(r"^\s*dynamic_batching\s*\{", config, re.M) is not None
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        self.inputs = [self._tensor(t) for t in session.get_inputs()]
        self.outputs = [self._tensor(t) for t in session.get_outputs()]

    def _tensor(self, t) -> dict:
        """name, datatype and the shape as v2 metadata gives it (-1 for
        variable dimensions, the batch dimension included)."""
        shape = [d if isinstance(d, int) and d >= 0 else -1 for d in t.shape]
        if self.max_batch_size > 0 and shape:
            shape[0] = -1
        return {"name": t.name, "datatype": ONNX_TYPES[t.type], "shape": shape}

    def dims(self, t: dict) -> list:
        """A tensor's dims in the model configuration: without the batch
        dimension when the model batches."""
        return t["shape"][1:] if self.max_batch_size > 0 else t["shape"]

    def metadata(self) -> dict:
        return {"name": self.name, "versions": ["1"], "platform": "onnxruntime_onnx",
                "inputs": self.inputs, "outputs": self.outputs}

    def triton_config(self) -> dict:
        """The model configuration as Triton's HTTP /config returns it."""
        config = {
            "name": self.name,
            "platform": "onnxruntime_onnx",
            "backend": "onnxruntime",
            "max_batch_size": self.max_batch_size,
            "input": [{"name": t["name"], "data_type": "TYPE_" + _config_type(t["datatype"]),
                       "dims": self.dims(t)} for t in self.inputs],
            "output": [{"name": t["name"], "data_type": "TYPE_" + _config_type(t["datatype"]),
                        "dims": self.dims(t)} for t in self.outputs],
        }
        if self.dynamic_batching:
            config["dynamic_batching"] = {}
        return config

    def triton_config_response(self) -> bytes:
        """The gRPC ModelConfigResponse message, protobuf-encoded by hand:
        config (1) = ModelConfig{name (1), platform (2), max_batch_size (4),
        input (5) = ModelInput{name (1), data_type (2), dims (4)},
        output (6) = ModelOutput{name (1), data_type (2), dims (3)}}."""
        config = _string(1, self.name) + _string(2, "onnxruntime_onnx")
        config += _key(4, 0) + _varint(self.max_batch_size)
        for t in self.inputs:
            config += _message(5, _string(1, t["name"]) + _key(2, 0) + _varint(TRITON_TYPES[t["datatype"]])
                               + _packed(4, self.dims(t)))
        for t in self.outputs:
            config += _message(6, _string(1, t["name"]) + _key(2, 0) + _varint(TRITON_TYPES[t["datatype"]])
                               + _packed(3, self.dims(t)))
        return _message(1, config)


def _config_type(datatype: str) -> str:
    return "STRING" if datatype == "BYTES" else datatype


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int64 values take ten bytes
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _message(field: int, body: bytes) -> bytes:
    return _key(field, 2) + _varint(len(body)) + body


def _string(field: int, s: str) -> bytes:
    return _message(field, s.encode())


def _packed(field: int, values: list) -> bytes:
    return _message(field, b"".join(_varint(v) for v in values)) if values else b""


def requested_name(request: bytes) -> str:
    """The model name (field 1) of a ModelConfigRequest."""
    i = 0
    while i < len(request):
        key, i = _read_varint(request, i)
        field, wire = key >> 3, key & 7
        if wire == 2:
            n, i = _read_varint(request, i)
            if field == 1:
                return request[i:i + n].decode()
            i += n
        elif wire == 0:
            _, i = _read_varint(request, i)
        else:
            break
    return ""


def _read_varint(b: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while i < len(b):
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            break
    return n, i


def load_specs(repository: str) -> dict[str, ModelSpec]:
    """Every model directory with a 1/model.onnx in the repository."""
    root = pathlib.Path(repository)
    return {d.name: ModelSpec(d) for d in sorted(root.iterdir())
            if (d / "config.pbtxt").is_file() and (d / "1" / "model.onnx").is_file()}


def grpc_config_handler(specs: dict[str, ModelSpec]):
    """A generic gRPC handler for /inference.GRPCInferenceService/ModelConfig
    (request and response are raw bytes)."""
    import grpc

    responses = {name: spec.triton_config_response() for name, spec in specs.items()}

    async def model_config(request: bytes, context):
        name = requested_name(request)
        if name not in responses:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{name}' is not found")
        return responses[name]

    return grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {"ModelConfig": grpc.unary_unary_rpc_method_handler(model_config)},
    )


def session(path: str):
    """An ONNX Runtime session with the library's defaults, as Nereid's
    onnxruntime backend makes them."""
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])
