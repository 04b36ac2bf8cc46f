# The phonefleet server. With DATABASE_URL set it uses that PostgreSQL (docker-compose.yml does);
# without it, it starts an embedded PostgreSQL in /data.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY phonefleet ./phonefleet
COPY migrations ./migrations
RUN pip install --no-cache-dir . && useradd --create-home phonefleet && mkdir /data && chown phonefleet /data
USER phonefleet
ENV PHONEFLEET_HOST=0.0.0.0 PHONEFLEET_PORT=8700 PHONEFLEET_DATA_DIR=/data
EXPOSE 8700
CMD ["phonefleet-server"]
