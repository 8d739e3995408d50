// Package trace samples inference requests and records their timeline as
// Triton's trace extension does: "triton" mode writes Triton's JSON
// timestamp records (level TIMESTAMPS) and tensor records (level TENSORS)
// to the trace file, "opentelemetry" mode exports spans over OTLP/HTTP.
// Settings are global with per-model overrides, changed at run time
// through the trace settings endpoints.
package trace

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/nereid-project/nereid/inference"
)

// Level is a set of trace levels; zero is OFF.
type Level uint8

// The trace levels.
const (
	LevelTimestamps Level = 1 << iota
	LevelTensors
)

// Strings lists the level as the settings endpoints report it.
func (l Level) Strings() []string {
	if l == 0 {
		return []string{"OFF"}
	}
	var out []string
	if l&LevelTimestamps != 0 {
		out = append(out, "TIMESTAMPS")
	}
	if l&LevelTensors != 0 {
		out = append(out, "TENSORS")
	}
	return out
}

// Mode is where traces go.
type Mode string

// The trace modes.
const (
	ModeTriton        Mode = "triton"
	ModeOpenTelemetry Mode = "opentelemetry"
)

// Settings are the effective trace settings of a model (or the global ones).
type Settings struct {
	Level        Level
	Rate         uint32 // trace every Rate-th request
	Count        int32  // traces left to take; -1 is unlimited
	LogFrequency uint32 // traces per indexed file; 0 writes at shutdown
	File         string
	Mode         Mode
	// Options are the mode's other --trace-config settings (for
	// opentelemetry: url, resource, bsp_*), reported by the endpoints.
	Options map[string]string
}

// DefaultSettings are Triton's: tracing off, rate 1000, unlimited count.
func DefaultSettings() Settings {
	return Settings{Rate: 1000, Count: -1, Mode: ModeTriton}
}

// invalidReason says why settings cannot trace, or "".
func (s Settings) invalidReason() string {
	switch {
	case s.Level == 0:
		return "tracing is disabled"
	case s.Rate == 0:
		return "sample rate must be non-zero"
	case s.Mode == ModeTriton && s.File == "":
		return "trace file name is not given"
	}
	return ""
}

// Pair is one setting as the endpoints report it; Array marks trace_level,
// which HTTP writes as a JSON array.
type Pair struct {
	Key    string
	Values []string
	Array  bool
}

// Pairs lists the settings in Triton's response order: trace_level,
// trace_rate, trace_count, then log_frequency and trace_file in triton
// mode, trace_mode, and the mode's other options.
func (s Settings) Pairs() []Pair {
	out := []Pair{
		{Key: "trace_level", Values: s.Level.Strings(), Array: true},
		{Key: "trace_rate", Values: []string{strconv.FormatUint(uint64(s.Rate), 10)}},
		{Key: "trace_count", Values: []string{strconv.FormatInt(int64(s.Count), 10)}},
	}
	if s.Mode == ModeTriton {
		out = append(out,
			Pair{Key: "log_frequency", Values: []string{strconv.FormatUint(uint64(s.LogFrequency), 10)}},
			Pair{Key: "trace_file", Values: []string{s.File}})
	}
	out = append(out, Pair{Key: "trace_mode", Values: []string{string(s.Mode)}})
	keys := make([]string, 0, len(s.Options))
	for k := range s.Options {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, Pair{Key: k, Values: []string{s.Options[k]}})
	}
	return out
}

// Update is a request to change settings. A field set to clear returns to
// the fallback (the global setting for a model, the start-up setting for
// the global scope).
type Update struct {
	Level, Rate, Count, LogFrequency field
}

type field struct {
	set, clear bool
	level      Level
	value      int64
}

// The keys of the trace settings endpoints.
const (
	KeyFile         = "trace_file"
	KeyLevel        = "trace_level"
	KeyRate         = "trace_rate"
	KeyCount        = "trace_count"
	KeyLogFrequency = "log_frequency"
	KeyMode         = "trace_mode"
)

// ParseUpdate reads the settings of a POST or TraceSetting request: each
// key maps to its values, or to nil for JSON null (clear). Errors carry
// Triton's texts and status classes. trace_mode, which cannot change at run
// time, is ignored as Triton ignores it.
func ParseUpdate(settings map[string][]string) (Update, error) {
	var u Update
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch k {
		case KeyFile, KeyLevel, KeyRate, KeyCount, KeyLogFrequency, KeyMode:
		default:
			return u, inference.InvalidArg("unknown trace setting '%s'; the settings are %s, %s, %s, %s, %s and %s",
				k, KeyFile, KeyLevel, KeyRate, KeyCount, KeyLogFrequency, KeyMode)
		}
	}
	if _, ok := settings[KeyFile]; ok {
		return u, inference.Unsupported("trace file location can not be updated through network protocol")
	}
	if v, ok := settings[KeyLevel]; ok {
		if len(v) == 0 {
			u.Level.clear = true
		} else {
			for _, s := range v {
				switch s {
				case "OFF":
					if len(v) != 1 {
						return u, inference.InvalidArg("Expect only one trace level 'OFF' is specified")
					}
					u.Level.set = true
				case "TIMESTAMPS":
					u.Level.level |= LevelTimestamps
					u.Level.set = true
				case "TENSORS":
					u.Level.level |= LevelTensors
					u.Level.set = true
				default:
					return u, inference.InvalidArg("invalid value for trace level option: %s; expected OFF, TIMESTAMPS or TENSORS", s)
				}
			}
		}
	}
	parse := func(key string, f *field, lo, hi int64) error {
		v, ok := settings[key]
		if !ok {
			return nil
		}
		switch len(v) {
		case 0:
			f.clear = true
			return nil
		case 1:
		default:
			return inference.InvalidArg("expect only 1 value for '%s'", key)
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v[0]), 10, 64)
		if err != nil {
			return inference.InvalidArg("Unable to parse '%s', got: %s", key, v[0])
		}
		if key == KeyCount && n < -1 {
			return inference.InvalidArg("Unable to parse '%s'. Expecting value >= -1, got: %s", key, v[0])
		}
		if n < lo || n > hi {
			return inference.InvalidArg("Unable to parse '%s', value is out of range [ %d, %d ], got: %s", key, lo, hi, v[0])
		}
		f.set, f.value = true, n
		return nil
	}
	const maxU32, maxI32 = 1<<32 - 1, 1<<31 - 1
	if err := parse(KeyRate, &u.Rate, 0, maxU32); err != nil {
		return u, err
	}
	if err := parse(KeyCount, &u.Count, -1, maxI32); err != nil {
		return u, err
	}
	if err := parse(KeyLogFrequency, &u.LogFrequency, 0, maxU32); err != nil {
		return u, err
	}
	return u, nil
}

