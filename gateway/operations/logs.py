"""One logging configuration for the gateway and uvicorn (access log included), in every worker: JSON lines by
default (`hitl serve --log-format text` for plain ones), each line with its time, level, logger and message, and
the ids of what it is about where they are known (the request's, the exchange's, the review's), bound for the
rest of the request by `bind`. Never a prompt, an answer or a secret: log lines carry ids and figures only."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any, Literal

Format = Literal["json", "text"]
IDS = ("request_id", "exchange_id", "review_id")
_bound: ContextVar[dict[str, str]] = ContextVar("hitl_log_ids", default={})  # noqa: B039 (never mutated)


def bind(**ids: str | None) -> None:
    """Name what the rest of this request (this task and those it starts) is about, in every line it logs."""
    _bound.set({**_bound.get(), **{name: value for name, value in ids.items() if value}})


class BoundIds(logging.Filter):
    """Adds the bound ids to each record: those known (a JSON line has no key for the others), or every one with
    `fill` where unknown (a text line keeps its columns)."""

    def __init__(self, fill: str | None = None) -> None:
        super().__init__()
        self.fill = fill

    def filter(self, record: logging.LogRecord) -> bool:
        bound = _bound.get()
        for name in IDS:
            value = bound.get(name, self.fill)
            if value is not None:
                setattr(record, name, value)
        return True


def config(form: Format = "json", level: str = "INFO") -> dict[str, Any]:
    """The `logging.config.dictConfig` both the gateway and uvicorn use (uvicorn applies it in each worker)."""
    formatter: dict[str, Any]
    if form == "json":
        formatter = {  # the bound ids, where known, come as the record's extra fields
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            "datefmt": "%Y-%m-%dT%H:%M:%S%z",
        }
    else:
        formatter = {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}
    handler = {"class": "logging.StreamHandler", "formatter": "line", "filters": ["ids"], "stream": "ext://sys.stderr"}
    quiet = {"handlers": ["default"], "level": level, "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"ids": {"()": BoundIds, "fill": None if form == "json" else "-"}},
        "formatters": {"line": formatter},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            "uvicorn": quiet,
            "uvicorn.error": {"level": level},
            "uvicorn.access": quiet,
            # Migrations say which they ran; alembic's plugin set-up is not news.
            "alembic": {"level": "WARNING"},
            "alembic.runtime.migration": {"level": level},
        },
    }
