package trace

import (
	"time"

	"golang.org/x/sys/unix"
)

// Triton stamps traces with the steady (monotonic) clock. Go's clock
// readings carry a monotonic part but do not expose it, so the offset of
// the system's CLOCK_MONOTONIC is read once and Go's monotonic differences
// are added to it.
var (
	clockBase = time.Now()
	monoBase  = func() int64 {
		var ts unix.Timespec
		if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
			return 0
		}
		return ts.Nano()
	}()
)

// monotonicNS is t on the system's monotonic clock, in nanoseconds.
func monotonicNS(t time.Time) int64 { return monoBase + int64(t.Sub(clockBase)) }
