package logging

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

var fixed = time.Date(2026, 3, 4, 5, 6, 7, 890123000, time.UTC)

func newTest(t *testing.T, opts Options) (*Control, zerolog.Logger, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	opts.Out = &buf
	opts.Now = func() time.Time { return fixed }
	c, log, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c, log, &buf
}

func lines(b *bytes.Buffer) []string {
	s := strings.TrimSpace(b.String())
	b.Reset()
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func TestLevelSwitchingLive(t *testing.T) {
	c, log, buf := newTest(t, Options{Info: true, Warning: true, Error: true})
	derived := log.With().Str("model", "m").Logger() // switches must reach derived loggers too
	derived.Info().Msg("i1")
	derived.Debug().Msg("d1")
	derived.Warn().Msg("w1")
	if got := lines(buf); len(got) != 2 || !strings.Contains(got[0], "i1") || !strings.Contains(got[1], "w1") {
		t.Fatalf("before: %q", got)
	}
	off, one := false, uint32(1)
	s := c.Apply(Update{Info: &off, VerboseLevel: &one})
	if s.Info || s.VerboseLevel != 1 || !s.Warning || !s.Error {
		t.Fatalf("settings %+v", s)
	}
	derived.Info().Msg("i2")
	derived.Debug().Msg("d2")
	derived.Trace().Msg("t2")
	derived.Error().Msg("e2")
	got := lines(buf)
	if len(got) != 2 || !strings.HasPrefix(got[0], "V") || !strings.Contains(got[0], "d2") || !strings.HasPrefix(got[1], "E") {
		t.Fatalf("after: %q", got)
	}
	c.Apply(Update{Error: &off})
	derived.Error().Msg("e3")
	if got := lines(buf); got != nil {
		t.Fatalf("errors off: %q", got)
	}
}

func TestFormats(t *testing.T) {
	c, log, buf := newTest(t, Options{Info: true, Warning: true})
	log.Info().Str("b", "two words").Int("a", 1).Err(errors.New("boom")).Msg("hello")
	line := lines(buf)[0]
	pid := c.pid
	want := "I0304 05:06:07.890123 " + pid + `] hello a=1 b="two words" error=boom`
	if line != want {
		t.Errorf("default:\n got %q\nwant %q", line, want)
	}
	iso := FormatISO8601
	if s := c.Apply(Update{Format: &iso}); s.Format.String() != "ISO8601" {
		t.Fatalf("format %v", s.Format)
	}
	log.Warn().Msg("careful")
	if got := lines(buf)[0]; got != "2026-03-04T05:06:07Z W "+pid+"] careful" {
		t.Errorf("ISO8601: %q", got)
	}
	if f, ok := ParseFormat("ISO8601"); !ok || f != FormatISO8601 {
		t.Error("ParseFormat ISO8601")
	}
	if _, ok := ParseFormat("iso8601"); ok {
		t.Error("formats are case-sensitive, as Triton's")
	}
}

func TestLogFileAndConcurrency(t *testing.T) {
	path := filepath.Join(t.TempDir(), "server.log")
	c, log, err := New(Options{Info: true, File: path})
	if err != nil {
		t.Fatal(err)
	}
	if c.Settings().File != path {
		t.Errorf("file %q", c.Settings().File)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 50 {
				log.Info().Int("worker", i).Msg("line")
			}
		})
	}
	on := true
	wg.Go(func() {
		for range 50 {
			c.Apply(Update{Info: &on})
			_ = c.Settings()
		}
	})
	wg.Wait()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(got) != 400 {
		t.Fatalf("%d lines", len(got))
	}
	for _, l := range got {
		if !strings.HasPrefix(l, "I") || !strings.Contains(l, "] line worker=") {
			t.Fatalf("torn line %q", l)
		}
	}
	if _, _, err := New(Options{Verbose: -1}); err == nil {
		t.Error("negative verbose level must be refused")
	}
}
