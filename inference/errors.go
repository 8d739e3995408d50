package inference

import (
	"errors"
	"fmt"
)

// Code is the class of a failure. Each front end maps it to its wire status
// in exactly one place.
type Code int

// The failure classes of Triton's protocol.
const (
	CodeUnknown       Code = iota // 400 / UNKNOWN
	CodeInternal                  // 500 / INTERNAL
	CodeNotFound                  // 404 / NOT_FOUND
	CodeInvalidArg                // 400 / INVALID_ARGUMENT
	CodeUnavailable               // 503 / UNAVAILABLE
	CodeUnsupported               // 501 / UNIMPLEMENTED
	CodeAlreadyExists             // 400 / ALREADY_EXISTS
	CodeCancelled                 // 400 / CANCELLED
	// CodeResourceExhausted is a load that cannot be made to fit the
	// model-cache memory budget: 503 / UNAVAILABLE on Triton's protocols,
	// 507 on the SageMaker port.
	CodeResourceExhausted
)

func (c Code) String() string {
	switch c {
	case CodeInternal:
		return "Internal"
	case CodeNotFound:
		return "Not found"
	case CodeInvalidArg:
		return "Invalid argument"
	case CodeUnavailable:
		return "Unavailable"
	case CodeUnsupported:
		return "Unsupported"
	case CodeAlreadyExists:
		return "Already exists"
	case CodeCancelled:
		return "Cancelled"
	case CodeResourceExhausted:
		return "Resource exhausted"
	default:
		return "Unknown"
	}
}

// Error is a failure with a status class. Msg is the text clients see.
type Error struct {
	Code Code
	Msg  string
	Err  error // optional cause, kept for errors.Is / errors.As
}

func (e *Error) Error() string { return e.Msg }

func (e *Error) Unwrap() error { return e.Err }

// Errorf builds an *Error of the given class. A %w verb in format keeps the
// cause reachable through errors.Unwrap.
func Errorf(code Code, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &Error{Code: code, Msg: err.Error(), Err: errors.Unwrap(err)}
}

// InvalidArg is Errorf with CodeInvalidArg.
func InvalidArg(format string, args ...any) error { return Errorf(CodeInvalidArg, format, args...) }

// NotFound is Errorf with CodeNotFound.
func NotFound(format string, args ...any) error { return Errorf(CodeNotFound, format, args...) }

// Unavailable is Errorf with CodeUnavailable.
func Unavailable(format string, args ...any) error { return Errorf(CodeUnavailable, format, args...) }

// ResourceExhausted is Errorf with CodeResourceExhausted.
func ResourceExhausted(format string, args ...any) error {
	return Errorf(CodeResourceExhausted, format, args...)
}

// Internal is Errorf with CodeInternal.
func Internal(format string, args ...any) error { return Errorf(CodeInternal, format, args...) }

// Unsupported is Errorf with CodeUnsupported.
func Unsupported(format string, args ...any) error { return Errorf(CodeUnsupported, format, args...) }

// CodeOf returns the class of err: the outermost *Error in its chain, or
// CodeInternal for an error without one. A nil error has no class and
// returns CodeUnknown.
func CodeOf(err error) Code {
	if err == nil {
		return CodeUnknown
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return CodeInternal
}

// ErrDecoupled is behind the error a unary inference call gets for a model
// with a decoupled transaction policy, which only streaming serves. Front
// ends that answer it with a text of their own (Triton's differ between HTTP
// and gRPC) test for it with errors.Is.
var ErrDecoupled = errors.New("the model has a decoupled transaction policy")