// ParseConfig reads --trace-config values: "<setting>=<value>" for the
// global settings (level, rate, count, mode) and "<mode>,<setting>=<value>"
// for a mode's settings (triton: file, log-frequency; opentelemetry: url
// and the exporter's options). Later values override earlier ones; levels
// accumulate, and an explicit OFF wins, as in Triton.
func ParseConfig(values []string) (Settings, error) {
	s := DefaultSettings()
	modeOpts := map[Mode]map[string]string{}
	explicitOff := false
	for _, v := range values {
		mode, kv, hasMode := strings.Cut(v, ",")
		if !hasMode || strings.Contains(mode, "=") {
			mode, kv, hasMode = "", v, false
		}
		if hasMode && mode == "" {
			return s, fmt.Errorf("No trace mode specified. --trace-config option format is <trace mode>,<setting>=<value> or <setting>=<value>. Got %s", v)
		}
		key, value, ok := strings.Cut(kv, "=")
		if !ok || key == "" || value == "" {
			return s, fmt.Errorf("--trace-config option format is '<trace mode>,<setting>=<value>'. Got %s", v)
		}
		if hasMode {
			m, err := parseMode(mode)
			if err != nil {
				return s, err
			}
			if modeOpts[m] == nil {
				modeOpts[m] = map[string]string{}
			}
			modeOpts[m][key] = value
			continue
		}
		bad := func(err error) error { return fmt.Errorf("Bad option: \"--trace-config %s\".\n%w", key, err) }
		switch key {
		case "level":
			l, err := parseLevelOption(value)
			if err != nil {
				return s, bad(err)
			}
			if l == 0 {
				explicitOff = true
			}
			s.Level |= l
		case "rate":
			n, err := strconv.ParseUint(value, 10, 32)
			if err != nil {
				return s, bad(fmt.Errorf("invalid value for rate: %s", value))
			}
			s.Rate = uint32(n)
		case "count":
			n, err := strconv.ParseInt(value, 10, 32)
			if err != nil || n < -1 {
				return s, bad(fmt.Errorf("invalid value for count: %s", value))
			}
			s.Count = int32(n)
		case "mode":
			m, err := parseMode(value)
			if err != nil {
				return s, bad(err)
			}
			s.Mode = m
		default:
			return s, bad(fmt.Errorf("unknown setting %q", key))
		}
	}
	if explicitOff {
		s.Level = 0
	}
	switch s.Mode {
	case ModeTriton:
		for k, v := range modeOpts[ModeTriton] {
			switch k {
			case "file":
				s.File = v
			case "log-frequency":
				n, err := strconv.ParseUint(v, 10, 32)
				if err != nil {
					return s, fmt.Errorf("Bad option: \"--trace-config triton,%s\".\ninvalid value: %s", k, v)
				}
				s.LogFrequency = uint32(n)
			default:
				return s, fmt.Errorf("Bad option: \"--trace-config triton,%s\".\nunknown setting", k)
			}
		}
	case ModeOpenTelemetry:
		s.Options = map[string]string{
			"bsp_max_queue_size": "2048", "bsp_schedule_delay": "5000", "bsp_max_export_batch_size": "512",
		}
		for k, v := range modeOpts[ModeOpenTelemetry] {
			if strings.HasPrefix(k, "bsp_") {
				if _, err := strconv.ParseUint(v, 10, 32); err != nil {
					return s, fmt.Errorf("Bad option: \"--trace-config opentelemetry,%s\".\ninvalid value: %s", k, v)
				}
			}
			s.Options[k] = v
		}
	}
	return s, nil
}

func parseMode(s string) (Mode, error) {
	switch strings.ToLower(s) {
	case "triton":
		return ModeTriton, nil
	case "opentelemetry":
		return ModeOpenTelemetry, nil
	}
	return "", fmt.Errorf("invalid value for trace mode option: %s. Available options are \"triton\" and \"opentelemetry\"", s)
}

func parseLevelOption(s string) (Level, error) {
	switch strings.ToLower(s) {
	case "false", "off":
		return 0, nil
	case "true", "on", "min", "max", "timestamps":
		return LevelTimestamps, nil
	case "tensors":
		return LevelTensors, nil
	}
	return 0, fmt.Errorf("invalid value for trace level option: %s", s)
}
