"""The process's HTTP client on aiohttp's connections, against real sockets on loopback (no respx): an answer,
a refused or dropped connection, a silent server, and the proxies named in the environment."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from pydantic import SecretStr

from gateway import http
from gateway.conversation.upstream import OpenAICompatible
from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.settings import UpstreamSettings
from tests import factories

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
ASK = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@asynccontextmanager
async def listening(handler: Handler) -> AsyncIterator[int]:
    """A server on a free loopback port running `handler` per connection, which it then closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except asyncio.IncompleteReadError:
            pass  # the client closed its connection
        finally:
            writer.close()
            await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def _request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return head


def _answer(body: dict[str, object]) -> bytes:
    payload = json.dumps(body).encode()
    return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        len(payload),
        payload,
    )


def _upstream(base: str, client: object, timeout: float = 5.0, api_key: str | None = None) -> OpenAICompatible:
    key = SecretStr(api_key) if api_key else None
    config = UpstreamSettings(name="real", api_base=base, model="m", timeout=timeout, api_key=key)
    return OpenAICompatible(config, client)  # type: ignore[arg-type]


BODY = factories.completion_body("Paris.", logprob=-0.01)


def answering(heads: list[bytes]) -> Handler:
    """A server's handler that keeps each request's head and answers `BODY`."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await _request(reader))
        writer.write(_answer(BODY))
        await writer.drain()

    return answer


async def test_an_answer_is_read_whole() -> None:
    heads: list[bytes] = []
    async with listening(answering(heads)) as port, http.client() as client:
        found = await _upstream(f"http://127.0.0.1:{port}/v1", client).complete(ASK)
    assert found == BODY
    assert heads[0].startswith(b"POST /v1/chat/completions HTTP/1.1")


async def test_a_refused_connection_is_unreachable_not_a_timeout() -> None:
    port = factories.free_port()
    async with http.client() as client:
        with pytest.raises(UpstreamError) as caught:
            await _upstream(f"http://127.0.0.1:{port}/v1", client).complete(ASK)
    assert not isinstance(caught.value, UpstreamTimeout)
    assert caught.value.failure == "unreachable" and "ClientConnectorError" in caught.value.message


async def test_a_dropped_connection_is_tried_once_more_then_unreachable() -> None:
    heads: list[bytes] = []

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await _request(reader))  # and closes without a word

    async with listening(hang_up) as port, http.client() as client:
        with pytest.raises(UpstreamError) as caught:
            await _upstream(f"http://127.0.0.1:{port}/v1", client).complete(ASK)
    assert not isinstance(caught.value, UpstreamTimeout) and caught.value.failure == "unreachable"
    assert "ServerDisconnectedError" in caught.value.message and len(heads) == 2


async def test_a_kept_alive_connection_closed_under_a_request_is_not_a_failure() -> None:
    """The server's idle timeout closes a kept-alive connection just as the next request goes out on it."""
    heads: list[tuple[int, bytes]] = []

    async def stale_after_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = len({number for number, _ in heads})
        while not reader.at_eof():
            heads.append((connection, await _request(reader)))
            if connection == 0 and len(heads) == 2:
                return  # the second request on the first connection: dropped unanswered
            writer.write(_answer(BODY))
            await writer.drain()

    async with listening(stale_after_one) as port, http.client() as client:
        upstream = _upstream(f"http://127.0.0.1:{port}/v1", client)
        assert await upstream.complete(ASK) == BODY
        assert await upstream.complete(ASK) == BODY
    assert [number for number, _ in heads] == [0, 0, 1]


async def test_a_silent_server_times_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request(reader)
        await asyncio.sleep(5)

    async with listening(silent) as port, http.client() as client:
        with pytest.raises(UpstreamTimeout) as caught:
            await _upstream(f"http://127.0.0.1:{port}/v1", client, timeout=0.3).complete(ASK)
    assert caught.value.failure == "timeout" and "0.3 s" in caught.value.message


async def test_a_proxy_from_the_environment_carries_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    heads: list[bytes] = []
    async with listening(answering(heads)) as port:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        async with http.client() as client:
            found = await _upstream("http://models.example/v1", client).complete(ASK)
    assert found == BODY
    assert heads[0].startswith(b"POST http://models.example/v1/chat/completions HTTP/1.1")


async def test_a_host_in_no_proxy_is_reached_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    heads: list[bytes] = []
    async with listening(answering(heads)) as port:
        for lower in ("http_proxy", "no_proxy"):  # urllib prefers the lowercase names where both are set
            monkeypatch.delenv(lower, raising=False)
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there: a proxied call would fail
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        async with http.client() as client:
            found = await _upstream(f"http://127.0.0.1:{port}/v1", client).complete(ASK)
    assert found == BODY
    assert heads[0].startswith(b"POST /v1/chat/completions HTTP/1.1")


async def test_a_netrc_entry_for_the_upstream_changes_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The upstream's key goes as the bearer token it is configured as, whatever the machine's .netrc holds
    (aiohttp with `trust_env` would read it and refuse to send both)."""
    heads: list[bytes] = []
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    async with listening(answering(heads)) as port, http.client() as client:
        found = await _upstream(f"http://127.0.0.1:{port}/v1", client, api_key="sk-up").complete(ASK)
    assert found == BODY
    assert b"\r\nauthorization: bearer sk-up\r\n" in heads[0].lower()


async def test_a_call_carries_the_clients_headers_and_the_body_as_json() -> None:
    heads: list[bytes] = []
    bodies: list[bytes] = []

    async def keep(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if b"content-length" in line.lower())
        heads.append(head.lower())
        bodies.append(await reader.readexactly(length))
        writer.write(_answer(BODY))
        await writer.drain()

    asked = {**ASK, "messages": [{"role": "user", "content": "Grüße, 北京?"}], "logprobs": True, "top_logprobs": 5}
    async with listening(keep) as port, http.client() as client:
        await _upstream(f"http://127.0.0.1:{port}/v1", client, api_key="sk-up").complete(asked)
        defaults = {name.lower().encode(): value.lower().encode() for name, value in client.headers.items()}
    head = heads[0]
    for name, value in {**defaults, b"content-type": b"application/json", b"host": b"127.0.0.1:%d" % port}.items():
        assert b"\r\n%s: %s\r\n" % (name, value) in head, name
    assert b"\r\nauthorization: bearer sk-up\r\n" in head
    assert json.loads(bodies[0]) == {**asked, "model": "m"}


async def test_an_upstreams_cookie_is_not_sent_on_the_next_call() -> None:
    """An upstream's cookie, set on one client's request, must not ride on another client's."""
    heads: list[bytes] = []

    async def set_cookie(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while not reader.at_eof():
            heads.append((await _request(reader)).lower())
            answer = _answer(BODY).replace(b"\r\n\r\n", b"\r\nset-cookie: session=first-client; Path=/\r\n\r\n", 1)
            writer.write(answer)
            await writer.drain()

    async with listening(set_cookie) as port, http.client() as client:
        upstream = _upstream(f"http://127.0.0.1:{port}/v1", client)
        assert await upstream.complete(ASK) == BODY
        assert await upstream.complete(ASK) == BODY
    assert len(heads) == 2 and all(b"cookie" not in head for head in heads)
