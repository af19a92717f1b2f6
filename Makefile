# sds-bridge — `make test` is the whole suite: unit tests, then the end-to-end
# suite against real SPIRE and PostgreSQL (installed here if missing).
GO      ?= go
BIN     ?= bin
E2E_TIMEOUT ?= 45m

.PHONY: all build test unit unit-kustomize vet e2e e2e-deps bench bench-spire fuzz fmt-check clean

all: build

# VERSION (e.g. make build VERSION=v1.2.3) is stamped with -X; without it the
# binary reports its module version and VCS revision from the build info.
VERSION ?=
LDFLAGS := $(if $(VERSION),-X main.version=$(VERSION))

build:
	$(GO) build -buildvcs=auto -ldflags "$(LDFLAGS)" -o $(BIN)/sds-bridge ./cmd/sds-bridge

test: unit e2e

vet:
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/
	$(GO) vet -tags e2e,benchspire ./e2e/

fmt-check:
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

unit: fmt-check vet unit-kustomize
	$(GO) test -race -count=1 ./...

# deploy/kubernetes rendered by kustomize, decoded strictly and checked against
# Pod Security "restricted". A module of its own: kustomize and k8s.io stay out
# of the daemon's go.mod.
unit-kustomize:
	cd deploy/kubernetes/kustomizetest && $(GO) vet ./... && $(GO) test -race -count=1 ./...

# PostgreSQL comes from Debian's packages; SPIRE is built by the suite itself
# (cached under the user's cache dir, keyed by version).
e2e-deps:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "installing PostgreSQL from Debian's packages"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; \
	fi

e2e: e2e-deps
	$(GO) test -tags e2e -race -count=1 -timeout $(E2E_TIMEOUT) -v ./e2e/

# Each fuzz target for FUZZTIME; seeds are committed under */testdata/fuzz.
# Minimizing every new input for the default 60 s would eat most of the
# time on inputs that take a certificate verification each.
FUZZTIME ?= 60s
FUZZMINIMIZE ?= 200x
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) ./internal/config
	$(GO) test -run '^$$' -fuzz '^FuzzFetch$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) ./sds
	$(GO) test -run '^$$' -fuzz '^FuzzBuildSecrets$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) ./sds
	$(GO) test -run '^$$' -fuzz '^FuzzInspect$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) ./filesink
	$(GO) test -run '^$$' -fuzz '^FuzzValidate$$' -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) ./rotation

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Side by side with SPIRE Agent's own SDS, against one real agent (see
# docs/benchmarks.md). Its own build tag keeps it out of `make e2e`.
BENCH_SPIRE_WINDOW ?= 2m
bench-spire: e2e-deps
	$(GO) test -tags e2e,benchspire -run '^TestBenchSPIRE$$' -count=1 -timeout 15m -v ./e2e/ -args -bench-window=$(BENCH_SPIRE_WINDOW)

clean:
	rm -rf $(BIN) sds-bridge-dev
