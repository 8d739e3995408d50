package frontend

import (
	"net/http"

	"github.com/nereid-project/nereid/inference"
)

// HTTPStatus maps an error's class to the HTTP status Triton answers with
// (its HttpCodeFromError), for every HTTP port that speaks Triton's
// protocol: the KServe v2 port, asynchronous inference and batch jobs.
// (The SageMaker port answers by SageMaker's rules, and gRPC ports by
// their own table.)
func HTTPStatus(err error) int {
	switch inference.CodeOf(err) {
	case inference.CodeInternal:
		return http.StatusInternalServerError
	case inference.CodeNotFound:
		return http.StatusNotFound
	case inference.CodeUnavailable, inference.CodeResourceExhausted:
		return http.StatusServiceUnavailable
	case inference.CodeUnsupported:
		return http.StatusNotImplemented
	case inference.CodePermissionDenied:
		return http.StatusForbidden
	default: // invalid argument, already exists, cancelled, unknown
		return http.StatusBadRequest
	}
}
