package sagemaker

import (
	"bytes"
	"strconv"

	"github.com/nereid-project/nereid/inference"
)

// binaryMediaType is the Content-Type of a body with binary tensor data on
// the SageMaker port. SageMaker passes Content-Type through but no custom
// header, so the length of the JSON header that Triton's
// Inference-Header-Content-Length carries travels as a parameter of it:
// application/vnd.sagemaker-triton.binary+json;json-header-size=<n>.
const (
	binaryMediaType = "application/vnd.sagemaker-triton.binary+json"
	headerSizeParam = "json-header-size"
)

// binaryContentType is the Content-Type of a response whose JSON header of
// hdrLen bytes is followed by binary tensor data.
func binaryContentType(hdrLen int) string {
	return binaryMediaType + ";" + headerSizeParam + "=" + strconv.Itoa(hdrLen)
}

// jsonHeaderSize reads a request's Content-Type. For the binary media
// type it returns the json-header-size parameter and true; for any other
// type (JSON, or none) false: the whole body is JSON. The binary type
// without a valid size is an error. Media types and parameter names are
// case-insensitive; the value may be quoted.
func jsonHeaderSize(contentType []byte) (int, bool, error) {
	media, params, _ := bytes.Cut(contentType, []byte(";"))
	if !bytes.EqualFold(bytes.TrimSpace(media), []byte(binaryMediaType)) {
		return 0, false, nil
	}
	for len(params) > 0 {
		var p []byte
		p, params, _ = bytes.Cut(params, []byte(";"))
		key, value, ok := bytes.Cut(p, []byte("="))
		if !ok || !bytes.EqualFold(bytes.TrimSpace(key), []byte(headerSizeParam)) {
			continue
		}
		value = bytes.TrimSpace(value)
		if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
			value = value[1 : len(value)-1]
		}
		n, err := strconv.Atoi(string(value))
		if err != nil || n < 0 || value[0] == '+' {
			return 0, true, inference.InvalidArg("Content-Type '%s': %s must be a non-negative integer, got '%s'", contentType, headerSizeParam, value)
		}
		return n, true, nil
	}
	return 0, true, inference.InvalidArg("Content-Type '%s' needs a %s parameter: the length of the JSON header", contentType, headerSizeParam)
}
