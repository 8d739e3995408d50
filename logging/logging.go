// Package logging builds Nereid's zerolog logger with Triton's log controls:
// info, warning and error messages switched on and off separately, a
// verbose level, the default or ISO8601 line format and an optional log
// file. The controls change at run time (the logging extension's
// /v2/logging and LogSettings) without a global logger: the Control that
// New returns filters every logger derived from the one it returns.
package logging

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// Format is Triton's --log-format.
type Format int32

// The log formats Triton offers.
const (
	FormatDefault Format = iota // I0102 15:04:05.000000 <pid>] message
	FormatISO8601               // 2006-01-02T15:04:05Z I <pid>] message
)

func (f Format) String() string {
	if f == FormatISO8601 {
		return "ISO8601"
	}
	return "default"
}

// ParseFormat reads a --log-format or log_format value.
func ParseFormat(s string) (Format, bool) {
	switch s {
	case "default":
		return FormatDefault, true
	case "ISO8601":
		return FormatISO8601, true
	}
	return FormatDefault, false
}

// Options are the logging flags.
type Options struct {
	Info, Warning, Error bool // --log-info, --log-warning, --log-error
	Verbose              int  // --log-verbose; 0 is off
	Format               Format
	// File is --log-file: when set, log lines are appended to it instead
	// of being written to Out.
	File string
	// Out receives the log lines when File is empty; default os.Stderr.
	Out io.Writer
	// Now is the clock for timestamps; a test seam.
	Now func() time.Time
}

// Settings are the logging extension's view of the controls.
type Settings struct {
	File                 string
	Info, Warning, Error bool
	VerboseLevel         uint32
	Format               Format
}

// Update changes the controls a request names; nil fields stay.
type Update struct {
	Info, Warning, Error *bool
	VerboseLevel         *uint32
	Format               *Format
}

// Control filters and formats log lines according to settings that may
// change while the server runs. It is a zerolog.Sampler (the filter, so
// that a disabled message is never built) and the logger's writer.
type Control struct {
	info, warning, errors atomic.Bool
	verbose               atomic.Uint32
	format                atomic.Int32

	file string
	now  func() time.Time
	pid  string

	mu     sync.Mutex // guards out and buf: one line at a time
	out    io.Writer
	closer io.Closer
	buf    bytes.Buffer
}

// New returns the Control and the root logger of the process. The caller
// closes the Control at exit, which closes the log file.
func New(opts Options) (*Control, zerolog.Logger, error) {
	if opts.Verbose < 0 {
		return nil, zerolog.Nop(), fmt.Errorf("--log-verbose: %d must not be negative", opts.Verbose)
	}
	c := &Control{file: opts.File, now: opts.Now, out: opts.Out, pid: strconv.Itoa(os.Getpid())}
	if c.now == nil {
		c.now = time.Now
	}
	if c.out == nil {
		c.out = os.Stderr
	}
	if opts.File != "" {
		f, err := os.OpenFile(opts.File, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return nil, zerolog.Nop(), fmt.Errorf("--log-file: %w", err)
		}
		c.out, c.closer = f, f
	}
	c.info.Store(opts.Info)
	c.warning.Store(opts.Warning)
	c.errors.Store(opts.Error)
	c.verbose.Store(uint32(opts.Verbose))
	c.format.Store(int32(opts.Format))
	return c, zerolog.New(c).Level(zerolog.TraceLevel).Sample(c), nil
}

// Close closes the log file, if any.
func (c *Control) Close() error {
	if c.closer == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closer.Close()
}

// Settings returns the current controls.
func (c *Control) Settings() Settings {
	return Settings{
		File:         c.file,
		Info:         c.info.Load(),
		Warning:      c.warning.Load(),
		Error:        c.errors.Load(),
		VerboseLevel: c.verbose.Load(),
		Format:       Format(c.format.Load()),
	}
}

// Apply changes the controls; they take effect for the next message.
func (c *Control) Apply(u Update) Settings {
	if u.Info != nil {
		c.info.Store(*u.Info)
	}
	if u.Warning != nil {
		c.warning.Store(*u.Warning)
	}
	if u.Error != nil {
		c.errors.Store(*u.Error)
	}
	if u.VerboseLevel != nil {
		c.verbose.Store(*u.VerboseLevel)
	}
	if u.Format != nil {
		c.format.Store(int32(*u.Format))
	}
	return c.Settings()
}

// Enabled reports whether a message of level l is logged now. Debug is
// verbose level 1, Trace verbose level 2 and above.
func (c *Control) Enabled(l zerolog.Level) bool {
	switch l {
	case zerolog.TraceLevel:
		return c.verbose.Load() >= 2
	case zerolog.DebugLevel:
		return c.verbose.Load() >= 1
	case zerolog.InfoLevel, zerolog.NoLevel:
		return c.info.Load()
	case zerolog.WarnLevel:
		return c.warning.Load()
	case zerolog.ErrorLevel, zerolog.FatalLevel, zerolog.PanicLevel:
		return c.errors.Load()
	default:
		return false
	}
}

// Sample implements zerolog.Sampler: it is the level filter.
func (c *Control) Sample(l zerolog.Level) bool { return c.Enabled(l) }

// levelLetters are Triton's one-letter severities.
var levelLetters = map[string]byte{
	"trace": 'V', "debug": 'V', "info": 'I', "warn": 'W', "error": 'E', "fatal": 'E', "panic": 'E',
}

// Write formats one zerolog event (a JSON object) as a Triton log line.
func (c *Control) Write(p []byte) (int, error) {
	var ev map[string]any
	d := json.NewDecoder(bytes.NewReader(p))
	d.UseNumber()
	if err := d.Decode(&ev); err != nil {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.out.Write(p)
	}
	letter := byte('I')
	if lvl, ok := ev[zerolog.LevelFieldName].(string); ok {
		if l, ok := levelLetters[lvl]; ok {
			letter = l
		}
	}
	msg, _ := ev[zerolog.MessageFieldName].(string)
	delete(ev, zerolog.LevelFieldName)
	delete(ev, zerolog.MessageFieldName)
	delete(ev, zerolog.TimestampFieldName)
	keys := make([]string, 0, len(ev))
	for k := range ev {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	now := c.now()

	c.mu.Lock()
	defer c.mu.Unlock()
	b := &c.buf
	b.Reset()
	if Format(c.format.Load()) == FormatISO8601 {
		b.WriteString(now.UTC().Format("2006-01-02T15:04:05Z"))
		b.WriteByte(' ')
		b.WriteByte(letter)
	} else {
		b.WriteByte(letter)
		b.WriteString(now.Format("0102 15:04:05.000000"))
	}
	b.WriteByte(' ')
	b.WriteString(c.pid)
	b.WriteString("] ")
	b.WriteString(msg)
	for _, k := range keys {
		b.WriteByte(' ')
		b.WriteString(k)
		b.WriteByte('=')
		switch v := ev[k].(type) {
		case string:
			if needsQuote(v) {
				b.WriteString(strconv.Quote(v))
			} else {
				b.WriteString(v)
			}
		default:
			j, _ := json.Marshal(v)
			b.Write(j)
		}
	}
	b.WriteByte('\n')
	if _, err := c.out.Write(b.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}

func needsQuote(s string) bool {
	if s == "" {
		return true
	}
	for _, r := range s {
		if r <= ' ' || r == '"' || r == '=' || r > '~' {
			return true
		}
	}
	return false
}
