# The stackrox.prefetch node agent (`image-prefetcher`).
#
# Built from Debian bookworm packages (python3, python3-grpcio, python3-protobuf, python3-yaml), which exist for
# linux/amd64, linux/arm64, linux/ppc64le and linux/s390x alike, so one Dockerfile serves all four; nothing is
# compiled. The final stage is `scratch` plus only the runtime file closure of those packages (no apt, dpkg,
# perl, compilers or pip), with libc and CA certificates for kubelet credential provider plugins.
#
#   docker buildx build --platform linux/amd64,linux/arm64,linux/ppc64le,linux/s390x -t REPO:TAG --push .
#   make image     # here: buildah, with a Debian base made by mmdebstrap and served by a local registry
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${BASE_IMAGE} AS build
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      python3-grpcio python3-protobuf python3-yaml ca-certificates dash >/dev/null \
 && rm -rf /var/lib/apt/lists/*
COPY agent/packaging/make-rootfs.sh /usr/local/sbin/make-rootfs.sh
RUN sh /usr/local/sbin/make-rootfs.sh
COPY agent/src/image_prefetcher /rootfs/usr/lib/python3/dist-packages/image_prefetcher
COPY agent/packaging/image-prefetcher /rootfs/usr/local/bin/image-prefetcher
# Compile with the paths the files have in the final image (read-only root: no byte-code writes at run time).
RUN python3 -m compileall -q -s /rootfs -p / /rootfs/usr/lib/python3/dist-packages/image_prefetcher

FROM scratch
ARG VERSION=0.1.0
ARG SOURCE=https://github.com/stackrox/prefetch
LABEL org.opencontainers.image.title="image-prefetcher" \
      org.opencontainers.image.description="stackrox.prefetch node agent: pulls images through CRI with retries" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /rootfs/ /
ENV PATH=/usr/local/bin:/usr/bin:/bin PYTHONDONTWRITEBYTECODE=1
# Non-root by default; the manifests run only the `prefetch` init container as root (the CRI socket is root's).
USER 65534:65534
ENTRYPOINT ["image-prefetcher"]
CMD ["--help"]
