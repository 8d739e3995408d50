package inference

import (
	"errors"
	"fmt"
	"strings"
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
	// CodePermissionDenied is a request to a restricted protocol
	// (--http-restricted-api, --grpc-restricted-protocol) without its
	// header: 403 over HTTP, UNAVAILABLE over gRPC, as Triton answers.
	CodePermissionDenied
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
	case CodePermissionDenied:
		return "Permission denied"
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
// cause reachable through errors.Unwrap. Each argument is echoed at most
// MaxEchoBytes long and the text at most MaxMessageBytes (see Truncate):
// error texts repeat what clients sent, which can be of any size.
func Errorf(code Code, format string, args ...any) error {
	err := fmt.Errorf(format, boundArgs(args)...)
	return &Error{Code: code, Msg: Truncate(err.Error(), MaxMessageBytes), Err: errors.Unwrap(err)}
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

// PermissionDenied is Errorf with CodePermissionDenied.
func PermissionDenied(format string, args ...any) error {
	return Errorf(CodePermissionDenied, format, args...)
}

// Internal is Errorf with CodeInternal.
func Internal(format string, args ...any) error { return Errorf(CodeInternal, format, args...) }

// Unsupported is Errorf with CodeUnsupported.
func Unsupported(format string, args ...any) error { return Errorf(CodeUnsupported, format, args...) }

// DataTypeMismatch is the error for an input whose datatype is not the one
// the model's configuration gives it. Front ends that validate data before
// the core sees the request (and would otherwise report the mismatch as a
// wrong byte size) use it to name the real problem, with the core's text.
func DataTypeMismatch(input string, got DataType, model string, want DataType) error {
	return InvalidArg("inference input '%s' data-type is '%s', but model '%s' expects '%s'", input, got, model, want)
}

// Limits of a file name on the file systems model files are written to
// (Linux's NAME_MAX and PATH_MAX).
const (
	maxFileNameBytes = 255
	maxFilePathBytes = 4095
)

// CheckFileParam refuses the key of a "file:<version>/<path>" load
// parameter that no file system can hold: one with a NUL byte, a path
// component longer than 255 bytes, or a path longer than 4095 bytes. The
// file would otherwise fail to be written, which is the client's mistake,
// not the server's. Whether the path stays within the model directory is
// the repository's to check.
func CheckFileParam(model, key string) error {
	why := ""
	switch {
	case strings.IndexByte(key, 0) >= 0:
		why = "the file name contains a NUL byte"
	case len(key) > maxFilePathBytes:
		why = fmt.Sprintf("file name too long: the path is %d bytes, at most %d are allowed", len(key), maxFilePathBytes)
	default:
		for part := range strings.SplitSeq(key, "/") {
			if len(part) > maxFileNameBytes {
				why = fmt.Sprintf("file name too long: a path component is %d bytes, at most %d are allowed", len(part), maxFileNameBytes)
				break
			}
		}
	}
	if why == "" {
		return nil
	}
	return InvalidArg("failed to load '%s', Invalid file parameter '%s': %s", model, "file:"+key, why)
}

// MeansNotReady reports whether err, from a readiness query on a model,
// means only that the model version is not there to serve (unknown,
// unloaded, not at ready state: CodeNotFound or CodeUnavailable). Triton's
// readiness calls answer "not ready" for those instead of failing.
func MeansNotReady(err error) bool {
	c := CodeOf(err)
	return err != nil && (c == CodeNotFound || c == CodeUnavailable)
}

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
