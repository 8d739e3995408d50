// Package v2wire is the KServe v2 HTTP wire format of inference requests
// and responses: the JSON body, Triton's binary tensor data after it, the
// raw binary form, and Nereid's generate extension. The HTTP and SageMaker
// front ends both decode and encode with it, so that the two speak the
// same protocol with the same error texts; it knows no transport (where
// the JSON header ends is the caller's to say).
//
// Decoding copies no tensor bytes it does not have to: binary inputs are
// slices of the received body, which the core must not keep after the
// request returns.
package v2wire
