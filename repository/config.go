package repository

import (
	"fmt"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"

	"github.com/nereid-project/nereid/proto/inferencepb"
)

// A model's configuration goes through the steps Triton's core applies, in
// order (completeConfig): parse (here), fill the backend, platform and file
// name (config_backend.go), the backend's own auto-complete (the Loader),
// normalize (config_normalize.go), validate (config_validate.go); the
// version policy then picks the versions to load (config_version.go).

// File and platform names with the meaning Triton gives them.
const (
	configFileName   = "config.pbtxt"
	configsFolder    = "configs"
	ensemblePlatform = "ensemble"

	// defaultSequenceIdleMicroseconds is Triton's default for
	// sequence_batching.max_sequence_idle_microseconds.
	defaultSequenceIdleMicroseconds = 1_000_000
	// wildcardDim marks a variable-size dimension.
	wildcardDim = -1
)

// tritonErrorf builds an error whose text is Triton's own, capitals and
// full stops included: clients and scripts match these texts.
func tritonErrorf(format string, args ...any) error {
	return fmt.Errorf(format, args...)
}

// parseConfigText parses config.pbtxt bytes. src names the file in errors.
func parseConfigText(src string, data []byte) (*inferencepb.ModelConfig, error) {
	cfg := &inferencepb.ModelConfig{}
	if err := prototext.Unmarshal(data, cfg); err != nil {
		return nil, fmt.Errorf("%s: failed to parse model configuration: %w", src, err)
	}
	return cfg, nil
}

// parseConfigJSON parses a configuration given as JSON in a load request.
// protojson accepts 64-bit integers both as JSON numbers and as strings.
func parseConfigJSON(data string) (*inferencepb.ModelConfig, error) {
	cfg := &inferencepb.ModelConfig{}
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal([]byte(data), cfg); err != nil {
		return nil, err
	}
	return cfg, nil
}

// configPath returns the configuration file a model directory uses: with a
// --model-config-name, configs/<name>.pbtxt when it exists, else
// config.pbtxt.
func configPath(modelDir, customName string) string {
	if customName != "" {
		p := filepath.Join(modelDir, configsFolder, customName+".pbtxt")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return filepath.Join(modelDir, configFileName)
}

// completeConfig turns a parsed configuration into the validated,
// defaults-filled one a loader receives. complete, when non-nil, is the
// loader's auto-complete; it runs on a copy, after the generic checks and
// before the checks of completeness. gpus returns the machine's GPU
// ordinals; it is called only for a KIND_GPU group.
// A configuration error is returned as configError, an error from
// complete as itself.
func completeConfig(name, modelDir string, cfg *inferencepb.ModelConfig, gpus func() []int32, complete func(*inferencepb.ModelConfig) error) (*inferencepb.ModelConfig, error) {
	if err := autoCompleteBackendFields(name, modelDir, cfg); err != nil {
		return nil, configError{err}
	}
	if cfg.Name != name {
		return nil, configError{fmt.Errorf("unexpected directory name '%s' for model '%s', directory name must equal model name", name, cfg.Name)}
	}
	normalizeConfig(cfg)
	if err := validateModelConfig(cfg); err != nil {
		return nil, configError{err}
	}
	if complete != nil {
		c := proto.Clone(cfg).(*inferencepb.ModelConfig)
		if err := complete(c); err != nil {
			return nil, err
		}
		cfg = c
		if cfg.Name != name {
			return nil, configError{fmt.Errorf("unexpected directory name '%s' for model '%s', directory name must equal model name", name, cfg.Name)}
		}
		normalizeConfig(cfg)
		if err := validateModelConfig(cfg); err != nil {
			return nil, configError{err}
		}
	}
	normalizeInstanceGroups(cfg, gpus)
	if err := validateIOConfig(cfg); err != nil {
		return nil, configError{err}
	}
	if err := validateInstanceGroups(cfg, gpus); err != nil {
		return nil, configError{err}
	}
	return cfg, nil
}

// configError marks a problem with the configuration itself, as opposed to
// one the loader reported.
type configError struct{ err error }

func (e configError) Error() string { return e.err.Error() }

func (e configError) Unwrap() error { return e.err }

// parseConfigForFuzz is the whole configuration path without a file
// system or loader: parse, fill, validate. It must never panic.
func parseConfigForFuzz(data []byte) (*inferencepb.ModelConfig, error) {
	cfg, err := parseConfigText("config.pbtxt", data)
	if err != nil {
		return nil, err
	}
	name := cfg.GetName()
	if name == "" {
		name = "fuzz.model"
	}
	cfg, err = completeConfig(name, "", cfg, func() []int32 { return []int32{0, 1} }, nil)
	if err != nil {
		return nil, err
	}
	versionsToLoad(cfg.VersionPolicy, []int64{1, 2, 3})
	return cfg, nil
}
