# agentrun: the gRPC server (and, with `agentrun serve`, the gateway) or the gateway alone.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY cli cli
COPY common common
COPY server server
COPY gateway gateway
COPY gen gen
RUN pip install --no-cache-dir .
EXPOSE 50051 8080
CMD ["agentrun", "serve", "--listen", "0.0.0.0:50051", "--gateway-listen", "0.0.0.0:8080"]
