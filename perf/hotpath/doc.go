// Package hotpath holds end-to-end benchmarks of Nereid's request path:
// a request decoded by a front end (HTTP binary tensor data, gRPC raw
// contents), run through the real server core, scheduler and a backend,
// and the response encoded — everything between the socket and the model.
// The front-end packages benchmark their own decode and encode against a
// fake core; these add the rest. Run them with
//
//	go test -run '^$' -bench . -benchmem ./perf/hotpath/
//
// and compare before / after with benchstat, or with perf/compare_hotpath.py,
// which runs two revisions alternately. BenchmarkGRPCStreamRepeat measures
// the streaming response path of a decoupled model. See perf/README.md.
package hotpath
