// Package servertest builds real server cores for the tests of the
// packages around the core (the front ends): a temporary repository of
// the given models, loaded by the real loader, as `nereid
// --model-repository` loads it.
package servertest

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/rs/zerolog"

	_ "github.com/nereid-project/nereid/backends/repeat" // the decoupled model of RepeatConfig
	"github.com/nereid-project/nereid/repository"
	"github.com/nereid-project/nereid/server"
)

// RepeatConfig is the model "rep" of the repeat backend: one response per
// element of IN, DELAY[i] ms apart, then the final flag alone; a DELAY
// whose length differs from IN's fails the request in the backend.
const RepeatConfig = `name: "rep"
backend: "repeat"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [
  { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] },
  { name: "DELAY" data_type: TYPE_UINT32 dims: [ -1 ] },
  { name: "WAIT" data_type: TYPE_UINT32 dims: [ 1 ] }
]
output [
  { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "IDX" data_type: TYPE_UINT32 dims: [ 1 ] }
]
`

// Core is a server core over a temporary repository holding models (name
// → config.pbtxt text, each with an empty version 1), every model loaded;
// it is closed when the test ends.
func Core(tb testing.TB, models map[string]string) *server.Server {
	tb.Helper()
	dir := tb.TempDir()
	for name, config := range models {
		if err := os.MkdirAll(filepath.Join(dir, name, "1"), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name, "config.pbtxt"), []byte(config), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	log := zerolog.Nop()
	repo, err := repository.New(repository.Options{
		Paths: []string{dir}, Mode: repository.ModeNone,
		Loader: server.NewLoader(server.LoaderOptions{Logger: log}), Logger: log,
	})
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	if err := repo.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = repo.Close(ctx) })
	return server.New(repo, server.Options{Logger: log})
}
