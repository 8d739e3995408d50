package modelmesh

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nereid-project/nereid/inference"
)

// toStatus maps an error of the core or of the service to the gRPC status
// ModelMesh reads: the one place where the service's errors become codes.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	var ie *inference.Error
	if !errors.As(err, &ie) {
		if st, ok := status.FromError(err); ok {
			return st.Err()
		}
		switch {
		case errors.Is(err, context.Canceled):
			return status.Error(codes.Canceled, err.Error())
		case errors.Is(err, context.DeadlineExceeded):
			return status.Error(codes.DeadlineExceeded, err.Error())
		}
	}
	return status.Error(grpcCode(inference.CodeOf(err)), err.Error())
}

// grpcCode is Triton's table with two changes for ModelMesh's contract,
// where INVALID_ARGUMENT and FAILED_PRECONDITION from loadModel say that
// no load was attempted and so no memory is held: a load the model cache
// cannot fit under its budget (RESOURCE_EXHAUSTED in the core, UNAVAILABLE
// on Triton's ports) is refused before anything loads, and so is a request
// for what Nereid does not implement; both are FAILED_PRECONDITION.
func grpcCode(c inference.Code) codes.Code {
	switch c {
	case inference.CodeResourceExhausted, inference.CodeUnsupported:
		return codes.FailedPrecondition
	case inference.CodeInternal:
		return codes.Internal
	case inference.CodeNotFound:
		return codes.NotFound
	case inference.CodeInvalidArg:
		return codes.InvalidArgument
	case inference.CodeUnavailable, inference.CodePermissionDenied:
		return codes.Unavailable
	case inference.CodeAlreadyExists:
		return codes.AlreadyExists
	case inference.CodeCancelled:
		return codes.Canceled
	default:
		return codes.Unknown
	}
}
