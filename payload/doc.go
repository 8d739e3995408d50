// Package payload bounds the memory that request payloads take.
//
// A request's tensors are held in server memory from the moment a front end
// has read them until the response that may alias them is written. Three
// things keep that memory proportional to the payloads in flight instead of a
// multiple of them, and return it once they are gone:
//
//   - Budget: a server-wide cap on the bytes of request payload held at once
//     (--payload-budget-bytes). A front end acquires a request's size before
//     it holds a copy of its own and releases it when the last reference is
//     gone; a request that does not fit is refused with 503 / UNAVAILABLE,
//     never queued behind memory the server does not have.
//   - Alloc and Free: buffers of LargeSize and more are mapped from the
//     kernel and unmapped when freed, so they leave the process at once,
//     outside the Go heap (which the collector would otherwise let grow to
//     twice its live size first).
//   - Releaser: after large payloads have gone, the garbage they left on the
//     Go heap (a front end's receive buffers, a backend's output copies) is
//     collected and handed back to the OS, once things are quiet, instead of
//     whenever the runtime would next collect.
package payload
