"""Echoes INPUT0 and keeps two custom metrics about the requests it saw."""

import triton_python_backend_utils as pb_utils

BUCKETS = [1.0, 4.0, 16.0, 64.0]


class TritonPythonModel:
    def initialize(self, args):
        labels = {"model": args["model_name"], "version": args["model_version"]}
        self.requests_family = pb_utils.MetricFamily(
            name="nereid_example_requests_total",
            description="Requests executed by the metric_python example",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.elements_family = pb_utils.MetricFamily(
            name="nereid_example_request_elements",
            description="Elements of INPUT0 per request",
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        self.requests = self.requests_family.Metric(labels=labels)
        self.elements = self.elements_family.Metric(labels=labels, buckets=BUCKETS)

    def execute(self, requests):
        responses = []
        for request in requests:
            data = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            self.requests.increment(1)
            self.elements.observe(data.size)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", data)]))
        return responses
