"""Routes each request to `simple` or `simple_int8`, named by its MODEL input."""

import numpy as np
import triton_python_backend_utils as pb_utils

# The models this one may call, and the input type each takes.
TARGETS = {"simple": np.int32, "simple_int8": np.int8}
OUTPUTS = ["OUTPUT0", "OUTPUT1"]


def error_response(message, code=None):
    # pb_utils.TritonError is there only once the model runs (the server adds
    # it to the module after importing model.py): no default argument.
    if code is None:
        code = pb_utils.TritonError.INVALID_ARG
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


class TritonPythonModel:
    def execute(self, requests):
        return [self.route(request) for request in requests]

    def route(self, request):
        a = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
        b = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
        names = {
            (n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n))
            for n in pb_utils.get_input_tensor_by_name(request, "MODEL").as_numpy().flatten()
        }
        if len(names) != 1:
            return error_response(f"every row of MODEL must name the same model, got {sorted(names)}")
        target = names.pop()
        if target not in TARGETS:
            return error_response(f"MODEL must be one of {', '.join(sorted(TARGETS))}, got {target!r}")

        dtype = TARGETS[target]
        info = np.iinfo(dtype)
        if min(a.min(), b.min()) < info.min or max(a.max(), b.max()) > info.max:
            return error_response(f"{target} takes values in [{info.min}, {info.max}]")

        call = pb_utils.InferenceRequest(
            model_name=target,
            requested_output_names=OUTPUTS,
            inputs=[
                pb_utils.Tensor("INPUT0", a.astype(dtype)),
                pb_utils.Tensor("INPUT1", b.astype(dtype)),
            ],
            # A sampled request's trace gets the call as its child.
            trace=request.trace(),
        )
        try:
            answer = call.exec()
        except pb_utils.TritonModelException as e:
            return error_response(f"calling {target} failed: {e}", pb_utils.TritonError.INTERNAL)
        if answer.has_error():
            err = answer.error()
            return error_response(f"calling {target} failed: {err.message()}", err.code())

        outputs = []
        for name in OUTPUTS:
            tensor = pb_utils.get_output_tensor_by_name(answer, name)
            outputs.append(pb_utils.Tensor(name, tensor.as_numpy().astype(np.int32)))
        return pb_utils.InferenceResponse(output_tensors=outputs)
