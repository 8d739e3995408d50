"""Seldon MLServer serving a Triton model repository's ONNX models with ONNX
Runtime: a small custom runtime plus a launcher (run with .perf/mlserver's
python, which perf/setup makes):

    python perf/peers/mlserver_ort.py --model-repository=DIR \\
        --http-port=8000 --grpc-port=8001 --metrics-port=8002

Settings are MLServer's defaults (one parallel inference worker, metrics
on) except: request access logs off (debug=false, as every server in the
comparison runs without per-request logs), and adaptive batching for models
whose config.pbtxt has dynamic_batching (max_batch_size from the config,
max_batch_time 1 ms), MLServer's counterpart of Triton's dynamic batcher.

MLServer has no binary tensor data over HTTP (SeldonIO/MLServer#324): its
REST runs use JSON tensors. The launcher adds the Triton model
configuration call that perf_analyzer needs (see common.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from mlserver import MLModel  # noqa: E402
from mlserver.codecs import NumpyCodec  # noqa: E402
from mlserver.types import InferenceRequest, InferenceResponse  # noqa: E402

import common  # noqa: E402

MAX_BATCH_TIME_S = 0.001


class OnnxRuntimeModel(MLModel):
    """Runs model.onnx (settings.parameters.uri) with ONNX Runtime."""

    async def load(self) -> bool:
        self._session = common.session(self.settings.parameters.uri)
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {inp.name: NumpyCodec.decode_input(inp) for inp in payload.inputs}
        results = self._session.run(self._outputs, feeds)
        outputs = [NumpyCodec.encode_output(name, value) for name, value in zip(self._outputs, results)]
        for output in outputs:
            # The codec tags each output with parameters {"content_type":
            # "np"}; Triton's HTTP client (perf_analyzer's) takes an output
            # with parameters to carry binary data and fails. The tag only
            # matters to MLServer's own Python client.
            output.parameters = None
        return InferenceResponse(id=payload.id, model_name=self.name, model_version=self.version, outputs=outputs)


def write_settings(specs: dict, folder: pathlib.Path, args) -> None:
    """MLServer's settings.json and one model-settings.json per model."""
    (folder / "settings.json").write_text(json.dumps({
        "debug": False,
        "host": args.address,
        "http_port": args.http_port,
        "grpc_port": args.grpc_port,
        "metrics_port": args.metrics_port,
        "load_models_at_startup": True,
    }))
    for name, spec in specs.items():
        model = {
            "name": name,
            "implementation": "mlserver_ort.OnnxRuntimeModel",
            "parameters": {"uri": spec.path, "version": "1"},
            "inputs": spec.inputs,
            "outputs": spec.outputs,
        }
        if spec.dynamic_batching and spec.max_batch_size > 1:
            model["max_batch_size"] = spec.max_batch_size
            model["max_batch_time"] = MAX_BATCH_TIME_S
        (folder / name).mkdir()
        (folder / name / "model-settings.json").write_text(json.dumps(model))


def add_config_endpoints(specs: dict) -> None:
    """Teach MLServer's REST app and gRPC server the Triton config call."""
    from fastapi import HTTPException
    from fastapi.routing import APIRoute
    import mlserver.grpc.server as grpc_server
    import mlserver.rest.server as rest_server

    configs = {name: spec.triton_config() for name, spec in specs.items()}

    async def model_config(model_name: str, model_version: str = "") -> dict:
        if model_name not in configs:
            raise HTTPException(status_code=404, detail=f"Request for unknown model: '{model_name}' is not found")
        return configs[model_name]

    create_app = rest_server.create_app

    def create_app_with_config(*a, **kw):
        app = create_app(*a, **kw)
        routes = [APIRoute("/v2/models/{model_name}/config", model_config, methods=["GET"]),
                  APIRoute("/v2/models/{model_name}/versions/{model_version}/config", model_config, methods=["GET"])]
        app.router.routes[:0] = routes
        return app

    rest_server.create_app = create_app_with_config

    add_servicer = grpc_server.add_GRPCInferenceServiceServicer_to_server
    handler = common.grpc_config_handler(specs)

    def add_servicer_with_config(servicer, server):
        add_servicer(servicer, server)
        server.add_generic_rpc_handlers((handler,))

    grpc_server.add_GRPCInferenceServiceServicer_to_server = add_servicer_with_config


async def serve(folder: pathlib.Path) -> None:
    from mlserver.cli.serve import load_settings
    from mlserver.server import MLServer

    settings, models_settings = await load_settings(str(folder))
    await MLServer(settings).start(models_settings)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-repository", required=True)
    p.add_argument("--models", default="", help="comma-separated models to serve (default: every ONNX model)")
    p.add_argument("--address", default="0.0.0.0")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    args = p.parse_args()
    specs = common.load_specs(args.model_repository)
    if args.models:
        specs = {n: specs[n] for n in args.models.split(",")}
    # The inference workers import this module by name.
    here = str(pathlib.Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    add_config_endpoints(specs)
    with tempfile.TemporaryDirectory(prefix="mlserver-") as folder:
        write_settings(specs, pathlib.Path(folder), args)
        asyncio.run(serve(pathlib.Path(folder)))


if __name__ == "__main__":
    main()
