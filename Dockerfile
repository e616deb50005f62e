# The `sequencer` command in an image: `docker run IMAGE worker`, `IMAGE db upgrade`, ...
# docker-compose.yml builds it for the scaled shape (PostgreSQL + Redis). The example
# sequences and templates are baked in at /app; mount your own over them, and your
# sequencer.yaml anywhere with SEQUENCER_CONFIG pointing at it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The package first, so editing a sequence or template does not reinstall dependencies.
COPY pyproject.toml README.md LICENSE ./
COPY sequencer ./sequencer
RUN pip install . && rm -rf /app/sequencer /app/build /app/*.egg-info

COPY sequences ./sequences
COPY templates ./templates

# Never root. /data is the one writable place, for an SQLite database in the embedded shape:
#   docker run -v sequencer-data:/data -e SEQUENCER_SECRET=... \
#     -e SEQUENCER_DATABASE_URL=sqlite+aiosqlite:////data/sequencer.db IMAGE run
# (/app is read-only to this user, so the signing secret must come from SEQUENCER_SECRET or
# SEQUENCER_SECRET_FILE rather than be generated into the project folder.)
RUN useradd --system --uid 10001 --home-dir /data --create-home --shell /usr/sbin/nologin sequencer
USER sequencer

ENV SEQUENCER_SEQUENCES_DIR=/app/sequences \
    SEQUENCER_TEMPLATES_DIR=/app/templates

# `sequencer web` (unsubscribe links, API, /healthz, /metrics) listens here in compose.
EXPOSE 8080

ENTRYPOINT ["sequencer"]
CMD ["--help"]
