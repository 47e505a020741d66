"""The console in a real browser: Debian's chromium driven by the playwright package (never a downloaded
browser). An agent logs in, works the live queue with the keyboard, edits an answer and the waiting
client (the real OpenAI SDK) receives the edit; a corpus of hostile model outputs runs through the
queue and review pages without executing or breaking the layout. Screenshots go to `artifacts/`.

Marked slow; CI installs chromium and runs them. Without chromium they skip, unless
HITL_REQUIRE_BROWSER=1 (set by .ci/run), where a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from sqlmodel import col, select

from gateway.app import create_app
from gateway.models import Decision, Role
from gateway.settings import HoldSettings
from tests import factories
from tests.factories import MODEL

pytestmark = pytest.mark.slow
CHROMIUM = os.environ.get("HITL_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).parents[2] / "artifacts" / "screenshots"
HOSTILE = json.loads((Path(__file__).parents[1] / "data" / "hostile_outputs.json").read_text())
HOSTILE.append("B" * 20_000)  # one very long line with nowhere to break

if not Path(CHROMIUM).exists():
    if os.environ.get("HITL_REQUIRE_BROWSER") == "1":
        raise RuntimeError(f"HITL_REQUIRE_BROWSER=1 but {CHROMIUM} is missing: apt-get install chromium")
    pytest.skip(f"no chromium at {CHROMIUM}", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def live(make_settings, upstream: factories.UpstreamMock) -> Iterator[str]:
    """The gateway on a real port, in this process, so the respx-mocked upstream serves it."""
    upstream.pass_loopback()  # the SDK's calls to the gateway itself are real
    settings = make_settings(hold=HoldSettings(default_wait=30, max_wait=60, poll_interval=0.2, keepalive=1))
    with factories.serving(create_app(settings)) as url:
        yield url


@pytest.fixture
def page() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        context = browser.new_context(viewport={"width": 1440, "height": 900})  # the agent's screen in the issue
        tab = context.new_page()
        tab.on("dialog", lambda dialog: pytest.fail(f"a dialog opened: {dialog.message}"))
        yield tab
        context.close()
        browser.close()


def log_in(page, live: str, username: str, password: str) -> None:
    page.goto(f"{live}/console/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(f"{live}/console/**")


def mock_answer(upstream: factories.UpstreamMock, text: str, logprob: float = -0.2) -> None:
    body = factories.completion_body(text, logprob=logprob)
    upstream.answer(body)


def screenshot(page, name: str, *, full_page: bool = True) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def test_agent_works_the_queue_with_the_keyboard_and_the_client_gets_the_edit(
    live: str, page, api_key: str, upstream: factories.UpstreamMock, agent
) -> None:
    log_in(page, live, *agent)
    page.goto(f"{live}/console/?tier=agent")
    page.wait_for_selector("text=Nothing waiting in this tier.")

    # A client asks through the real OpenAI SDK and waits; the queue shows its review without a reload.
    mock_answer(upstream, "The capital of France is Lyon.")
    sdk = openai.OpenAI(base_url=f"{live}/v1", api_key=api_key, max_retries=0, timeout=60)
    received: dict[str, object] = {}

    def ask() -> None:
        completion = sdk.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            extra_body={"hitl": {"wait": 45}},
        )
        received["text"] = completion.choices[0].message.content
        received["hitl"] = completion.model_extra.get("hitl") if completion.model_extra else None

    client = threading.Thread(target=ask)
    client.start()
    row = page.wait_for_selector("#queue-rows tr[data-href]", timeout=15_000)
    assert "Lyon" in row.inner_text()
    assert page.inner_text('a[data-tier="agent"] .count') == "1"
    screenshot(page, "queue")

    page.keyboard.press("?")
    assert page.is_visible("#cheatsheet")
    page.keyboard.press("Escape")
    page.keyboard.press("j")
    assert "selected" in (row.get_attribute("class") or "")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live}/console/reviews/**")
    assert page.is_visible("text=You hold this review")
    assert page.locator("#candidate .tok").count() >= 6  # the heat map, one span per token
    assert "alternatives" in (page.locator("#candidate .tok").first.get_attribute("title") or "")
    assert page.is_visible("strong.waiting")  # the client is still waiting
    screenshot(page, "review")

    page.keyboard.press("e")
    assert page.evaluate("document.activeElement.id") == "answer"
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("The capital of France is Paris.")  # typing "a", "e", "o", "s" must not trigger anything
    page.wait_for_selector("#diff pre ins")
    assert "Paris." in page.inner_text("#diff pre ins") and "Lyon." in page.inner_text("#diff pre del")
    page.keyboard.press("ControlOrMeta+Enter")
    page.wait_for_url(f"{live}/console/?tier=agent&decided=**")

    client.join(30)
    assert received["text"] == "The capital of France is Paris."
    assert isinstance(received["hitl"], dict) and received["hitl"]["status"] == "edited"
    page.wait_for_selector("text=Nothing waiting in this tier.")

    # The next one: "n" takes it from the queue, "a" approves it, and that client has its answer too.
    mock_answer(upstream, "Paris is the capital of France.")
    client = threading.Thread(target=ask)
    client.start()
    page.wait_for_selector("#queue-rows tr[data-href]", timeout=15_000)
    page.keyboard.press("n")
    page.wait_for_url(f"{live}/console/reviews/**")
    page.keyboard.press("a")
    page.wait_for_url(f"{live}/console/?tier=agent&decided=**")
    client.join(30)
    assert received["text"] == "Paris is the capital of France."
    assert isinstance(received["hitl"], dict) and received["hitl"]["status"] == "approved"


def test_hostile_model_output_never_runs_and_the_layout_holds(
    live: str, page, api_key: str, upstream: factories.UpstreamMock, agent
) -> None:
    review_ids = []
    with httpx.Client(base_url=live, headers={"Authorization": f"Bearer {api_key}"}) as http:
        for payload in HOSTILE:
            mock_answer(upstream, payload)
            body = {"model": MODEL, "messages": [{"role": "user", "content": payload}], "hitl": {"wait": 0}}
            review_ids.append(http.post("/v1/chat/completions", json=body).json()["hitl"]["review_id"])
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text) if "Content Security" in message.text else None)
    log_in(page, live, *agent)
    screen = page.viewport_size["width"]

    def assert_safe(where: str) -> None:
        assert page.evaluate("window.__pwned === undefined"), f"{where}: a payload ran"
        assert page.locator("main script, main img, main iframe, main svg, main meta, main style").count() == 0, where
        assert page.locator("#evil-link").count() == 0, where
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= screen, f"{where}: the page is {width}px wide; a long line broke the layout"
        assert page.is_visible("header.top") and page.is_visible("main"), where

    page.goto(f"{live}/console/?tier=agent")
    assert page.locator("#queue-rows tr[data-href]").count() == len(HOSTILE)
    page.wait_for_timeout(300)  # give any payload (or hx-trigger="load") the chance to run
    assert_safe("queue")
    assert page.url.startswith(f"{live}/console/")  # no meta refresh, no htmx logout
    screenshot(page, "queue-hostile")

    for index, review_id in enumerate(review_ids):
        page.goto(f"{live}/console/reviews/{review_id}")
        page.wait_for_timeout(100)
        assert_safe(f"review {index}")
        assert page.is_visible("#decide-form button[value=approve]"), f"review {index}: the form is hidden"
        box = page.locator("#decide-form button[value=approve]").bounding_box()
        assert box is not None and box["x"] + box["width"] <= screen, f"review {index}: the form was pushed aside"
        if index == 0:
            screenshot(page, "review-hostile")
    # The text is shown, as text.
    page.goto(f"{live}/console/reviews/{review_ids[0]}")
    assert "<script>window.__pwned = 'script'</script>" in page.inner_text("#conversation")
    assert page.url.startswith(f"{live}/console/reviews/")  # still logged in: nothing posted a logout
    assert violations == []  # the policy never had to stop anything: nothing reached the page as markup


def test_a_held_tool_call_is_edited_in_its_json_editor_and_the_client_gets_the_call(
    make_settings, tmp_path: Path, page, api_key: str, upstream: factories.UpstreamMock, senior
) -> None:
    upstream.pass_loopback()
    policy = tmp_path / "policy.yaml"
    policy.write_text(factories.REFUNDS)
    refund = factories.tool_call("issue_refund", {"order_id": "42", "amount": 500}, "call_refund")
    upstream.answer(factories.completion_body(None, tool_calls=[refund]))
    schema = {
        "type": "object",
        "properties": {"order_id": {"type": "string"}, "amount": {"type": "number", "maximum": 100}},
        "required": ["order_id", "amount"],
    }
    tools = [{"type": "function", "function": {"name": "issue_refund", "parameters": schema}}]
    settings = make_settings(policy_path=policy, hold=HoldSettings(default_wait=30, max_wait=60, poll_interval=0.2))
    received: dict[str, object] = {}
    with factories.serving(create_app(settings)) as live:
        sdk = openai.OpenAI(base_url=f"{live}/v1", api_key=api_key, max_retries=0, timeout=60)

        def ask() -> None:
            try:
                completion = sdk.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": "Refund my order 42"}],
                    tools=tools,  # type: ignore[arg-type]
                    extra_body={"hitl": {"wait": 45}},
                )
                received["choice"] = completion.choices[0]
            except openai.OpenAIError as exc:
                received["error"] = exc

        client = threading.Thread(target=ask)
        client.start()
        log_in(page, live, *senior)
        page.goto(f"{live}/console/?tier=senior")
        page.wait_for_selector("#queue-rows tr[data-href]", timeout=15_000)
        assert "error" not in received, received
        page.keyboard.press("n")
        page.wait_for_url(f"{live}/console/reviews/**")
        assert "issue_refund" in (page.text_content("#candidate") or "") and page.is_visible(
            "#decide-form textarea.arguments"
        )
        screenshot(page, "review-tool-call")

        page.keyboard.press("e")  # into the first call's arguments
        assert page.evaluate("document.activeElement.name") == "arguments"
        page.keyboard.press("ControlOrMeta+a")
        page.keyboard.type('{"order_id": "42", "amount": 250}')
        page.keyboard.press("ControlOrMeta+Enter")
        page.wait_for_selector("p.error")
        assert "maximum of 100" in page.inner_text("p.error")  # the tool's schema from the request, checked
        assert page.input_value("textarea.arguments") == '{"order_id": "42", "amount": 250}'  # the draft is kept
        assert client.is_alive()  # nothing was sent

        page.fill("textarea.arguments", '{"order_id": "42", "amount": 50}')
        page.focus("textarea.arguments")
        page.keyboard.press("ControlOrMeta+Enter")
        page.wait_for_url(f"{live}/console/?tier=senior&decided=**")
        client.join(30)
    choice = received["choice"]
    assert choice.finish_reason == "tool_calls"  # type: ignore[attr-defined]
    (call,) = choice.message.tool_calls  # type: ignore[attr-defined]
    assert call.id == "call_refund" and json.loads(call.function.arguments) == {"order_id": "42", "amount": 50}


def test_a_login_forged_from_another_site_does_not_sign_the_victim_in(live: str, page, agent) -> None:
    """Login CSRF: a page on another site posts the console's login form with the attacker's credentials (here
    an agent's) as soon as the victim opens it. The browser sends no console cookie with a cross-site post,
    the console refuses it, and the victim is not signed in as anyone."""
    attacker = FastAPI()
    form = (
        f'<form id="f" method="post" action="{live}/console/login">'
        f'<input name="username" value="{agent[0]}"><input name="password" value="{agent[1]}">'
        '<input name="next" value="/console/"></form><script>document.getElementById("f").submit()</script>'
    )
    attacker.get("/")(lambda: HTMLResponse(form))
    with factories.serving(attacker) as evil:
        page.goto(live + "/console/login")  # the victim has the console's cookies from an earlier visit
        landed = page.goto(evil.replace("127.0.0.1", "localhost") + "/")  # another site
        page.wait_for_load_state()
        assert page.url.startswith(f"{live}/console/login") and "security token is missing" in page.content()
        assert landed is not None
        page.goto(f"{live}/console/")
        assert page.url.startswith(f"{live}/console/login")  # nobody is signed in


def hold_many(live: str, api_key: str, upstream: factories.UpstreamMock, answers: list[str], **extra: object) -> None:
    """Held answers for the agent tier, one per text, their clients gone (wait 0)."""
    with httpx.Client(base_url=live, headers={"Authorization": f"Bearer {api_key}"}) as http:
        for number, text in enumerate(answers):
            mock_answer(upstream, text)
            body = {"model": MODEL, "messages": [{"role": "user", "content": f"Question {number}: where is my order?"}]}
            reply = http.post("/v1/chat/completions", json={**body, "hitl": {"wait": 0}, **extra})
            assert reply.json()["hitl"]["status"] == "pending", reply.text


@pytest.mark.parametrize(("width", "height"), [(1440, 900), (1280, 720)])
def test_the_decision_bar_is_in_sight_without_scrolling(
    live: str, page, api_key: str, upstream: factories.UpstreamMock, agent, width: int, height: int
) -> None:
    page.set_viewport_size({"width": width, "height": height})
    long_answer = " ".join(f"Paragraph {n}: your order left the warehouse and is on its way." for n in range(400))
    hold_many(live, api_key, upstream, [long_answer])
    log_in(page, live, *agent)
    page.goto(f"{live}/console/?tier=agent")
    page.keyboard.press("n")
    page.wait_for_url(f"{live}/console/reviews/**")
    assert page.evaluate("window.scrollY") == 0 and page.evaluate("document.body.scrollHeight") > 3 * height
    for key in ("a", "e", "o", "s"):
        box = page.locator(f'#decision-bar button[data-key="{key}"]').bounding_box()
        assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= height, (key, box)
    if width == 1440:
        page.screenshot(path=str(ARTIFACTS / "review-long-answer.png"))  # the window, as the agent sees it


def test_each_decision_in_a_few_keys_and_the_next_review_opens(
    live: str, page, api_key: str, upstream: factories.UpstreamMock, agent, database_url: str
) -> None:
    """Approve, edit, canned override and escalate from the keyboard, timed from the first key to the next
    review on screen; the keystrokes are counted as pressed (typed text counts one per character). The
    figures go to artifacts/console_timings.json and the README."""
    page.set_viewport_size({"width": 1440, "height": 900})
    hold_many(live, api_key, upstream, [f"Your order {n} is lost." for n in range(30)])
    log_in(page, live, *agent)
    page.goto(f"{live}/console/")
    page.wait_for_selector("#queue-rows tr[data-href]")
    screenshot(page, "queue-30")
    page.keyboard.press("n")
    page.wait_for_url(f"{live}/console/reviews/**")

    def timed(name: str, keys: list[str], typed: str = "") -> dict[str, object]:
        before = page.url
        started = time.perf_counter()
        strokes = 0
        for key in keys:
            if key == "<type>":
                page.keyboard.type(typed)
                strokes += len(typed)
            else:
                page.keyboard.press(key)
                strokes += 1
        page.wait_for_url(lambda url: url != before and "/console/reviews/" in url and "decided=" in url)
        page.wait_for_selector("#decision-bar")
        return {"action": name, "keystrokes": strokes, "seconds": round(time.perf_counter() - started, 2)}

    timings = [
        timed("approve", ["a"]),
        timed("edit", ["e", "ControlOrMeta+a", "<type>", "ControlOrMeta+Enter"], "It is on its way."),
        timed("canned override", ["1", "ControlOrMeta+Enter"]),
        timed("escalate", ["s", "<type>", "ControlOrMeta+Enter"], "refund?"),
    ]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS.parent / "console_timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    print("\n" + "\n".join(f"{t['action']:16} {t['keystrokes']:>3} keys {t['seconds']:>5} s" for t in timings))
    assert timings[0]["keystrokes"] == 1 and timings[2]["keystrokes"] <= 4

    with factories.sync_session(database_url) as session:
        actions = [decision.action for decision in session.exec(select(Decision).order_by(col(Decision.id)))]
    assert actions == ["approve", "edit", "override", "escalate"]  # the canned one is an override

    skipped_from = page.url
    page.keyboard.press("n")  # skip: the next review of the tier, this one left for someone else
    page.wait_for_url(lambda url: url != skipped_from and "/console/reviews/" in url)

    page.keyboard.press("?")
    assert page.is_visible("#cheatsheet") and "Ctrl" in page.inner_text("#cheatsheet")
    page.screenshot(path=str(ARTIFACTS / "cheatsheet.png"))
    page.keyboard.press("Escape")
    page.keyboard.press("q")
    page.wait_for_url(f"{live}/console/?tier=agent")
    page.goto(f"{live}/console/history")
    screenshot(page, "history")


def test_a_lead_assigns_a_filtered_set_and_an_agent_approves_in_bulk(
    live: str, page, api_key: str, upstream: factories.UpstreamMock, agent, senior, database_url: str
) -> None:
    """Point 4 in a browser: a senior ticks every review shown and assigns them to an agent; the agent's "mine"
    tab lists them, it ticks two, sees what will be released, confirms, and the queue says so. Meanwhile a
    client waiting on another review shows as waiting, with its seconds ticking down."""
    page.set_viewport_size({"width": 1440, "height": 900})
    hold_many(live, api_key, upstream, [f"Your parcel {n} arrives tomorrow." for n in range(3)])
    log_in(page, live, *senior)
    page.goto(f"{live}/console/?tier=agent")
    page.check("#pick-all")
    page.select_option('select[name="to"]', agent[0])
    page.click('button[name="do"][value="assign"]')
    page.wait_for_url(f"{live}/console/?tier=agent&assigned=3")
    assert page.locator("#queue-rows td", has_text=agent[0]).count() == 3

    page.context.clear_cookies()
    log_in(page, live, *agent)
    page.goto(f"{live}/console/?mine=true")
    boxes = page.locator('#queue-rows input[name="review_id"]')
    assert boxes.count() == 3
    boxes.nth(0).check()
    boxes.nth(1).check()

    # A client asks meanwhile and waits: the live refresh adds its row and keeps the ticks.
    mock_answer(upstream, "Soon.")
    waiting = threading.Thread(
        target=lambda: httpx.post(
            f"{live}/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "When?"}], "hitl": {"wait": 8}},
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=30,
        )
    )
    waiting.start()
    page.goto(f"{live}/console/?tier=agent")
    marker = page.wait_for_selector("#queue-rows [data-waiting] [data-deadline]", timeout=10_000)
    first = int(marker.inner_text())
    page.wait_for_timeout(2100)
    assert int(page.inner_text("#queue-rows [data-waiting] [data-deadline]")) <= first - 1  # it ticks
    # The client still on the line comes first, before the older reviews whose clients left.
    assert page.locator("#queue-rows tr[data-href]").first.locator("[data-waiting]").count() == 1
    screenshot(page, "queue-waiting")

    page.goto(f"{live}/console/?mine=true")
    boxes = page.locator('#queue-rows input[name="review_id"]')
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.click('button[name="do"][value="approve"]')
    page.wait_for_selector("#confirm-approve")
    assert page.inner_text("#confirm-approve") == "Approve 2 answers"
    assert page.locator("table.bulk tbody tr").count() == 2
    # Meanwhile the senior opens one of the two: it is left out, and the queue says so; the other goes.
    taken = page.locator("table.bulk tbody tr").nth(1).get_attribute("id").removeprefix("bulk-")  # type: ignore[union-attr]
    with httpx.Client(base_url=live, timeout=30) as console:
        token = factories.csrf_token(console.get("/console/login").text)
        login = {"username": senior[0], "password": senior[1], "csrftoken": token, "next": "/console/"}
        assert console.post("/console/login", data=login).status_code == 303
        assert console.get(f"/console/reviews/{taken}").status_code == 200
    page.click("#confirm-approve")
    page.wait_for_url(f"{live}/console/?mine=true&approved=1&left_out=1")
    assert "1 left out: someone else had them open" in page.inner_text("main")
    assert page.locator('#queue-rows input[name="review_id"]').count() == 2
    waiting.join(30)
    with factories.sync_session(database_url) as session:
        approved = session.exec(select(Decision).where(Decision.action == "approve")).all()
    assert len(approved) == 1 and approved[0].review_id != taken


def test_an_earlier_decision_is_one_key_from_the_draft_and_the_guidelines_one_key_away(
    live: str, page, api_key: str, upstream: factories.UpstreamMock, agent
) -> None:
    ids = []
    for answer in ("Lyon.", "Marseille."):
        mock_answer(upstream, answer)
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Capital of France?"}], "hitl": {"wait": 0}}
        reply = httpx.post(f"{live}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"})
        ids.append(reply.json()["hitl"]["review_id"])
    log_in(page, live, *agent)
    page.goto(f"{live}/console/reviews/{ids[0]}")
    page.keyboard.press("e")
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("Paris. 東京ではありません。")
    page.keyboard.press("ControlOrMeta+Enter")
    page.wait_for_url(f"{live}/console/reviews/{ids[1]}?decided=**")  # the same question, asked again
    assert "Paris. 東京ではありません。" in page.inner_text("#precedents")
    page.keyboard.press("p")
    assert page.evaluate("document.activeElement.id") == "answer"
    assert page.input_value("#answer") == "Paris. 東京ではありません。"
    page.wait_for_selector("#diff pre ins")
    page.keyboard.press("Escape")  # out of the answer box
    page.keyboard.press("Shift+Digit1")
    page.keyboard.press("Shift+Digit3")
    page.keyboard.press("Shift+Digit1")  # ticked again: unticked
    ticked = page.eval_on_selector_all("input[name=tags]:checked", "boxes => boxes.map(box => box.value)")
    assert ticked == ["tone"]  # the third reason tag, by its key
    page.keyboard.press("g")
    assert page.is_visible("#guidelines-dialog") and "HITL_GUIDELINES_PATH" in page.inner_text("#guidelines-dialog")
    screenshot(page, "review-memory-and-guidelines")


def titled(page, wanted: Callable[[str], bool], seconds: float = 20) -> None:
    """Wait until the page's title is as wanted (the console's CSP refuses playwright's evaluated predicates)."""
    deadline = time.monotonic() + seconds
    while not wanted(page.title()):
        assert time.monotonic() < deadline, page.title()
        page.wait_for_timeout(200)


def test_a_client_about_to_time_out_raises_the_alert_and_the_tone_can_be_turned_off(
    make_settings, page, api_key: str, upstream: factories.UpstreamMock, agent
) -> None:
    upstream.pass_loopback()
    settings = make_settings(hold=HoldSettings(default_wait=8, max_wait=60, poll_interval=0.2), alert_seconds=30)
    with factories.serving(create_app(settings)) as live:
        log_in(page, live, *agent)
        page.goto(f"{live}/console/?tier=agent")
        assert not page.title().startswith("(")

        def wait_for_answer() -> None:
            mock_answer(upstream, "Lyon.")
            body = {"model": MODEL, "messages": [{"role": "user", "content": "Capital?"}], "hitl": {"wait": 8}}
            httpx.post(
                f"{live}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
            )

        first = threading.Thread(target=wait_for_answer)
        first.start()
        titled(page, lambda title: title.startswith("(1) about to time out"))
        assert page.evaluate("document.getElementById('favicon').href").startswith("data:image/png")
        assert page.evaluate("document.body.dataset.tones") == "1"
        assert "alerting" in (page.get_attribute("body", "class") or "")
        screenshot(page, "queue-alert")
        page.click("#sound-toggle")
        assert page.inner_text("#sound-toggle") == "Sound off"
        second = threading.Thread(target=wait_for_answer)
        second.start()
        titled(page, lambda title: title.startswith("(2) about to time out"))
        assert page.evaluate("document.body.dataset.tones") == "1"  # the second client: no tone, sound is off
        first.join(30)
        second.join(30)
        titled(page, lambda title: not title.startswith("("))  # both clients got the placeholder
        assert not page.evaluate("document.getElementById('favicon').href").startswith("data:")


SCREENS = {"1440x900": (1440, 900), "1280x720": (1280, 720), "768": (768, 1024), "390": (390, 844)}


def in_view(page, selector: str) -> bool:
    """The element's box lies within the window (scrolled as it is now)."""
    box = page.evaluate(
        "s => { const r = document.querySelector(s).getBoundingClientRect();"
        " return [r.top, r.bottom, r.left, r.right, innerHeight, innerWidth]; }",
        selector,
    )
    top, bottom, left, right, height, width = box
    return top >= 0 and bottom <= height and left >= 0 and right <= width


@pytest.mark.parametrize("screen", list(SCREENS))
def test_one_screen_to_decide_and_no_page_wider_than_the_window(
    live: str, page, api_key: str, upstream: factories.UpstreamMock, agent, senior, screen: str
) -> None:
    width, height = SCREENS[screen]
    page.set_viewport_size({"width": width, "height": height})
    conversation = [
        {"role": "system", "content": "You are the support assistant of a parcel company."},
        {"role": "user", "content": "My parcel 4471 arrived damaged and the box was open. What can I do?"},
    ]
    long_answer = "\n\n".join(f"Step {n}: " + "please keep the box and the label " * 6 for n in range(1, 7))
    mock_answer(upstream, long_answer)
    body = {"model": MODEL, "messages": conversation, "hitl": {"wait": 0}}
    review_id = httpx.post(
        f"{live}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"}
    ).json()["hitl"]["review_id"]
    log_in(page, live, *agent)
    for name, path in (
        ("queue", "/console/?tier=agent"),
        ("history", "/console/history"),
        ("review", f"/console/reviews/{review_id}"),
    ):
        page.goto(f"{live}{path}")
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, (path, overflow)
        screenshot(page, f"{name}-{screen}")

    page.keyboard.press("e")
    page.keyboard.press("End")
    page.keyboard.type(" Thank you.")
    page.wait_for_selector("#diff pre ins")
    for control in ('button[data-key="a"]', 'button[data-key="e"]', 'button[data-key="o"]'):
        assert in_view(page, control), (screen, control)  # the decision bar, whatever the width
    if width >= 1280:
        # Both sides in view while typing: the question, the candidate's start, the answer box and the diff.
        for part in ("#answer", "#diff", ".message:last-of-type", "#candidate"):
            assert page.evaluate(
                "s => { const r = document.querySelector(s).getBoundingClientRect();"
                " return r.bottom > 0 && r.top < innerHeight; }",
                part,
            ), (screen, part)
        assert in_view(page, "#answer")
    screenshot(page, f"review-editing-{screen}", full_page=False)  # what the agent sees while typing

    # The escalation's reason is at the top of the page the senior opens.
    page.keyboard.press("Escape")
    page.fill("#comment", "Is a damaged parcel refunded or replaced?")
    page.click('button[data-key="s"]')
    page.wait_for_url(f"{live}/console/**")
    log_in(page, live, *senior)
    page.goto(f"{live}/console/reviews/{review_id}")
    assert in_view(page, "#escalated")
    assert "Is a damaged parcel refunded or replaced?" in page.inner_text("#escalated")


