# sds-bridge — `make test` is the whole suite: unit tests, then the end-to-end
# suite against real SPIRE and PostgreSQL (installed here if missing).
GO      ?= go
BIN     ?= bin
E2E_TIMEOUT ?= 45m

.PHONY: all build image image-test image-engine-test release release-test test unit unit-kustomize unit-helm stress vet e2e e2e-deps bench bench-spire bench-fanout fuzz fmt-check clean

all: build

# VERSION (e.g. make build VERSION=v1.2.3) is stamped with -X; without it the
# binary reports its module version and VCS revision from the build info.
VERSION ?=
LDFLAGS := $(if $(VERSION),-X main.version=$(VERSION))

# Two binaries: the daemon, and sds-bridge-envoy (the Envoy bootstrap tool,
# which `sds-bridge envoy-bootstrap` runs when it sits beside the daemon),
# kept apart so that the daemon does not link Envoy's extension types.
build:
	$(GO) build -buildvcs=auto -ldflags "$(LDFLAGS)" -o $(BIN)/sds-bridge ./cmd/sds-bridge
	$(GO) build -buildvcs=auto -ldflags "$(LDFLAGS)" -o $(BIN)/sds-bridge-envoy ./cmd/sds-bridge-envoy

# The container image, with Go tooling only (no Docker engine; see
# tools/image and the Dockerfile, which builds the same image with Docker):
# a static binary stamped with IMAGE_VERSION, then bin/sds-bridge-image.tar,
# an OCI layout that is also a `docker save` archive (docker/podman load).
# Every timestamp is SOURCE_DATE_EPOCH, by default the commit's time (0
# outside a checkout): same inputs, same digest.
IMAGE_VERSION = $(or $(VERSION),dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
SOURCE_DATE_EPOCH ?= $(or $(shell git log -1 --format=%ct 2>/dev/null),0)
export SOURCE_DATE_EPOCH
IMAGE_TAG ?= sds-bridge:$(IMAGE_VERSION)

image:
	CGO_ENABLED=0 GOOS=linux $(GO) build -buildvcs=auto -trimpath \
		-ldflags "-s -w -X main.version=$(IMAGE_VERSION)" -o $(BIN)/image/sds-bridge ./cmd/sds-bridge
	$(GO) -C tools/image run . -binary $(abspath $(BIN)/image/sds-bridge) \
		-out $(abspath $(BIN)/sds-bridge-image.tar) -tag $(IMAGE_TAG) \
		-version $(IMAGE_VERSION) -revision "$(REVISION)"

# make release VERSION=vX.Y.Z: everything a release publishes, offline, into
# DIST (emptied first): every command under cmd/ for each of
# RELEASE_PLATFORMS, static and stamped (version, commit, commit time), a
# CycloneDX SBOM per binary, the release notes from CHANGELOG.md, the
# multi-platform image of sds-bridge as an OCI layout and as a tarball
# (docker/podman load), and SHA256SUMS over all of it. tools/release and
# tools/image are modules of their own (cyclonedx-gomod and
# go-containerregistry stay out of the daemon's go.mod).
DIST ?= dist
RELEASE_PLATFORMS ?= linux/amd64 linux/arm64
release:
	@test -n "$(VERSION)" || { echo "make release needs VERSION=vX.Y.Z"; exit 1; }
	rm -rf $(DIST)
	$(GO) -C tools/release run . binaries -root $(CURDIR) -version $(VERSION) -revision "$(REVISION)" -dist $(abspath $(DIST)) \
		-platforms $(subst $(space),$(comma),$(strip $(RELEASE_PLATFORMS)))
	$(GO) -C tools/image run . -out $(abspath $(DIST))/sds-bridge_$(VERSION)_image.tar \
		-layout $(abspath $(DIST))/sds-bridge_$(VERSION)_oci -tag sds-bridge:$(VERSION) \
		-version $(VERSION) -revision "$(REVISION)" \
		$(foreach p,$(filter linux/%,$(RELEASE_PLATFORMS)),-binary $(abspath $(DIST))/sds-bridge_$(VERSION)_$(subst /,_,$(p)))
	$(GO) -C tools/release run . sums -dist $(abspath $(DIST))
comma := ,
space := $(subst ,, )

# Builds the release twice and checks what it publishes, including a push
# to and pull from an in-process registry (see tools/release).
# Two whole releases (both architectures, both commands, the image) to
# check they come out alike: more than go test's default 10 m on 2 loaded
# cores.
release-test:
	$(GO) -C tools/release test -count=1 -timeout 30m ./...

# The release image in a real engine: podman loads the tarball, inspects it,
# and the binary runs from the exported root filesystem as uid 65532
# (tools/release/engine-test.sh). Skips, saying so, without podman.
image-engine-test:
	./tools/release/engine-test.sh

# tools/image is its own module (go-containerregistry stays out of the
# daemon's go.mod), so ./... does not reach it; its test runs `make image`
# (it took 314 s beside make stress: go test's default 10 m is too close).
image-test:
	$(GO) -C tools/image test -count=1 -timeout 30m ./...

test: unit e2e

# ./... covers both binaries (cmd/sds-bridge, cmd/sds-bridge-envoy) and
# internal/envoyboot's generator, whose test fails while the generated
# extension list is stale.
vet:
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/
	$(GO) vet -tags e2e,benchspire ./e2e/
	$(GO) vet -tags e2e,benchfanout ./e2e/...
	$(GO) -C tools/image vet ./...
	$(GO) -C tools/release vet ./...
	$(GO) -C e2e/traceparse vet ./...

fmt-check:
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

unit: fmt-check vet unit-kustomize unit-helm
	$(GO) test -race -count=1 ./...
	$(GO) -C e2e/traceparse test -count=1 ./...
	$(MAKE) image-test
	$(MAKE) release-test

# deploy/kubernetes rendered by kustomize, decoded strictly and checked against
# Pod Security "restricted". A module of its own: kustomize and k8s.io stay out
# of the daemon's go.mod.
unit-kustomize:
	cd deploy/kubernetes/kustomizetest && $(GO) vet ./... && $(GO) test -race -count=1 ./...

# deploy/helm/sds-bridge rendered with Helm's Go SDK (default values and the
# value sets in deploy/helm/helmtest/testdata), linted, decoded strictly,
# checked against Pod Security "restricted" and its values schema, and its
# sidecar template included from another chart. A module of its own: Helm
# and k8s.io stay out of the daemon's go.mod. (go test ./deploy/helm, in the
# daemon's module, loads the rendered bridge configs and Envoy bootstraps.)
unit-helm:
	cd deploy/helm/helmtest && $(GO) vet ./... && $(GO) test -race -count=1 ./...

# The main module's unit suite under load, to find what a busy CI machine
# shakes out: STRESS_COUNT runs of every test at each GOMAXPROCS in
# STRESS_CPU (three runs of each test by default, about 9 minutes here), with -race, while STRESS_BURNERS busy loops (one per core by
# default) compete for the CPUs. The burners are started here and killed on
# any exit, pass or fail. STRESS_PKGS narrows it (e.g. ./rotation ./sds),
# STRESS_FLAGS adds go test flags (e.g. -run TestName).
STRESS_COUNT ?= 1
STRESS_CPU ?= 1,2,4
STRESS_BURNERS ?= $(shell nproc 2>/dev/null || echo 2)
STRESS_PKGS ?= ./...
STRESS_TIMEOUT ?= 60m
STRESS_FLAGS ?=
stress:
	@pids=""; trap 'kill $$pids 2>/dev/null' EXIT INT TERM; \
	for i in $$(seq $(STRESS_BURNERS)); do sh -c 'while :; do :; done' & pids="$$pids $$!"; done; \
	echo "stress: $(STRESS_BURNERS) CPU burners (pids$$pids); go test -race -count=$(STRESS_COUNT) -cpu $(STRESS_CPU) $(STRESS_FLAGS) $(STRESS_PKGS)"; \
	$(GO) test -race -count=$(STRESS_COUNT) -cpu $(STRESS_CPU) -timeout $(STRESS_TIMEOUT) $(STRESS_FLAGS) $(STRESS_PKGS)

# PostgreSQL comes from Debian's packages; SPIRE is built by the suite itself
# (cached under the user's cache dir, keyed by version).
e2e-deps:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "installing PostgreSQL from Debian's packages"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; \
	fi
	@# Mosquitto 2.0 and MariaDB 10.11 for the spiffe-helper examples' tests.
	@if ! command -v mosquitto_pub >/dev/null || ! [ -x /usr/sbin/mosquitto ] || ! [ -x /usr/sbin/mariadbd ]; then \
		echo "installing Mosquitto and MariaDB from Debian's packages"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q mosquitto mosquitto-clients mariadb-server mariadb-client; \
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

# Side by side with SPIRE Agent's own SDS and spiffe-helper, against one
# real agent (see docs/benchmarks.md). Its own build tag keeps it out of
# `make e2e`; e2e/traceparse, the trace parser it runs, is a module of its
# own (golang.org/x/exp stays out of the daemon's go.mod), tested by `make unit`.
BENCH_SPIRE_WINDOW ?= 2m
# BENCH_SPIRE_BASELINE=<git rev> also runs the bridge built at that revision,
# side by side, as the "before" of every row.
BENCH_SPIRE_BASELINE ?=
bench-spire: e2e-deps
	$(GO) test -tags e2e,benchspire -run '^TestBenchSPIRE$$' -count=1 -timeout 45m -v ./e2e/ -args -bench-window=$(BENCH_SPIRE_WINDOW) -bench-baseline=$(BENCH_SPIRE_BASELINE)

# One rotation to many SDS streams, from a client process (e2e/fanoutclient),
# on SPIRE Agent's SDS and the bridge's in the same run (see
# docs/benchmarks.md). BENCH_FANOUT_BASELINE=<git rev> adds the bridge built
# at that revision as a third target.
BENCH_FANOUT_STREAMS ?= 1000,10000
BENCH_FANOUT_CONNS ?= 50
BENCH_FANOUT_WINDOW ?= 2m
BENCH_FANOUT_ROTATIONS ?= 2
BENCH_FANOUT_BASELINE ?=
bench-fanout: e2e-deps
	BENCH_FANOUT_BASELINE=$(BENCH_FANOUT_BASELINE) $(GO) test -tags e2e,benchfanout -run '^TestBenchFanout$$' -count=1 -timeout 60m -v ./e2e/ \
		-args -fanout-streams=$(BENCH_FANOUT_STREAMS) -fanout-conns=$(BENCH_FANOUT_CONNS) \
		-fanout-window=$(BENCH_FANOUT_WINDOW) -fanout-rotations=$(BENCH_FANOUT_ROTATIONS)

clean:
	rm -rf $(BIN) $(DIST) sds-bridge-dev
