package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	yaml "go.yaml.in/yaml/v3"
)

// yamlDocuments decodes every document of a YAML stream; empty documents
// (a comment alone, a trailing ---) are left out.
func yamlDocuments(raw []byte) ([]any, error) {
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	var docs []any
	for i := 1; ; i++ {
		var v any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if v != nil {
			docs = append(docs, v)
		}
	}
}

func yaml2jsonCmd(stdin io.Reader, stdout io.Writer) error {
	raw, err := io.ReadAll(stdin)
	if err != nil {
		return err
	}
	docs, err := yamlDocuments(raw)
	if err != nil {
		return err
	}
	if docs == nil {
		docs = []any{}
	}
	b, err := json.Marshal(docs)
	if err != nil {
		return fmt.Errorf("%w (a mapping key that is not a string?)", err)
	}
	_, err = stdout.Write(append(b, '\n'))
	return err
}