def test_u_takes_a_decision_back_within_its_window(
    make_settings, page, api_key: str, upstream: factories.UpstreamMock, agent, database_url: str
) -> None:
    upstream.pass_loopback()
    with factories.serving(create_app(make_settings(undo_seconds=60))) as live:
        mock_answer(upstream, "Lyon.")
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Capital?"}], "hitl": {"wait": 0}}
        reply = httpx.post(f"{live}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"})
        review_id = reply.json()["hitl"]["review_id"]
        log_in(page, live, *agent)
        page.goto(f"{live}/console/reviews/{review_id}")
        page.keyboard.press("e")
        page.keyboard.press("ControlOrMeta+a")
        page.keyboard.type("Paris, not Lyon.")
        page.keyboard.press("ControlOrMeta+Enter")
        page.wait_for_url(f"{live}/console/?tier=agent&decided=**")
        assert page.is_visible("#undo-form")
        page.keyboard.press("u")
        page.wait_for_selector("#undone")
        assert page.input_value("#answer") == "Paris, not Lyon."  # nothing typed is lost
        with factories.sync_session(database_url) as session:
            assert session.exec(select(Decision)).all() == []


def test_the_desk_tells_the_truth_in_the_browser(
    make_settings, page, api_key: str, upstream: factories.UpstreamMock, agent
) -> None:
    """[13] in chromium: the heat map spells the answer in every script; a changed draft stops "approve" and
    stays; an edit's line breaks reach the client as \\n; the page says what the client was told; history shows
    the question and what was sent."""
    from tests.console.test_heatmap import ANSWERS, llama_tokens, response

    upstream.pass_loopback()
    with factories.serving(create_app(make_settings())) as live:
        answer = "\n".join(ANSWERS[script] for script in ("japanese", "arabic", "emoji", "combining"))
        upstream.answer(response(answer, llama_tokens(answer, logprob=-0.7)))
        question = [{"role": "user", "content": "パスワードをリセットするには?"}]
        body = {"model": MODEL, "messages": question, "hitl": {"wait": 0}}
        reply = httpx.post(f"{live}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"})
        review_id = reply.json()["hitl"]["review_id"]
        log_in(page, live, *agent)
        page.goto(f"{live}/console/reviews/{review_id}")
        assert page.inner_text("#candidate .heatmap") == answer  # no character lost, none garbled
        assert "The customer was told" in page.inner_text("#told")

        page.keyboard.press("e")
        page.keyboard.press("ControlOrMeta+a")
        page.keyboard.type("First line.")
        page.keyboard.press("Enter")
        page.keyboard.type("Second line.")
        page.keyboard.press("Escape")
        page.keyboard.press("a")  # approve, with the answer box changed
        page.wait_for_selector("p.error")
        assert "would throw away" in page.inner_text("p.error")
        assert page.input_value("#answer") == "First line.\nSecond line."  # the draft is kept
        screenshot(page, "approve-refused", full_page=False)

        page.focus("#answer")
        page.keyboard.press("ControlOrMeta+Enter")  # now sent as the edit it is
        page.wait_for_url(f"{live}/console/?tier=agent&decided=**")
        polled = httpx.get(f"{live}/v1/reviews/{review_id}", headers={"Authorization": f"Bearer {api_key}"}).json()
        assert polled["completion"]["choices"][0]["message"]["content"] == "First line.\nSecond line."

        page.goto(f"{live}/console/history")
        row = page.inner_text("#history-rows tbody tr")
        assert "パスワードをリセットするには?" in row and "First line." in row
        screenshot(page, "history-question")


