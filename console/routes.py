"""Console sign-in and sign-out. The queue, review and history pages have their own modules."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from console import auth
from console.rendering import render
from gateway.deps import DeskDep, RuntimeDep
from gateway.review.logins import TooManyFailures

router = APIRouter(prefix="/console", include_in_schema=False)


def console_path(target: str | None) -> str:
    # Only paths inside the console: a login link must not bounce agents to another site.
    if target and target.startswith("/console") and not target.startswith("//"):
        return target
    return "/console/"


@router.get("/login", name="console_login")
async def login_page(request: Request, next: str | None = None) -> Response:
    return render(request, "login.html", {"next": console_path(next), "error": None})


@router.post("/login")
async def login(
    request: Request,
    runtime: RuntimeDep,
    desk: DeskDep,
    username: Annotated[str, Form(max_length=200)],
    password: Annotated[str, Form(max_length=1000)],
    next: Annotated[str, Form()] = "/console/",
) -> Response:
    address = request.client.host if request.client else "unknown"
    try:
        agent = await desk.sign_in(username.strip(), password, address)
    except TooManyFailures as exc:
        minutes = max(1, exc.retry_after // 60)
        context = {"next": console_path(next), "error": f"Too many failed logins. Try again in {minutes} minutes."}
        return render(request, "login.html", context, status_code=429, headers={"Retry-After": str(exc.retry_after)})
    if agent is None:
        context = {"next": console_path(next), "error": "Unknown username or wrong password."}
        return render(request, "login.html", context, status_code=401)
    await auth.start_session(request, desk, agent)
    return RedirectResponse(console_path(next), status_code=303)


@router.post("/logout")
async def logout(request: Request, desk: DeskDep) -> Response:
    """Ends the session server-side: a copy of the cookie kept from before stops working too."""
    await auth.end_session(request, desk)
    return RedirectResponse("/console/login", status_code=303)
