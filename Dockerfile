# The imagegen serving image: the service on onnxruntime-gpu, with CUDA and cuDNN from NVIDIA's
# pip wheels (the host needs only the driver and the NVIDIA Container Toolkit), or on plain
# onnxruntime with --build-arg RUNTIME=cpu. No TensorFlow, no compiler, a non-root user.
#
#   docker build -t imagegen:gpu .
#   docker build -t imagegen:cpu --build-arg RUNTIME=cpu .
#   docker build -t imagegen:gpu --build-arg FP16_VARIANTS=true .   # adds <name>-fp16 models
#
# docs/deploy.md has the host requirements and every way to run it.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: a virtual environment with the service and one onnxruntime -----------------------
FROM ${PYTHON_IMAGE} AS build
# gpu: onnxruntime-gpu[cuda,cudnn] (CUDA 12 and cuDNN 9 as pip wheels); cpu: onnxruntime.
ARG RUNTIME=gpu
# The last onnxruntime-gpu release on PyPI built for CUDA 12 (1.27 and later need CUDA 13,
# so driver 580 or newer): docs/deploy.md.
ARG ONNXRUNTIME_GPU_VERSION=1.26.0
# Opt-in TensorRT libraries (tensorrt-cu12-libs) for IMAGEGEN_PROVIDERS=tensorrt: the TensorRT
# 10 release that the onnxruntime-gpu release names, e.g. "10.*". Empty (the default): none,
# and an image about 2 GB smaller.
ARG TENSORRT_VERSION=""
# Pins for the NVIDIA wheels that onnxruntime-gpu[cuda,cudnn] pulls in, written from a resolved
# build (docs/deploy.md: refreshing the GPU pins). /dev/null: resolve them afresh.
ARG GPU_CONSTRAINTS=deploy/gpu-constraints.txt
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH=/opt/venv/bin:$PATH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md requirements.lock ./
COPY deploy/gpu-constraints.txt ./deploy/
# Only the serving package: training/ never enters the build context (.dockerignore), so
# TensorFlow cannot come in even by accident.
COPY service ./service
# onnxruntime and onnxruntime-gpu both own the `onnxruntime` package: installing the second
# over the first leaves a mix of both. So the service goes in with its pinned dependencies
# (plain onnxruntime among them), and the GPU image then swaps that for onnxruntime-gpu.
RUN pip install --no-cache-dir -c requirements.lock ".[grpc]" \
    && if [ "$RUNTIME" = gpu ]; then \
         pip uninstall --yes onnxruntime \
         && pip install --no-cache-dir -c "$GPU_CONSTRAINTS" \
              "onnxruntime-gpu[cuda,cudnn]==${ONNXRUNTIME_GPU_VERSION}" \
         && if [ -n "$TENSORRT_VERSION" ]; then \
              pip install --no-cache-dir "tensorrt-cu12-libs==${TENSORRT_VERSION}"; \
            fi; \
       elif [ "$RUNTIME" != cpu ]; then \
         echo "RUNTIME must be gpu or cpu, not '$RUNTIME'" >&2; exit 1; \
       fi \
    && python -c "import importlib.util as u, onnxruntime as o, sys; \
p = o.get_available_providers(); print('onnxruntime', o.__version__, p); \
sys.exit(u.find_spec('tensorflow') is not None \
or ('$RUNTIME' == 'gpu') != ('CUDAExecutionProvider' in p))" \
    && ln -s "$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/tensorrt_libs" \
       /opt/venv/tensorrt_libs

# -- models: the shipped models, plus their fp16 variants when asked for ----------------------
FROM build AS models
ARG FP16_VARIANTS=false
COPY models/ /models/
# The conversion needs onnx, which stays in this stage; its parity check runs on the CPU here.
RUN if [ "$FP16_VARIANTS" = true ]; then \
      pip install --no-cache-dir -c requirements.lock onnx \
      && imagegen fp16 --models-dir /models; \
    fi

# -- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG RUNTIME=gpu
LABEL org.opencontainers.image.title="imagegen" \
      org.opencontainers.image.description="ONNX GAN/VAE image generators over HTTP, dynamic batching" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.imagegen.runtime="${RUNTIME}"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    IMAGEGEN_HOST=0.0.0.0 \
    IMAGEGEN_PORT=8000 \
    IMAGEGEN_MODELS_DIR=/app/models \
    IMAGEGEN_TENSORRT_CACHE_DIR=/var/cache/imagegen/tensorrt \
    HOME=/home/imagegen \
    LD_LIBRARY_PATH=/opt/venv/tensorrt_libs
# A system user (uid and gid in useradd --system's range) with a home of its own, where
# onnxruntime keeps its state. /opt/venv/tensorrt_libs links to the TensorRT wheel's
# libraries in the venv's site-packages, whatever the base image's Python version (the link
# dangles, harmlessly, in an image without TensorRT).
RUN groupadd --system --gid 900 imagegen \
    && useradd --system --uid 900 --gid imagegen --home-dir /home/imagegen --create-home \
       --shell /usr/sbin/nologin imagegen \
    && mkdir -p /app /var/cache/imagegen/tensorrt \
    && chown imagegen:imagegen /var/cache/imagegen/tensorrt
COPY --from=build /opt/venv /opt/venv
# Owned by root and read-only to the service; mount another folder here to serve other models.
COPY --from=models /models /app/models
WORKDIR /app
USER 900:900
EXPOSE 8000 8001
# Ready means every model loaded and warmed up; start-up may build TensorRT engines first.
HEALTHCHECK --interval=10s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('IMAGEGEN_PORT', '8000') + '/readyz', timeout=4)"]
# SIGTERM: stop accepting, finish what is in flight within IMAGEGEN_SHUTDOWN_GRACE_S, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["imagegen"]
CMD ["serve"]
