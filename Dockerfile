# syntax=docker/dockerfile:1
#
# promptgate on GPUs: the gRPC screening server with the vLLM engine, as a non-root user.
#
#   docker build -t promptgate:0.1.0 .
#   docker run --rm --gpus all --shm-size 2g -p 50051:50051 -p 9090:9090 \
#       -v /srv/models/promptgate:/models:ro promptgate:0.1.0
#   docker run --rm --gpus all --shm-size 2g -p 50051:50051 \
#       -e PROMPTGATE_MODEL=sarthakrastogi/narasimha-b-0.6b promptgate:0.1.0
#
# Every `promptgate serve` setting is a PROMPTGATE_* variable (-e) or a flag after the image
# name. docs/deployment.md covers TLS, tokens, Kubernetes and scaling; tests/test_deploy.py
# lints this file with hadolint and checks it against the server's configuration.

# The vLLM release the image runs on: it brings Python, CUDA, torch and vLLM built for each
# other. promptgate needs vllm >= 0.26 (pyproject.toml, `vllm` extra).
ARG VLLM_IMAGE=vllm/vllm-openai:v0.26.0
ARG BUILDER_IMAGE=python:3.12-slim-bookworm

# -- 1. the promptgate wheel ----------------------------------------------------------------
# Built apart so neither the source nor the build tool ends up in the runtime image. The
# wheel is pure Python, so the builder's Python version does not matter.
FROM ${BUILDER_IMAGE} AS wheel
WORKDIR /src
# The pinned hatchling is the one the test suite builds the wheel with (tests/test_packaging.py).
RUN python -m pip install --no-cache-dir hatchling==1.33.0
# Only what the wheel is made of (pyproject.toml's only-include; README.md is its long description).
COPY pyproject.toml README.md ./
COPY client/promptgate client/promptgate
COPY server/promptgate server/promptgate
COPY trainer/promptgate trainer/promptgate
RUN python -m pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /dist .

# -- 2. the runtime image ----------------------------------------------------------------------
FROM ${VLLM_IMAGE}

ARG PROMPTGATE_UID=10001
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# promptgate goes into the image's own Python with its `vllm` extra, so pyproject.toml stays the
# one list of dependencies (a --no-deps install would have to repeat it here and would never
# check it). The GPU stack that is already installed (torch, vLLM, triton, the CUDA wheels) is
# frozen by a constraints file: pip only adds what is missing (grpcio-health-checking,
# structlog, ...) and can never swap torch for another build that vLLM's compiled kernels were
# not built against. If the base image ever stops satisfying promptgate's ranges, the build
# fails here with pip's resolution error instead of pulling gigabytes of a different CUDA stack.
# The greps check that the freeze found torch and vLLM at all (a renamed package would otherwise
# silently leave them unconstrained). The last two lines fail the build, not the first pod, if
# the entry point or vLLM's own imports broke (importing vLLM needs no GPU).
RUN --mount=type=bind,from=wheel,source=/dist,target=/tmp/dist \
    python3 -m pip list --format=freeze \
        | grep -iE '^(torch|torchvision|torchaudio|triton|vllm|xformers|flashinfer[-_]python|nvidia[-_][a-z0-9_-]+)==' \
        > /tmp/gpu-stack.txt \
    && grep -q '^torch==' /tmp/gpu-stack.txt \
    && grep -q '^vllm==' /tmp/gpu-stack.txt \
    && wheel="$(find /tmp/dist -name 'promptgate-*.whl')" \
    && python3 -m pip install --no-cache-dir --constraint /tmp/gpu-stack.txt "promptgate[vllm] @ file://${wheel}" \
    && rm /tmp/gpu-stack.txt \
    && promptgate serve --help > /dev/null \
    && python3 -c "import vllm, promptgate.server.app"

# A fixed numeric UID, so Kubernetes' runAsNonRoot can verify it without /etc/passwd. Group 0,
# like vLLM's own non-root user: platforms that run images under an arbitrary UID (OpenShift)
# put it in group 0, and the group-writable home then works for them too.
RUN useradd --no-log-init --uid "${PROMPTGATE_UID}" --gid 0 --create-home --home-dir /home/promptgate \
        --shell /usr/sbin/nologin promptgate \
    && mkdir -p /models /home/promptgate/.cache/huggingface \
    && chown -R "${PROMPTGATE_UID}:0" /models /home/promptgate \
    && chmod -R g+rwX /models /home/promptgate

# HOME holds every cache the process writes (Hugging Face downloads, vLLM's compile cache, triton
# and FlashInfer kernels); mount a volume there (or at HF_HOME) to keep them across restarts.
# PROMPTGATE_MODEL=/models: a model directory mounted there; set it to a hub id to download one
# instead. PROMPTGATE_ENGINE=vllm, not auto: on a GPU image a vLLM that fails to import must stop
# the server with an error, not fall back to the slow transformers engine unnoticed.
# VLLM_NO_USAGE_STATS: a screening service sends nothing to third parties.
ENV HOME=/home/promptgate \
    HF_HOME=/home/promptgate/.cache/huggingface \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    PYTHONUNBUFFERED=1 \
    PROMPTGATE_MODEL=/models \
    PROMPTGATE_ENGINE=vllm \
    PROMPTGATE_DEVICE=cuda \
    PROMPTGATE_HOST=0.0.0.0 \
    PROMPTGATE_PORT=50051 \
    PROMPTGATE_METRICS_PORT=9090

WORKDIR /home/promptgate
USER ${PROMPTGATE_UID}:0

LABEL org.opencontainers.image.title="promptgate" \
      org.opencontainers.image.description="gRPC service that screens queries to AI agents for prompt attacks (vLLM, GPU)" \
      org.opencontainers.image.licenses="Apache-2.0"

# gRPC (classifier, health, reflection) and Prometheus /metrics.
EXPOSE 50051 9090

# SIGTERM starts the graceful drain: health turns NOT_SERVING, in-flight calls get
# PROMPTGATE_GRACE_PERIOD seconds, the process exits 0. `docker stop -t` must allow more than that.
STOPSIGNAL SIGTERM

# The standard gRPC health service, as Kubernetes' probes ask it: SERVING once the model is
# loaded. The start period covers loading, CUDA graph capture and, with a hub id, the download.
# A shell reads the port from the environment; `|| exit 1` because Docker reserves exit 2 (which
# argparse uses) and anything but 0 or 1. With TLS on the port, override it:
#   docker run --health-cmd 'promptgate health --target localhost:50051 --tls-ca /certs/ca.crt' ...
HEALTHCHECK --interval=15s --timeout=10s --start-period=600s --retries=3 \
    CMD ["/bin/sh", "-c", "promptgate health --target \"127.0.0.1:${PROMPTGATE_PORT}\" --timeout 5 || exit 1"]

ENTRYPOINT ["promptgate", "serve"]