def test_a_backtracking_schema_refuses_the_edit_in_time_in_the_browser(
    make_settings, page, api_key: str, upstream: factories.UpstreamMock, agent, tmp_path: Path
) -> None:
    upstream.pass_loopback()
    policy = tmp_path / "policy.yaml"
    policy.write_text(factories.HOLD_TOOL_CALLS)
    with factories.serving(create_app(make_settings(policy_path=policy, check_seconds=1.0))) as live:
        parameters = {"type": "object", "properties": {"note": {"type": "string", "pattern": r"^(\w+\s?)*$"}}}
        tools = [{"type": "function", "function": {"name": "add_note", "parameters": parameters}}]
        call = factories.tool_call("add_note", {"note": "ok"}, "call_a")
        upstream.answer(factories.completion_body(None, tool_calls=[call]))
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Note it"}],
            "tools": tools,
            "hitl": {"wait": 0},
        }
        reply = httpx.post(f"{live}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {api_key}"})
        review_id = reply.json()["hitl"]["review_id"]
        log_in(page, live, *agent)
        page.goto(f"{live}/console/reviews/{review_id}")
        page.fill("#arguments-0", json.dumps({"note": "a" * 40 + "!"}))
        page.click('button[data-key="e"]')
        page.wait_for_selector("p.error", timeout=20_000)
        assert "took longer than 1 s and was stopped" in page.inner_text("p.error")
        assert "a" * 40 + "!" in page.input_value("#arguments-0")  # the draft is kept
        assert httpx.get(f"{live}/health/live").status_code == 200


