FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY relay ./relay
COPY service ./service
COPY workers ./workers
COPY schemas ./schemas
COPY emulators ./emulators
RUN pip install . && useradd --create-home relay
COPY Procfile consent-relay.compose.toml ./
USER relay
EXPOSE 8000
CMD ["gunicorn", "--config", "python:service.http.gunicorn_conf", "service:create_app()"]
