# syntax=docker/dockerfile:1
# kube-route-server image: `routeserver agent` for the Helm chart's DaemonSet, and
# `routeserver run -f manifests/` (standalone) or `routeserver status` elsewhere.

# -- build: wheels for the project and every dependency, so the runtime stage needs no compiler --
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bgp ./bgp
COPY bfd ./bfd
COPY controller ./controller
COPY lab ./lab
RUN python -m pip wheel --wheel-dir /wheels .

# -- runtime -----------------------------------------------------------------------------------
FROM python:3.11-slim
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# iproute2 only: `ip` and `ss` to inspect what the agent programmed, and the rt_tables names that
# RouteTableAssociation tableName resolves through.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 \
 && rm -rf /var/lib/apt/lists/*
# Installed from the wheels only (no index), byte-compiled now because the root filesystem is
# read-only at run time.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m pip install --no-index --find-links /wheels --compile kube-route-server
# Non-root by default. The Helm chart runs the agent as root with only NET_ADMIN and
# NET_BIND_SERVICE, because Kubernetes grants added capabilities to root only.
RUN useradd --system --uid 65532 --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin routeserver
USER 65532:65532
ENTRYPOINT ["routeserver"]
CMD ["--help"]
