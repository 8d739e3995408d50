"""Streams each element of IN back as its own response, from a thread."""

import json
import threading
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        if not pb_utils.using_decoupled_model_transaction_policy(json.loads(args["model_config"])):
            raise pb_utils.TritonModelException("repeat_python needs model_transaction_policy { decoupled: true }")
        self.lock = threading.Lock()
        self.idle = threading.Condition(self.lock)
        self.in_flight = 0

    def execute(self, requests):
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "IN").as_numpy().flatten()
            delay = pb_utils.get_input_tensor_by_name(request, "DELAY")
            delays = delay.as_numpy().flatten() if delay is not None else np.zeros(len(values), np.uint32)
            sender = request.get_response_sender()
            if len(delays) != len(values):
                error = pb_utils.TritonError(
                    f"DELAY has {len(delays)} elements but IN has {len(values)}", pb_utils.TritonError.INVALID_ARG
                )
                sender.send(pb_utils.InferenceResponse(error=error), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                continue
            with self.lock:
                self.in_flight += 1
            # The thread keeps copies: the inputs are released when execute returns.
            thread = threading.Thread(target=self.stream, args=(sender, values.copy(), delays.copy()), daemon=True)
            thread.start()
        return None

    def stream(self, sender, values, delays):
        try:
            for i, (value, delay_ms) in enumerate(zip(values, delays)):
                if delay_ms:
                    time.sleep(int(delay_ms) / 1000)
                if sender.is_cancelled():
                    break
                out = pb_utils.Tensor("OUT", np.array([value], dtype=np.int32))
                idx = pb_utils.Tensor("IDX", np.array([i], dtype=np.uint32))
                sender.send(pb_utils.InferenceResponse(output_tensors=[out, idx]))
        finally:
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            with self.lock:
                self.in_flight -= 1
                self.idle.notify_all()

    def finalize(self):
        # Let the streams in progress finish (bounded, so unload cannot hang).
        with self.lock:
            self.idle.wait_for(lambda: self.in_flight == 0, timeout=30)
