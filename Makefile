# Nereid build, test and check entry points.
#
# Works from a fresh clone on a machine that has only Go, python3 (3.11),
# gcc and make: every other tool is installed into an ignored folder of the
# repository (.venv for Python, .tools for Go tools) by the targets below.

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

PROTO_SOURCES := model_config.proto grpc_service.proto health.proto
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
	tidy-check proto proto-check venv tools clean distclean help

all: build

help:
	@echo 'make build   build bin/nereid'
	@echo 'make run     build and serve model_repo_examples on :8000 (HTTP), :8001 (gRPC), :8002 (metrics)'
	@echo 'make test    go test -race, short fuzzing of every fuzz target, end-to-end tests with tritonclient'
	@echo 'make check   gofmt, go vet, golangci-lint, go mod tidy diff, generated-code freshness, go test -race'
	@echo 'make proto   regenerate proto/inferencepb and proto/healthpb'
	@echo 'make venv    Python virtualenv for the end-to-end tests (.venv)'
	@echo 'make tools   pinned protoc plugins and golangci-lint (.tools)'
	@echo 'make clean   remove build outputs; make distclean also removes .venv and .tools'

## ---- build and run -------------------------------------------------------

build:
	$(GO) build -o bin/nereid ./cmd/nereid

run: build
	bin/nereid --model-repository=model_repo_examples

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
	PIP_DISABLE_PIP_VERSION_CHECK=1 $(VENV)/bin/python -m pip install --quiet --no-deps -r $(REQUIREMENTS)
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

test: test-go test-fuzz test-e2e

test-go:
	$(GO) test -race ./...

# Runs every native fuzz target for $(FUZZTIME). `go test -list` prints a
# package's matching test names followed by its "ok <package>" line.
test-fuzz:
	@targets=$$($(GO) test -list '^Fuzz' ./... | awk '/^Fuzz/ { names = names " " $$1; next } /^ok / { if (names != "") print $$2 names; names = "" }'); \
	if [ -z "$$targets" ]; then echo "no fuzz targets"; exit 0; fi; \
	while read -r pkg names; do \
		for name in $$names; do \
			echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
			$(GO) test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) "$$pkg"; \
		done; \
	done <<< "$$targets"

test-e2e: build venv
	$(VENV)/bin/python -m pytest -q tests/e2e $(PYTEST_ARGS)

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
	rm -rf $(VENV) $(TOOLS) .pytest_cache
