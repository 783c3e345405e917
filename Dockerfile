# syntax=docker/dockerfile:1
# HPSv3 on Triton, GPU target: TensorRT plans (vision encoder, reward head), vLLM (language tower, inside a
# Python model), preprocess in Python. Build from the repository root, with the base image's digest:
#   docker buildx imagetools inspect nvcr.io/nvidia/tritonserver:26.10-py3 --format '{{.Manifest.Digest}}'
#   docker build --build-arg TRITON_DIGEST=sha256:... -t hpsv3-serve:gpu .
# Base: Triton's full image, which has the TensorRT and Python backends (NVIDIA's -vllm-python-py3 image has
# the Python and vLLM backends only, no TensorRT); vLLM is added with pip, as Triton's docs suggest for that.
# 26.10: the newest release when this was written (CUDA 13, Python 3.12); change both pins together and rerun
# the GPU checks (docs/DEPLOYMENT.md).
# The base is pinned by digest (a tag can be moved), and the digest has no default: it was not looked up where
# this was written (no access to nvcr.io), and an invented one would be worse than none. Without
# --build-arg TRITON_DIGEST=sha256:... the build stops on this FROM with "invalid reference format" (the
# image name ends in "@"). A new TRITON_VERSION needs its own digest: with a digest the tag is not looked up.
ARG TRITON_VERSION=26.10
ARG TRITON_DIGEST
FROM nvcr.io/nvidia/tritonserver:${TRITON_VERSION}-py3@${TRITON_DIGEST}

# The version the repository's vLLM tests run (scripts/setup_vllm_venv.sh); the others: what CI tests with.
ARG VLLM_VERSION=0.32.0
ARG ONNX_VERSION=1.23.2
ARG ONNXSCRIPT_VERSION=0.7.2
ARG ONNXRUNTIME_VERSION=1.32.0
ARG TRITONCLIENT_VERSION=2.73.0

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    HPSV3_CACHE_DIR=/models/cache \
    HF_HOME=/models/cache/huggingface

# Its own layer: vLLM and its CUDA build of torch (several GB) are not reinstalled when the code changes.
RUN python3 -m pip install "vllm==${VLLM_VERSION}"

WORKDIR /opt/hpsv3-serve
COPY . .
# The package, what export and rendering need (ONNX + ONNX Runtime for the parity check, tritonclient for
# the config schema), then TensorRT's Python package at the exact version of the image's libnvinfer: a plan
# only loads in the TensorRT that built it (the requirement is piped: no file in /tmp; pipefail stops on a
# failed lookup).
RUN python3 -m pip install . "onnx==${ONNX_VERSION}" "onnxscript==${ONNXSCRIPT_VERSION}" \
        "onnxruntime==${ONNXRUNTIME_VERSION}" "tritonclient[grpc]==${TRITONCLIENT_VERSION}" \
    && python3 -m hpsv3_repository.entrypoint --tensorrt-requirement | python3 -m pip install --requirement /dev/stdin \
    && python3 -c "import tensorrt, vllm, hpsv3_repository.entrypoint; print('tensorrt', tensorrt.__version__, 'vllm', vllm.__version__)" \
    && test -d /opt/tritonserver/backends/tensorrt \
    && test -d /opt/tritonserver/backends/python \
    && test -x /opt/nvidia/nvidia_entrypoint.sh \
    && install -m 0755 docker/entrypoint.sh /usr/local/bin/hpsv3-entrypoint \
    && install -d -o 1000 -g 1000 /models/cache

# What the server writes besides the cache volume goes under HOME or /tmp: in Kubernetes the root filesystem
# is read-only and both are emptyDirs (deploy/render.py). Each library's own variable, so that a platform that
# changes HOME moves nothing (the build's own steps ran with root's HOME):
#   HOME                     ~ defaults: vLLM's VLLM_CONFIG_ROOT (~/.config/vllm), FlashInfer, CUDA's JIT cache
#   XDG_CACHE_HOME           vLLM's VLLM_CACHE_ROOT ($XDG_CACHE_HOME/vllm: its torch.compile cache), numba
#   TRITON_HOME              OpenAI Triton's kernel cache, $TRITON_HOME/.triton/cache (default ~). Not
#                            TRITON_CACHE_DIR: vLLM treats a set one as the caller's and stops keeping its
#                            kernels beside its compile cache
#   TORCHINDUCTOR_CACHE_DIR  torch's default is $TMPDIR/torchinductor_$USER, a predictable name (vLLM sets its own
#                            per model while it compiles)
#   PYTHONDONTWRITEBYTECODE  no __pycache__ beside the sources (read-only site-packages, the rendered repository)
#   DO_NOT_TRACK             no usage statistics: vLLM (VLLM_DO_NOT_TRACK) and huggingface_hub telemetry
ENV HOME=/home/hpsv3 \
    XDG_CACHE_HOME=/home/hpsv3/.cache \
    TRITON_HOME=/home/hpsv3 \
    TORCHINDUCTOR_CACHE_DIR=/home/hpsv3/.cache/torchinductor \
    PYTHONDONTWRITEBYTECODE=1 \
    DO_NOT_TRACK=1
RUN install -d -o 1000 -g 1000 "${HOME}"

# Not root: uid 1000 owns the cache volume (Kubernetes: fsGroup 1000) and HOME.
USER 1000:1000
WORKDIR /models
VOLUME ["/models/cache"]
# HTTP (health: /v2/health/ready, /v2/health/live), gRPC, Prometheus metrics
EXPOSE 8000 8001 8002
# The first start exports and builds engines (tens of minutes on the 7B model): a long start period.
HEALTHCHECK --start-period=60m --interval=30s --timeout=5s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=4)"]
# NVIDIA's entrypoint first (CUDA forward-compatibility setup, banner), then ours; arguments go to ours.
ENTRYPOINT ["/opt/nvidia/nvidia_entrypoint.sh", "hpsv3-entrypoint"]
