package frontend

import (
	"errors"
	"net/http"
	"testing"

	"github.com/nereid-project/nereid/inference"
)

// TestHTTPStatus is Triton's HttpCodeFromError table, plus Nereid's
// classes: permission denied (403, Triton's restricted-API answer) and
// resource exhausted (503).
func TestHTTPStatus(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want int
	}{
		{inference.Internal("x"), http.StatusInternalServerError},
		{inference.NotFound("x"), http.StatusNotFound},
		{inference.Unavailable("x"), http.StatusServiceUnavailable},
		{inference.ResourceExhausted("x"), http.StatusServiceUnavailable},
		{inference.Unsupported("x"), http.StatusNotImplemented},
		{inference.PermissionDenied("x"), http.StatusForbidden},
		{inference.InvalidArg("x"), http.StatusBadRequest},
		{inference.Errorf(inference.CodeAlreadyExists, "x"), http.StatusBadRequest},
		{inference.Errorf(inference.CodeCancelled, "x"), http.StatusBadRequest},
		{errors.New("no class"), http.StatusInternalServerError}, // an error without a class is the server's
	} {
		if got := HTTPStatus(tt.err); got != tt.want {
			t.Errorf("%v (%v): %d, want %d", tt.err, inference.CodeOf(tt.err), got, tt.want)
		}
	}
}
