"""The request path: a client's request through the upstream, scoring and policy to its stored exchange and the
answer it gets, with its retries and API keys."""
