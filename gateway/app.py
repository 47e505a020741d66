"""The application factory. Nothing is built at import time: `create_app(settings)` makes the app, and
its lifespan makes the engine, the HTTP client and the upstreams.

The console is not imported here: it registers itself under the `hitl_gateway.plugins` entry point,
and every installed plugin is handed the app to add its routes and middleware.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from importlib.metadata import entry_points

from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError

from gateway import db, errors, http, inserts, memory, notices, policy
from gateway.api import health, served
from gateway.api import metrics as metrics_api
from gateway.clock import Clock, SystemClock
from gateway.conversation import messages, upstream
from gateway.holds import HoldHub
from gateway.learning import versions
from gateway.notifications import watch
from gateway.operations import schedule, tracing
from gateway.operations.metrics import CountRequests, Metrics
from gateway.policy import PolicyError
from gateway.prompt_templates import Prompts
from gateway.relay.apikeys import KeyCache
from gateway.relay.service import Relay
from gateway.requestid import RequestIdMiddleware
from gateway.review.desk import ReviewDesk
from gateway.review.logins import LoginLimits
from gateway.review.sandbox import Sandbox
from gateway.review.tiers import Tiers
from gateway.runtime import Runtime
from gateway.scoring.consistency import ConsistencyChecker
from gateway.scoring.scorer import Scorer
from gateway.scoring.selfcheck import Judge, SelfChecker
from gateway.settings import Settings
from gateway.shutdown import on_exit_signal
from gateway.webhooks.outbox import Outbox
from gateway.webhooks.sender import Sender

log = logging.getLogger("hitl.app")
PLUGIN_GROUP = "hitl_gateway.plugins"


@asynccontextmanager
async def background(runtime: Runtime, learned: int | None) -> AsyncIterator[None]:
    """The process's loops: its one waiter loop (the hold hub's batched poll), on PostgreSQL its one LISTEN
    connection for decisions made by other processes, the webhook sender (which delivers only while this
    process holds the lease), the one that makes decisions whose undo window has closed, the one that follows
    the policy version in force (`learned`: the one routing now), the one that warns of deadlines a tier's
    `notify.deadline` asks about, and the scheduled `hitl learn`, `hitl purge` and `hitl notify` when they are on.
    On the way out, every waiting client is answered first."""
    tasks = [
        asyncio.create_task(runtime.holds.run(), name="hold-poll"),
        asyncio.create_task(follow_policy(runtime, learned), name="policy-versions"),
    ]
    if runtime.listener is not None:
        tasks.append(asyncio.create_task(runtime.listener.run(), name="decision-notices"))
    if runtime.sender is not None:
        tasks.append(asyncio.create_task(runtime.sender.run(), name="webhook-sender"))
    for job in schedule.jobs(runtime.settings):
        running = schedule.run(job, runtime.sessions, runtime.settings, runtime.clock)
        tasks.append(asyncio.create_task(running, name=job.name))
    warnings = watch.watch(runtime.sessions, lambda: runtime.policy, runtime.settings.notify, runtime.clock)
    tasks.append(asyncio.create_task(warnings, name="deadline-warnings"))
    if runtime.settings.undo_seconds > 0:
        interval = min(runtime.settings.hold.poll_interval, runtime.settings.undo_seconds)
        tasks.append(asyncio.create_task(runtime.desk.run_settling(interval), name="undo-windows"))
    try:
        drain = runtime.settings.drain_seconds
        with on_exit_signal(runtime.holds.close, drain=drain, draining=runtime.start_draining):
            yield
    finally:
        runtime.holds.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def follow_policy(runtime: Runtime, learned: int | None) -> None:
    """Every `HITL_POLICY_REFRESH_SECONDS`, route by the policy version now in force if it changed (`hitl learn`
    applied one, `hitl policy rollback` took one back). A version that cannot be used is logged and skipped."""
    while True:
        await asyncio.sleep(runtime.settings.policy_refresh_seconds)
        try:
            routed = await versions.routing(runtime.sessions, runtime.policy, starting=False)
        except PolicyError as exc:
            log.error("policy_version_unusable error=%s", type(exc).__name__)
            continue
        except (OSError, SQLAlchemyError) as exc:
            log.warning("policy_version_check_failed error=%s", type(exc).__name__)
            continue
        if routed.learned != learned:
            log.info(
                "policy_version_changed from=%s to=%s version=%s",
                learned or "file",
                routed.learned or "file",
                routed.policy.version,
            )
            runtime.relay.use(routed.policy, routed.calibrators)
            learned = routed.learned


def from_environment() -> FastAPI:
    """The app each `hitl serve --workers N` process serves, with settings from the environment (and
    `HITL_CONFIG`), as the parent's."""
    app = create_app(Settings())
    memory.tune_for_serving()
    return app


