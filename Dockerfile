# syntax=docker/dockerfile:1
# HAPI Serve image: hapi-server, hapi-optimizer, hapi-client, hapi-profile,
# hapi-train and the default model (with its int8 tables, which hapi-quantize,
# built with the main job's targets, wrote), on Debian 12 (the distribution the
# project builds and tests on; every dependency is a Debian package).
#
#   docker build -t hapi-serve .
#   docker run --rm -p 50052:50052 -p 9102:9102 hapi-serve hapi-optimizer \
#     --repository=/var/lib/hapi/repository --state=/var/lib/hapi/state/optimizer.db
#   docker run --rm -p 50051:50051 -p 9101:9101 hapi-serve    # hapi-server (CMD)
#
# docker-compose.yml runs the whole stack; docs/deployment.md explains it.

# ---- build: the same scripts as the README and CI ------------------------------
FROM debian:12 AS build
WORKDIR /src
# Dependencies first: a source change does not reinstall them.
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN bash scripts/install-deps.sh
# Then only what the build reads (CMake sources, the build script, the model):
# a change to docs/, deploy/ or the other scripts does not recompile.
COPY CMakeLists.txt ./
COPY scripts/build.sh scripts/build.sh
COPY proto/ proto/
COPY core/ core/
COPY model/ model/
COPY rpc/ rpc/
COPY optimizer/ optimizer/
COPY server/ server/
COPY client/ client/
COPY bench/ bench/
COPY tests/ tests/
COPY repository/models/ repository/models/
ENV CCACHE_DIR=/root/.ccache
# Compile jobs (scripts/build.sh's JOBS): all cores unless given, e.g.
# `docker build --build-arg JOBS=2 .` on a shared machine.
ARG JOBS
RUN --mount=type=cache,target=/root/.ccache \
    JOBS="${JOBS:-}" bash scripts/build.sh hapi-train hapi-quantize hapi-profile hapi-optimizer hapi-server hapi-client
# The default model is shipped in the repository; hapi-train only trains it
# (20 + 4 epochs, long) when it is missing from the build context.
RUN ./build/model/hapi-train --repository=repository --model=fmnist-resnet --progress=false \
    && test -f repository/models/fmnist-resnet/manifest.pbtxt

# ---- runtime: binaries, their shared libraries, the model ----------------------
FROM debian:12-slim AS runtime
# The packages owning the libraries the binaries link directly (readelf -d ...
# NEEDED; tests/deploy/check_manifests.py checks this list against the build).
# Their own dependencies (OpenBLAS, ... for LibTorch) come with them; oneDNN
# and its OpenMP runtime are linked directly by the direct inference path.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
       libtorch1.13 \
       libgrpc++1.51 libgrpc29 libprotobuf32 libabsl20220623 \
       libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 \
       libgoogle-glog0v6 libsqlite3-0 libstb0 zlib1g libstdc++6 \
       libpng16-16 libjpeg62-turbo libonnx1 \
       libdnnl2 libgomp1 \
    && rm -rf /var/lib/apt/lists/*

# Non-root. /var/lib/hapi/repository and /var/lib/hapi/state are owned by the
# user, so named volumes mounted there start out writable by it.
RUN groupadd --system --gid 10001 hapi \
    && useradd --system --uid 10001 --gid hapi --home-dir /var/lib/hapi --shell /usr/sbin/nologin hapi \
    && install -d -o hapi -g hapi /var/lib/hapi /var/lib/hapi/repository /var/lib/hapi/state

COPY --from=build /src/build/server/hapi-server /src/build/optimizer/hapi-optimizer \
     /src/build/client/hapi-client /src/build/model/hapi-profile \
     /src/build/model/hapi-train /usr/local/bin/
COPY --chmod=0755 deploy/docker/hapi-bootstrap.sh /usr/local/bin/hapi-bootstrap
# The default model twice: in the repository path (a fresh named volume mounted
# there is initialised with it, and the image works without any volume), and as
# the read-only seed hapi-bootstrap copies into an empty repository (a
# Kubernetes PersistentVolume is not initialised from the image).
COPY --from=build --chown=hapi:hapi /src/repository/models/fmnist-resnet /var/lib/hapi/repository/models/fmnist-resnet
COPY --from=build /src/repository/models/fmnist-resnet /opt/hapi/models/fmnist-resnet
# The example device profiles (analytic) used by docker-compose.yml's bootstrap.
COPY deploy/k8s/devices/ /etc/hapi/devices/

USER hapi:hapi
WORKDIR /var/lib/hapi
# gRPC and /metrics of hapi-server, then of hapi-optimizer (their flag defaults).
EXPOSE 50051 9101 50052 9102

# Serving status through hapi.v1.Inference/GetServingStatus: hapi-client exits
# non-zero when the server does not answer OK within the timeout. (Not the
# grpc.health.v1 protocol: Debian has no grpc_health_probe. Kubernetes probes
# use grpc.health.v1 natively, see deploy/k8s.) The optimizer's container
# overrides this check (docker-compose.yml).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["hapi-client", "--target=127.0.0.1:50051", "--timeout=3", "health"]

# Default: serve the newest variant for device cpu-standard from the
# repository. Override the command for the optimizer or another device:
#   hapi-optimizer --repository=/var/lib/hapi/repository --state=/var/lib/hapi/state/optimizer.db --gnuplot=
CMD ["hapi-server", "--repository=/var/lib/hapi/repository", "--device=cpu-standard", \
     "--listen=0.0.0.0:50051", "--metrics_address=0.0.0.0:9101"]
