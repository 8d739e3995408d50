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
	// ended is when the run ended (Unix nanoseconds; 0 while it runs):
	// a snapshot taken after it no longer ages.
	ended atomic.Int64

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
	p.ended.Store(time.Now().UnixNano())
	if p.w == nil {
		return
	}
	close(p.stopc)
	<-p.done
}

// Progress is a job's progress at one moment. Its counts are the run's
// (a resumed job counts from 0 again); BytesRead includes the input of
// the shards skipped as finished before, so Fraction and ETA are the
// whole data set's.
type Progress struct {
	Records, Errors       int64
	BytesRead, BytesTotal int64
	Elapsed               time.Duration
	RecordsPerSecond      float64
	// Fraction is the share of the input read, 0 to 1.
	Fraction float64
	// ETA is the time left at this run's rate; negative while it is not
	// known (nothing read yet but finished shards).
	ETA time.Duration
}

// snapshot is the progress at now (or at the end of the run, once it
// ended).
func (p *progress) snapshot(now time.Time) Progress {
	if e := p.ended.Load(); e != 0 {
		now = time.Unix(0, e)
	}
	s := Progress{Records: p.records.Load(), Errors: p.errors.Load(), BytesRead: p.bytes.Load(), BytesTotal: p.total,
		Elapsed: now.Sub(p.start), Fraction: 1, ETA: -1}
	skipped := p.skipped.Load()
	if secs := s.Elapsed.Seconds(); secs > 0 {
		s.RecordsPerSecond = float64(s.Records) / secs
	}
	if p.total > 0 {
		s.Fraction = min(float64(s.BytesRead)/float64(p.total), 1)
	}
	if run := s.BytesRead - skipped; run > 0 {
		s.ETA = time.Duration(float64(max(p.total-s.BytesRead, 0)) / float64(run) * float64(s.Elapsed))
	}
	return s
}

// Live publishes a job's progress while it runs (Options.Live): Snapshot
// may be called from any goroutine, during the run and after it.
type Live struct{ p atomic.Pointer[progress] }

// Snapshot returns the progress now; false before the job began to read
// its input (or when it stopped before).
func (l *Live) Snapshot() (Progress, bool) {
	p := l.p.Load()
	if p == nil {
		return Progress{}, false
	}
	return p.snapshot(time.Now()), true
}

// line is one report.
func (p *progress) line(now time.Time) string {
	s := p.snapshot(now)
	eta := "?"
	if s.ETA >= 0 {
		eta = s.ETA.Round(time.Second).String()
	}
	if !p.terminal {
		return fmt.Sprintf("batch: %s: %d records, %d errors, %.0f records/s, %.0f%% of the input, ETA %s\n",
			p.label, s.Records, s.Errors, s.RecordsPerSecond, 100*s.Fraction, eta)
	}
	const width = 24
	filled := int(s.Fraction * width)
	bar := strings.Repeat("=", filled) + strings.Repeat(" ", width-filled)
	return fmt.Sprintf("\r%s [%s] %3.0f%%  %d records  %d errors  %.0f rec/s  ETA %s\x1b[K",
		p.label, bar, 100*s.Fraction, s.Records, s.Errors, s.RecordsPerSecond, eta)
}
