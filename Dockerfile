# The service as a container image: gunicorn exactly as the Procfile runs it, as a non-root user.
#   docker build -t phone-lookup .
#   docker run -p 8000:8000 -e LOOKUP_TOKENS=... phone-lookup
# Every setting comes from the environment (README "Settings"); PORT picks the port (default 8000).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=8000

WORKDIR /app

# The dependencies first: this layer is rebuilt only when they change. constraints.txt pins the
# whole tree (scripts/lock), so every build installs the same packages.
COPY requirements.txt constraints.txt ./
RUN python -m pip install -r requirements.txt -c constraints.txt

# The code belongs to root and is read-only for the service; only instance/ (the embedded
# directory, mirrors, the SQLite ledger) is writable. Mount a volume there to keep it. The home
# directory is writable too, for whatever a library keeps there.
COPY . .
RUN groupadd --system --gid 10001 lookup \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/lookup --create-home lookup \
    && mkdir -p /app/instance \
    && chown lookup:lookup /app/instance

USER 10001:10001
EXPOSE 8000

# python's urllib, not curl (the slim image has no curl); urlopen raises on anything but 2xx.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]

CMD ["gunicorn", "wsgi:app"]
