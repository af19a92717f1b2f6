# syntax=docker/dockerfile:1
#
# The sds-bridge image for people who have Docker (or BuildKit, podman,
# buildah). It cannot be built on the project's own machines, which have no
# Docker engine and cannot pull base images: there `make image` builds the
# same image with Go tooling only (tools/image) and tools/image's tests check
# it. Keep the two in step: the same static binary, one layer holding only
# /sds-bridge, /etc/passwd and /etc/group for uid 65532, the same user,
# entrypoint, cmd and labels (tools/image's tests compare this file with the
# builder). The digest differs: Docker stamps its own times unless built with
# SOURCE_DATE_EPOCH and rewrite-timestamp=true.
#
#   docker build -t sds-bridge:v1.2.3 \
#     --build-arg VERSION=v1.2.3 --build-arg REVISION=$(git rev-parse HEAD) .
#   docker run --rm sds-bridge:v1.2.3 version

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH
ARG VERSION=dev
# Static (no libc, no loader: the final stage has neither), reproducible
# paths, and the version `sds-bridge version` prints.
RUN mkdir -p /rootfs/etc \
 && CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X main.version=${VERSION}" -o /rootfs/sds-bridge ./cmd/sds-bridge \
 && printf 'sds-bridge:x:65532:65532:sds-bridge:/:/sbin/nologin\n' > /rootfs/etc/passwd \
 && printf 'sds-bridge:x:65532:\n' > /rootfs/etc/group \
 && chmod 0755 /rootfs/etc /rootfs/sds-bridge \
 && chmod 0644 /rootfs/etc/passwd /rootfs/etc/group

FROM scratch
ARG VERSION=dev
ARG REVISION=""
LABEL org.opencontainers.image.title="sds-bridge" \
      org.opencontainers.image.description="SPIFFE Workload API to Envoy SDS and credential folders" \
      org.opencontainers.image.source="https://github.com/sds-bridge/sds-bridge" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# One layer, owned by root: the binary and the non-root user's entries.
COPY --from=build /rootfs/ /
WORKDIR /
USER 65532:65532
ENTRYPOINT ["/sds-bridge"]
CMD ["run"]