def test_a_senior_reads_the_insights_page(live: str, page, database_url: str) -> None:
    factories.seed_week(database_url)
    factories.make_agent(database_url, "grace", "s3cret pass", Role.SENIOR)
    log_in(page, live, "grace", "s3cret pass")
    page.click("nav.links >> text=Insights")
    page.goto(f"{live}/console/insights?since=2026-11-02T00:00&until=2026-11-09T00:00")
    assert page.inner_text("#insight-volume .figure") == "12"
    assert page.locator("#insight-volume svg.bars rect.bar").count() == 3  # released, held, audited
    assert page.locator("#insight-decisions svg.bars rect.bar").count() == 4  # approve, edit, override, escalate
    assert page.locator("#insight-upstream svg.bars rect.bar").count() == 2  # a timeout, an HTTP error
    held = page.locator("svg.bars rect.bar-held").bounding_box()
    released = page.locator("svg.bars rect.bar-released").bounding_box()
    assert held and released and held["width"] > released["width"]  # 60% held against 40% released
    assert page.locator("svg.line polyline").count() == 4  # volume and held, backlog, mean latency
    screenshot(page, "insights")
    page.fill("#simulator input[name=release]", "0.5")
    page.click("#simulator button")
    page.wait_for_selector("#simulation-result")
    assert "Release at ≥ 0.5" in page.inner_text("#simulation-result") and "/console/insights/threshold" not in page.url
    screenshot(page, "insights-simulator")
