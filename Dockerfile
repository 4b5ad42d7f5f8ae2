# One image for every mailctl process (docker-compose.yml picks the module per service).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml requirements.lock ./
COPY core ./core
COPY schemas ./schemas
COPY services ./services
# The lock pins every transitive dependency to the versions the project is tested with.
RUN pip install --no-cache-dir -c requirements.lock . \
 && useradd --system --uid 10001 mailctl \
 && install -d -o mailctl /data
USER mailctl
