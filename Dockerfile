# LiteLLM proxy (Railway: the root Dockerfile, picked up without RAILWAY_DOCKERFILE_PATH).
# proxy/start.py turns the guide's variables into LiteLLM's (DATABASE_URL ignored unless
# LITELLM_USE_DATABASE=true; REDIS_URL feeds the cache and the router's shared state), then
# execs `litellm --config ... --port ${PORT:-4000}`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    PORT=4000

# litellm[proxy]==1.108.7 and everything it needs, each checked against its hash.
COPY requirements-proxy.lock /tmp/requirements-proxy.lock
RUN pip install --no-cache-dir --require-hashes -r /tmp/requirements-proxy.lock \
    && groupadd --gid 10001 app && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin app

WORKDIR /app
COPY proxy/config.yaml proxy/start.py /app/proxy/

USER 10001:10001
EXPOSE 4000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/liveliness' % os.environ.get('PORT', '4000'), timeout=4)"]
CMD ["python", "/app/proxy/start.py", "--config", "/app/proxy/config.yaml"]
