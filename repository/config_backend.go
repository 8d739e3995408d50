package repository

import (
	"path/filepath"
	"strings"

	"github.com/nereid-project/nereid/proto/inferencepb"
)

// Backends and platforms that Triton's core fills in for itself, before a
// backend sees the configuration (AutoCompleteBackendFields).
const (
	backendTensorFlow  = "tensorflow"
	backendTensorRT    = "tensorrt"
	backendONNXRuntime = "onnxruntime"
	backendOpenVINO    = "openvino"
	backendPyTorch     = "pytorch"
	backendPython      = "python"

	platformTFSavedModel = "tensorflow_savedmodel"
	platformTFGraphDef   = "tensorflow_graphdef"
	platformTensorRT     = "tensorrt_plan"
	platformONNX         = "onnxruntime_onnx"
	platformLibTorch     = "pytorch_libtorch"

	fileTFSavedModel = "model.savedmodel"
	fileTFGraphDef   = "model.graphdef"
	fileTensorRT     = "model.plan"
	fileONNX         = "model.onnx"
	fileOpenVINO     = "model.xml"
	fileLibTorch     = "model.pt"
	filePython       = "model.py"
)

// knownBackendPlatforms lists, for the backends whose platform Triton
// checks, the platforms that may accompany them.
var knownBackendPlatforms = map[string][]string{
	backendTensorFlow:  {platformTFSavedModel, platformTFGraphDef},
	backendTensorRT:    {platformTensorRT},
	backendONNXRuntime: {platformONNX},
	backendPyTorch:     {platformLibTorch},
}

// A backendHint is how Triton's core recognises one backend before any
// backend sees the configuration (AutoCompleteBackendFields): the model is
// that backend's when the backend is not named and the platform or
// default_model_filename say so, or, with neither given, when the first
// version directory holds its model file. The backend's platform and file
// name are then filled in where missing.
type backendHint struct {
	backend  string
	platform string // "" for backends that have none
	file     string // the model file's default name
	dirOK    bool   // the model file may be a directory
	// torch is PyTorch's rule: recognised by its file, the platform is
	// set and the file name left to the backend; the file name is filled
	// in only together with a missing platform.
	torch bool
}

// backendHints are checked in Triton's order, after TensorFlow's, which
// goes by platform (autoCompleteBackendFields).
var backendHints = []backendHint{
	{backend: backendTensorRT, platform: platformTensorRT, file: fileTensorRT},
	{backend: backendONNXRuntime, platform: platformONNX, file: fileONNX, dirOK: true},
	{backend: backendOpenVINO, file: fileOpenVINO, dirOK: true},
	{backend: backendPyTorch, platform: platformLibTorch, file: fileLibTorch, torch: true},
	{backend: backendPython, file: filePython, dirOK: true},
}

// autoCompleteBackendFields fills what Triton's core fills whatever the
// auto-complete setting: the model name, and the backend, platform and
// default_model_filename implied by one another or by the files of the
// first version directory. modelDir may be empty (no files to inspect).
func autoCompleteBackendFields(name, modelDir string, cfg *inferencepb.ModelConfig) error {
	if cfg.GetName() == "" {
		cfg.Name = name
	}

	// Triton inspects the first subdirectory (in name order) only.
	var content map[string]bool // name → is a directory
	if modelDir != "" {
		if subdirs := subdirectories(modelDir); len(subdirs) > 0 {
			content = dirContent(filepath.Join(modelDir, subdirs[0]))
		}
	}
	// holds reports whether the version directory holds the model file
	// (only when neither platform nor file name is given).
	holds := func(file string, dirOK bool) bool {
		if cfg.GetPlatform() != "" || cfg.GetDefaultModelFilename() != "" {
			return false
		}
		isDir, ok := content[file]
		return ok && (dirOK || !isDir)
	}

	if completeTensorFlow(cfg, content) {
		return nil
	}
	for _, h := range backendHints {
		if cfg.Backend == "" {
			switch {
			case h.platform != "" && cfg.Platform == h.platform, cfg.DefaultModelFilename == h.file:
				cfg.Backend = h.backend
			case holds(h.file, h.dirOK):
				cfg.Backend = h.backend
				if h.torch {
					cfg.Platform = h.platform
				}
			}
		}
		if cfg.Backend != h.backend {
			continue
		}
		if h.torch {
			if cfg.Platform == "" {
				cfg.Platform = h.platform
				if cfg.DefaultModelFilename == "" {
					cfg.DefaultModelFilename = h.file
				}
			}
			return nil
		}
		if cfg.Platform == "" {
			cfg.Platform = h.platform
		}
		if cfg.DefaultModelFilename == "" {
			cfg.DefaultModelFilename = h.file
		}
		return nil
	}

	// A custom backend named by the model: "model.<backend>".
	if cfg.Backend == "" && cfg.Platform == "" && cfg.DefaultModelFilename == "" {
		i := strings.IndexByte(name, '.')
		if i < 0 {
			return tritonErrorf("Invalid model name: Could not determine backend for model '%s' "+
				"with no backend in model configuration. Expected model name of the form "+
				"'model.<backend_name>'.", name)
		}
		b := name[i+1:]
		cfg.Backend = b
		cfg.DefaultModelFilename = "model." + b
	}
	return nil
}

// completeTensorFlow is TensorFlow's rule, which goes by platform: the
// platform is recognised from default_model_filename or the version
// directory's files (a GraphDef file wins over a SavedModel directory),
// then the backend and file name follow from it. It reports whether the
// model is TensorFlow's.
func completeTensorFlow(cfg *inferencepb.ModelConfig, content map[string]bool) bool {
	if cfg.GetPlatform() == "" && (cfg.GetBackend() == "" || cfg.GetBackend() == backendTensorFlow) {
		switch cfg.GetDefaultModelFilename() {
		case fileTFSavedModel:
			cfg.Platform = platformTFSavedModel
		case fileTFGraphDef:
			cfg.Platform = platformTFGraphDef
		case "":
			if isDir, ok := content[fileTFSavedModel]; ok && isDir {
				cfg.Platform = platformTFSavedModel
			}
			if isDir, ok := content[fileTFGraphDef]; ok && !isDir {
				cfg.Platform = platformTFGraphDef
			}
		}
	}
	file := map[string]string{platformTFSavedModel: fileTFSavedModel, platformTFGraphDef: fileTFGraphDef}[cfg.Platform]
	if file == "" {
		return false
	}
	if cfg.Backend == "" {
		cfg.Backend = backendTensorFlow
	}
	if cfg.DefaultModelFilename == "" {
		cfg.DefaultModelFilename = file
	}
	return true
}
