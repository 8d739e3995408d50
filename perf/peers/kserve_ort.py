"""The KServe Python model server (kserve.ModelServer) serving a Triton
model repository's ONNX models with ONNX Runtime (run with .perf/kserve's
python, which perf/setup makes):

    python perf/peers/kserve_ort.py --model-repository=DIR \\
        --http-port=8000 --grpc-port=8001

A kserve.Model per model, with the KServe v2 protocol over REST (binary
tensor data included) and gRPC; the server's defaults (one uvicorn
worker; KServe's Python server has no request batching of its own) except
that per-request logs are off. The launcher adds the Triton model configuration call that
perf_analyzer needs (see common.py).
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import kserve  # noqa: E402
from kserve import InferOutput, InferRequest, InferResponse  # noqa: E402

import common  # noqa: E402


class OnnxModel(kserve.Model):
    """Runs one model.onnx with ONNX Runtime."""

    def __init__(self, spec: common.ModelSpec):
        super().__init__(spec.name)
        self.spec = spec
        self.load()

    def load(self) -> bool:
        self._session = common.session(self.spec.path)
        self._outputs = [(t["name"], t["datatype"]) for t in self.spec.outputs]
        self._names = [name for name, _ in self._outputs]
        self.ready = True
        return self.ready

    def get_input_types(self) -> list:
        return self.spec.inputs

    def get_output_types(self) -> list:
        return self.spec.outputs

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        feeds = {inp.name: inp.as_numpy() for inp in payload.inputs}
        results = self._session.run(self._names, feeds)
        outputs = []
        for (name, datatype), value in zip(self._outputs, results):
            output = InferOutput(name=name, shape=list(value.shape), datatype=datatype)
            if payload.from_grpc:
                # InferResponse.to_grpc cannot take a numpy array as data
                # (it tests its truth value): give it the raw bytes.
                output.set_data_from_numpy(value, binary_data=True)
            else:
                output.data = value  # to_rest encodes it as each output asks
            outputs.append(output)
        return InferResponse(
            response_id=payload.id,
            model_name=self.name,
            model_version="1",
            infer_outputs=outputs,
            from_grpc=payload.from_grpc,
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )


def add_config_endpoints(specs: dict) -> None:
    """Teach KServe's REST app and gRPC server the Triton config call."""
    from fastapi import HTTPException
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
    import kserve.model_server

    configs = {name: spec.triton_config() for name, spec in specs.items()}

    async def model_config(model_name: str, model_version: str = "") -> dict:
        if model_name not in configs:
            raise HTTPException(status_code=404, detail=f"Request for unknown model: '{model_name}' is not found")
        return configs[model_name]

    # The server adds its own routes to this module-level app when it starts.
    app = kserve.model_server.app
    app.add_api_route("/v2/models/{model_name}/config", model_config, methods=["GET"])
    app.add_api_route("/v2/models/{model_name}/versions/{model_version}/config", model_config, methods=["GET"])

    add_servicer = grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server
    handler = common.grpc_config_handler(specs)

    def add_servicer_with_config(servicer, server):
        add_servicer(servicer, server)
        server.add_generic_rpc_handlers((handler,))

    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server = add_servicer_with_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-repository", required=True)
    p.add_argument("--models", default="", help="comma-separated models to serve (default: every ONNX model)")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    args = p.parse_args()
    specs = common.load_specs(args.model_repository)
    if args.models:
        specs = {n: specs[n] for n in args.models.split(",")}
    add_config_endpoints(specs)
    # kserve parses sys.argv for its own flags on import; it has none here.
    server = kserve.ModelServer(http_port=args.http_port, grpc_port=args.grpc_port)
    # Per-request logs off, as for every server in the comparison: uvicorn's
    # access log, KServe's timing trace and its gRPC interceptor's line per
    # call (all INFO by default).
    for name in ("uvicorn.access", "kserve.trace", "kserve"):
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start([OnnxModel(spec) for spec in specs.values()])


if __name__ == "__main__":
    main()
