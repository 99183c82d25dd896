# Cited Q&A service: CPU-only image with the index built at image build time.
FROM python:3.11-slim

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
RUN pip install .

RUN useradd --system --uid 10001 --home-dir /app qa \
    && python scripts/build_index.py \
    && chown -R qa:qa /app/index /app/corpus

USER qa
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
# JSON logs; X-Forwarded-For is believed only from QA_TRUSTED_PROXIES (set it behind a proxy).
# Connection limits as in the Makefile's UVICORN_LIMITS (README, "Operations").
CMD ["uvicorn", "--factory", "service.app:create_app", "--host", "0.0.0.0", "--port", "8000", \
     "--log-config", "service/log_config.json", "--no-proxy-headers", \
     "--http", "h11", "--h11-max-incomplete-event-size", "16384", "--timeout-keep-alive", "5", \
     "--limit-concurrency", "512", "--backlog", "512"]
