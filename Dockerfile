# hashsvc: one image for the API, the scan workers and the migration step (see docker-compose.yml).
#   docker build -t hashsvc .

FROM python:3.11-slim AS build
# A compiler for any dependency without a wheel for this platform (pdqhash on some CPUs).
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
# hashsvc/defaults.toml links to config/defaults.toml, so config/ goes in too.
COPY config config
COPY hashsvc hashsvc
COPY workers workers
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# DejaVu fonts let PDF deletion reports print any file name (else non-Latin names are escaped).
RUN apt-get update \
    && apt-get install -y --no-install-recommends fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /var/lib/hashsvc hashsvc \
    && mkdir -p /var/lib/hashsvc/keys && chown -R hashsvc /var/lib/hashsvc \
    && chmod 700 /var/lib/hashsvc/keys
# The data folder holds the bank's index cache (and the SQLite store in embedded mode).
ENV HASHSVC_DATA_DIR=/var/lib/hashsvc \
    PYTHONUNBUFFERED=1
USER hashsvc
WORKDIR /var/lib/hashsvc
EXPOSE 8000
CMD ["hashsvc", "--help"]
