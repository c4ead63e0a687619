# The API image: gunicorn serving app:create_app() as an unprivileged user.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WEB_BIND=0.0.0.0:8000
# Metrics on the compose network only (never published): app, relay and
# worker each in containers of their own (infra/metrics_server.py).
ENV APP_METRICS_BIND=0.0.0.0:9101 \
    RELAY_METRICS_BIND=0.0.0.0:9102 \
    WORKER_METRICS_BIND=0.0.0.0:9103

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt \
    && groupadd --system --gid 10001 api \
    && useradd --system --no-create-home --uid 10001 --gid 10001 api

COPY --chown=root:root *.py init.sql ./
COPY --chown=root:root migrations/ migrations/
COPY --chown=root:root blueprints/ blueprints/
COPY --chown=root:root cache/ cache/
COPY --chown=root:root infra/ infra/

USER 10001:10001
EXPOSE 8000 9101 9102 9103
# Exec form: gunicorn is PID 1 and receives the stop signal itself.
CMD ["gunicorn", "-c", "gunicorn.conf.py", "app:create_app()"]
