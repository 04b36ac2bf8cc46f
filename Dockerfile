# The phonefleet server with its dashboard. With DATABASE_URL set it uses that PostgreSQL
# (docker-compose.yml does); without it, it starts an embedded PostgreSQL in /data.
FROM node:20-slim AS dashboard
WORKDIR /dashboard
COPY dashboard/package.json dashboard/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY dashboard ./
RUN npm run build

FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY phonefleet ./phonefleet
COPY migrations ./migrations
COPY --from=dashboard /dashboard/dist ./dashboard/dist
RUN pip install --no-cache-dir . && useradd --create-home phonefleet && mkdir /data && chown phonefleet /data
USER phonefleet
ENV PHONEFLEET_HOST=0.0.0.0 PHONEFLEET_PORT=8700 PHONEFLEET_DATA_DIR=/data \
    PHONEFLEET_DASHBOARD_DIST=/app/dashboard/dist
EXPOSE 8700
CMD ["phonefleet-server"]
