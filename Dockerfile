# The gateway without the bundled model: point HITL_UPSTREAMS at a real provider.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY console ./console
COPY prompts ./prompts
RUN pip install --no-cache-dir .
ENV HITL_HOST=0.0.0.0 HITL_PORT=8000
EXPOSE 8000
CMD ["hitl", "serve"]
