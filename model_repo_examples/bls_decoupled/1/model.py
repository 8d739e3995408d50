"""Sums what the decoupled `repeat_python` streams back for IN."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [self.sum_stream(request) for request in requests]

    def sum_stream(self, request):
        values = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy()
        call = pb_utils.InferenceRequest(
            model_name="repeat_python",
            requested_output_names=["OUT"],
            inputs=[pb_utils.Tensor("IN", values.astype(np.int32))],
        )
        total, count = 0, 0
        try:
            for response in call.exec(decoupled=True):
                if response.has_error():
                    err = response.error()
                    return pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"repeat_python failed: {err.message()}", err.code())
                    )
                # The stream ends with a response that carries only the final
                # flag and no outputs.
                out = pb_utils.get_output_tensor_by_name(response, "OUT")
                if out is None:
                    continue
                total += int(out.as_numpy().sum())
                count += 1
        except pb_utils.TritonModelException as e:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"repeat_python failed: {e}"))
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("SUM", np.array([total], dtype=np.int32)),
                pb_utils.Tensor("COUNT", np.array([count], dtype=np.int32)),
            ]
        )
