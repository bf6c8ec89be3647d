# syntax=docker/dockerfile:1
# dualstack-webhook image: a static Go binary on a distroless, non-root base.
#   docker build -t dualstack-webhook:dev .
# For users with Docker. `make image` builds the same image without any
# container engine or base image (bin/dualstack-webhook.oci.tar: the binary at
# the same path, USER 65532:65532, the same entrypoint, cmd and ports; its
# /etc/passwd names only root and nonroot and it carries no CA certificates,
# which the webhook does not need: it talks only to the in-cluster apiserver).
# The chart runs it as `dualstack-webhook serve ...` with UID/GID 65532 and a
# read-only root filesystem; nothing here writes to disk.

ARG GO_IMAGE=golang:1.26-bookworm
ARG BASE_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build
ARG TARGETOS=linux
ARG TARGETARCH
WORKDIR /src
# Modules first: this layer is reused while only sources change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# CGO off: a static binary that runs on distroless/static (no libc).
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false -ldflags "-s -w" -o /out/dualstack-webhook .

FROM ${BASE_IMAGE}
COPY --from=build /out/dualstack-webhook /usr/local/bin/dualstack-webhook
# distroless "nonroot" is 65532:65532; stated again so that a different
# BASE_IMAGE cannot silently run as root.
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/dualstack-webhook"]
CMD ["serve"]
