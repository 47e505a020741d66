"""Health for load balancers and Kubernetes, unauthenticated: `/health/live` (the process serves) and
`/health/ready` (the database answers, its schema is this code's, an upstream is configured, and the replica is
not draining after SIGTERM). Each check's result is named in the body; nothing else is said."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from gateway import db
from gateway.deps import RuntimeDep

router = APIRouter(prefix="/health")


@router.get("/live")
async def live() -> JSONResponse:
    return JSONResponse({"status": "live"})


@router.get("/ready")
async def ready(runtime: RuntimeDep) -> JSONResponse:
    checks = {"database": False, "migrations": False, "upstreams": bool(runtime.settings.offered())}
    try:
        revision = await db.schema_revision(runtime.engine)
        checks["database"] = True
        checks["migrations"] = revision == db.head_revision()
    except SQLAlchemyError:
        pass  # the database is down or unreachable: not ready, and the body says which check failed
    checks["not_draining"] = not runtime.draining
    ok = all(checks.values())
    return JSONResponse({"status": "ready" if ok else "not_ready", "checks": checks}, status_code=200 if ok else 503)