def create_app(settings: Settings, *, plugins: bool = True, clock: Clock | None = None) -> FastAPI:
    """Build the gateway. Raises `PolicyError` for a policy file that cannot be used. `clock` is what
    claims and logins read the time from (tests move it; the default is the system's)."""
    routing = policy.load(settings.policy_path)
    prompts = Prompts()
    for name in ("placeholder", "selfcheck", "selfcheck_verbal", "consistency", "consistency_verbal"):
        prompts.get(name)  # a missing template should stop start-up, not a held request
    clock = clock or SystemClock()
    tiers = Tiers(held=tuple(routing.tiers), audit=settings.audit.tier)
    if settings.secret_key is None:
        log.warning("HITL_SECRET_KEY is not set: console logins end when this process stops")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = db.create_engine(settings.database_url)
        async with AsyncExitStack() as stack:
            stack.callback(tracing.configure(settings.tracing))  # flushes the spans on the way out
            stack.push_async_callback(engine.dispose)
            reader = db.create_reader(settings.database_url, engine)
            if reader is not engine:
                stack.push_async_callback(reader.dispose)
            sessions = db.session_factory(engine)
            writer = await stack.enter_async_context(inserts.opened(engine))
            routed = await versions.routing(sessions, routing)
            client = await stack.enter_async_context(http.client())
            upstreams = upstream.build(settings, client)
            stack.callback(upstreams.close)
            judge = Judge(prompts, upstreams)
            scorer = Scorer(
                settings=settings,
                selfcheck=SelfChecker(settings.selfcheck, judge),
                consistency=ConsistencyChecker(settings.consistency, settings.selfcheck.judge, judge),
            )
            holds = HoldHub(sessions, settings.hold.poll_interval, metrics)
            sandbox = Sandbox(settings.check_seconds)
            stack.callback(sandbox.close)
            desk = ReviewDesk(
                sessions=sessions,
                holds=holds,
                tiers=tiers,
                lease=settings.claim_lease,
                clock=clock,
                logins=LoginLimits(settings.login_max_failures, settings.login_window),
                sandbox=sandbox,
                undo_seconds=settings.undo_seconds,
                policy_sla=dict(routing.spec.sla),
                metrics=metrics,
                quality=settings.quality,
            )
            relay = Relay(
                settings=settings,
                sessions=sessions,
                inserts=writer,
                upstreams=upstreams,
                policy=routed.policy,
                calibrators=routed.calibrators,
                holds=holds,
                prompts=prompts,
                scorer=scorer,
                clock=clock,
                metrics=metrics,
            )
            app.state.runtime = runtime = Runtime(
                settings=settings,
                engine=engine,
                reader=reader,
                sessions=sessions,
                relay=relay,
                policy=routing,
                holds=holds,
                prompts=prompts,
                scorer=scorer,
                desk=desk,
                clock=clock,
                listener=notices.Listener(settings.database_url, holds.notify, holds.poll)
                if db.is_postgres(settings.database_url)
                else None,
                outbox=Outbox(sessions, clock),
                keys=KeyCache(sessions, clock, settings.key_cache_seconds),
                sender=Sender(sessions, client, settings.webhooks, clock, metrics)
                if settings.webhooks.enabled
                else None,
            )
            stack.push_async_callback(relay.drain)
            await stack.enter_async_context(background(runtime, routed.learned))
            yield

    metrics = Metrics(settings.offered(), [upstream.name for upstream in settings.upstreams] or settings.offered())
    app = FastAPI(title="hitl-gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.metrics = metrics
    app.state.secret_key = settings.secret_key.get_secret_value() if settings.secret_key else secrets.token_urlsafe(32)
    # Anthropic's clients read Anthropic's shape.
    errors.install(app, {"/v1/messages": messages.error_body}, served.listing())
    for router in served.ROUTERS:
        app.include_router(router)
    app.include_router(health.router)
    app.include_router(metrics_api.router)
    if plugins:
        for entry in entry_points(group=PLUGIN_GROUP):
            entry.load()(app, settings)
    app.add_middleware(CountRequests, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    return app
