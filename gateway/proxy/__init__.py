"""The request path: the OpenAI-compatible API, request parsing, upstream adapters, policy, exchanges,
holds and the completions clients receive."""
