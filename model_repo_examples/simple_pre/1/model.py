"""Parses comma-separated integers into the two INT32 inputs of `simple`."""

import numpy as np
import triton_python_backend_utils as pb_utils

WIDTH = 16
INT32 = np.iinfo(np.int32)


def parse_row(text):
    """The 16 integers of one TEXT element, or ValueError saying why not."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    fields = [f.strip() for f in text.split(",")]
    if len(fields) != WIDTH:
        raise ValueError(f"TEXT must hold {WIDTH} comma-separated integers, got {len(fields)} fields: {text!r}")
    values = []
    for f in fields:
        try:
            v = int(f)
        except ValueError:
            raise ValueError(f"TEXT field {f!r} is not an integer") from None
        if not INT32.min <= v <= INT32.max:
            raise ValueError(f"TEXT field {f} is outside the INT32 range")
        values.append(v)
    return values


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            texts = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            try:
                # One row of TEXT per batch entry: shape [batch, 1].
                rows = [parse_row(t) for t in texts.reshape(texts.shape[0], -1)[:, 0]]
            except ValueError as e:
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e), pb_utils.TritonError.INVALID_ARG))
                )
                continue
            values = np.array(rows, dtype=np.int32).reshape(len(rows), WIDTH)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("INPUT0", values),
                        pb_utils.Tensor("INPUT1", np.ascontiguousarray(values[:, ::-1])),
                    ]
                )
            )
        return responses
