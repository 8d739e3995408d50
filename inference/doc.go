// Package inference holds the types every part of Nereid speaks: data types,
// tensors, requests, responses and the typed errors that front ends map to
// HTTP and gRPC status codes. It imports nothing else of Nereid's.
package inference
