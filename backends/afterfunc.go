package backends

import "context"

// AfterFunc is context.AfterFunc for a backend's cancellation callback (f
// runs on its own goroutine once ctx is done; stop unregisters it). A
// context that implements an AfterFunc method itself (the HTTP front end's
// per-call context does) is asked directly, which spares the intermediate
// context that context.AfterFunc builds on every call.
func AfterFunc(ctx context.Context, f func()) (stop func() bool) {
	if a, ok := ctx.(interface{ AfterFunc(func()) func() bool }); ok {
		return a.AfterFunc(f)
	}
	return context.AfterFunc(ctx, f)
}
