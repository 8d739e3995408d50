package batch

import (
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"
)

// progress reports a running job: on a terminal one line redrawn in
// place, otherwise a plain line every interval. Its counters are this
// run's; bytes counts the input read so far, including the records of
// shards skipped as finished, against total for the share done and the
// ETA.
type progress struct {
	w        io.Writer // nil: no reports
	terminal bool
	interval time.Duration
	total    int64
	label    string
	start    time.Time

	records, errors atomic.Int64
	bytes, skipped  atomic.Int64

	stopc chan struct{}
	done  chan struct{}
}

// run reports until stop is called; the caller runs it on its own
// goroutine.
func (p *progress) run() {
	defer close(p.done)
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			_, _ = io.WriteString(p.w, p.line(time.Now())) // a report that cannot be written is not the job's failure
		case <-p.stopc:
			if p.terminal {
				_, _ = io.WriteString(p.w, p.line(time.Now())+"\n")
			}
			return
		}
	}
}

func (p *progress) stop() {
	if p.w == nil {
		return
	}
	close(p.stopc)
	<-p.done
}

// line is one report.
func (p *progress) line(now time.Time) string {
	elapsed := now.Sub(p.start)
	records, errs := p.records.Load(), p.errors.Load()
	read, skipped := p.bytes.Load(), p.skipped.Load()
	rate := 0.0
	if s := elapsed.Seconds(); s > 0 {
		rate = float64(records) / s
	}
	share := 1.0
	if p.total > 0 {
		share = min(float64(read)/float64(p.total), 1)
	}
	eta := "?"
	if run := read - skipped; run > 0 {
		left := time.Duration(float64(max(p.total-read, 0)) / float64(run) * float64(elapsed))
		eta = left.Round(time.Second).String()
	}
	if !p.terminal {
		return fmt.Sprintf("batch: %s: %d records, %d errors, %.0f records/s, %.0f%% of the input, ETA %s\n",
			p.label, records, errs, rate, 100*share, eta)
	}
	const width = 24
	filled := int(share * width)
	bar := strings.Repeat("=", filled) + strings.Repeat(" ", width-filled)
	return fmt.Sprintf("\r%s [%s] %3.0f%%  %d records  %d errors  %.0f rec/s  ETA %s\x1b[K",
		p.label, bar, 100*share, records, errs, rate, eta)
}
