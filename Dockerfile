# Crop-yield prediction service image.
#
#   CPU (default):  podman build -t crop-yield:0.1.0 .
#   CUDA (GPU nodes): podman build --build-arg TORCH_INDEX_URL= --build-arg TORCH_VARIANT=cuda \
#                       -t crop-yield:0.1.0-cuda .      (or: make image-cuda)
#
# The CUDA image is the same service with torch's CUDA build: PyPI's own torch wheel, which
# pulls the nvidia-* runtime wheels (the node supplies the driver); set
# CROP_YIELD_DEVICE=cuda where it runs (auto picks CUDA when there is a GPU, else the CPU).
# The model is trained during the build from the shipped seed-004 data (see README,
# "Container image"), so the image serves with no volume attached.

# ---- dependencies: pinned runtime packages, read from pyproject.toml ----------------
FROM python:3.11-slim AS deps

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN python3 -m venv /opt/venv
COPY pyproject.toml deploy/docker/requirements.py /build/
# Everything but torch first: this layer is the same in the CPU and the CUDA image, so
# building the second one reuses it.
RUN python3 /build/requirements.py /build/pyproject.toml --without torch > /build/requirements.txt \
    && pip install -r /build/requirements.txt
# Then torch, in a layer of its own per variant (the build args are declared only here, so
# the layers above do not depend on them; TORCH_VARIANT is part of this step's cache key).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VARIANT=cpu
RUN echo "torch variant: $TORCH_VARIANT" \
    && python3 /build/requirements.py /build/pyproject.toml --only torch > /build/requirements-torch.txt \
    && pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -r /build/requirements-torch.txt

# ---- trainer: fits the default model into a model store ---------------------------
FROM deps AS trainer

ARG MODEL_VERSION=seed004-default
RUN python3 /build/requirements.py /build/pyproject.toml train > /build/requirements-train.txt \
    && pip install -r /build/requirements-train.txt
WORKDIR /app
COPY contract/ contract/
COPY training/ training/
# A failed quality gate or bad data fails the build: no image without a checked model.
# BentoML writes store files owner-only; the service user needs to read them.
RUN BENTOML_HOME=/opt/crop-yield/bentoml BENTOML_DO_NOT_TRACK=true \
    python3 -m training --version "$MODEL_VERSION" --quiet \
    && chmod -R a+rX /opt/crop-yield/bentoml

# ---- runtime: the service, the trained model, nothing else ------------------------
FROM deps AS runtime

ARG VERSION=0.1.0
ARG SOURCE=https://example.com/crop-yield-service
ARG MODEL_VERSION=seed004-default
LABEL org.opencontainers.image.title="crop-yield-service" \
      org.opencontainers.image.description="Crop-yield prediction (BentoML, PyTorch linear model)" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.source="$SOURCE" \
      org.opencontainers.image.licenses="MIT" \
      io.crop-yield.model-tag="crop_yield:$MODEL_VERSION"

# The served-set file of explicit model control (CROP_YIELD_MODEL_CONTROL=explicit, see
# CROP_YIELD_SERVED_SET_FILE below) lives in /var/lib/crop-yield, a folder operators mount:
# a writable volume to change the set with the repository API (it then outlives restarts),
# or a ConfigMap, read-only, to change it by editing the ConfigMap
# (deploy/kubernetes/components/served-set; the API then answers 409). The image holds only
# the empty mount point, root's and not writable (the root is read-only anyway), but open
# to every user, so uid 10001 reaches a mounted file readable by others (a ConfigMap's 0644).
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin app \
    && install -d -o root -g root -m 0755 /var/lib/crop-yield

# The baked model store is owned by root: read-only for the service user.
COPY --from=trainer /opt/crop-yield/bentoml /opt/crop-yield/bentoml
WORKDIR /app
COPY contract/ contract/
COPY service/ service/

ENV PYTHONPATH=/app \
    HOME=/tmp \
    BENTOML_HOME=/opt/crop-yield/bentoml \
    BENTOML_DO_NOT_TRACK=true \
    CROP_YIELD_MODEL_TAG=crop_yield:$MODEL_VERSION \
    CROP_YIELD_SERVED_SET_FILE=/var/lib/crop-yield/served.json \
    CROP_YIELD_HOST=0.0.0.0 \
    CROP_YIELD_PORT=3000

USER 10001:10001
EXPOSE 3000 8001
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:3000/readyz', timeout=2)"]
# python -m service execs `bentoml serve`, which becomes PID 1 and handles SIGTERM:
# in-flight requests finish, bounded by CROP_YIELD_GRACEFUL_SHUTDOWN_TIMEOUT.
ENTRYPOINT ["python3", "-m", "service"]
