# The gateway without the bundled model: point HITL_UPSTREAMS at a real provider.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY gateway ./gateway
COPY console ./console
COPY prompts ./prompts
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /data --create-home hitl
# Not root: the process owns only /data (the working folder, where the embedded SQLite default lives).
USER 10001:10001
WORKDIR /data
ENV HITL_HOST=0.0.0.0 HITL_PORT=8000
EXPOSE 8000
CMD ["hitl", "serve"]
