# The project's image: the `eventstore` CLI, without the dev extras.
#   docker build -t eventstore:local .
#   docker run --rm -e EVENTSTORE_DATABASE_URL=postgresql://... eventstore:local migrate

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/venv/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/venv /opt/venv
# A fixed uid, so volumes can be given the right owner.
RUN groupadd --system --gid 10001 eventstore \
    && useradd --system --uid 10001 --gid eventstore --home-dir /data --no-create-home eventstore \
    && mkdir /data \
    && chown eventstore:eventstore /data
# The working directory holds the embedded SQLite file when no database is configured.
WORKDIR /data
USER eventstore
ENTRYPOINT ["eventstore"]
CMD ["--help"]
