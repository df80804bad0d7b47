"""The lean HTTP/1.1 transport behind httpx's client API, over real loopback sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from service.loadtest.transport import LeanTransport
from tests.loadtest.conftest import MODEL, PNG_BYTES, FakeServer, free_port


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=LeanTransport(4), timeout=5) as http:
        yield http


async def test_get_and_post_through_httpx(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    health = await client.get(f"{fake_server.url}/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    png = await client.post(f"{fake_server.url}/v1/models/{MODEL}/generate", json={"seed": 3})
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    assert png.content == PNG_BYTES
    missing = await client.get(f"{fake_server.url}/v1/models/nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "model_not_found"
    assert fake_server.state.seeds == [3]


async def test_connections_are_kept_alive_and_capped(fake_server: FakeServer) -> None:
    transport = LeanTransport(2)
    async with httpx.AsyncClient(transport=transport) as http:
        url = f"{fake_server.url}/v1/models/{MODEL}/generate"
        fake_server.state.behaviour.delay_s = 0.01
        answers = await asyncio.gather(*(http.post(url, json={"seed": i}) for i in range(10)))
        assert {a.status_code for a in answers} == {200}
        assert len(transport._open) <= 2  # ten requests over at most two connections


async def test_chunked_bodies_are_joined(
    fake_server: FakeServer, client: httpx.AsyncClient
) -> None:
    fake_server.state.behaviour.chunked = True
    url = f"{fake_server.url}/v1/models/{MODEL}/images/5.png"
    for _ in range(3):  # the connection stays usable after a chunked body
        response = await client.get(url)
        assert response.content == PNG_BYTES
        assert response.headers["transfer-encoding"] == "chunked"


async def test_connection_close_is_honoured(fake_server: FakeServer) -> None:
    fake_server.state.behaviour.close_after = True
    transport = LeanTransport(1)
    async with httpx.AsyncClient(transport=transport) as http:
        for seed in range(3):
            answer = await http.get(f"{fake_server.url}/v1/models/{MODEL}/images/{seed}.png")
            assert answer.status_code == 200
        assert not transport._idle.get(("127.0.0.1", fake_server.port))


async def _one_shot_server(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, port


async def test_a_stale_keep_alive_connection_is_retried_once() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        # Keep-alive was promised, but the server drops the connection after one answer.
        writer.close()

    server, port = await _one_shot_server(handler)
    async with server, httpx.AsyncClient(transport=LeanTransport(1)) as http:
        first = await http.get(f"http://127.0.0.1:{port}/a")
        await asyncio.sleep(0.05)  # the close reaches the client while the connection is idle
        second = await http.get(f"http://127.0.0.1:{port}/b")
    assert first.text == second.text == "ok"
    assert connections == 2


async def test_read_timeout_and_refused_connection_are_httpx_errors() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(2)
        writer.close()

    server, port = await _one_shot_server(silent)
    async with server, httpx.AsyncClient(transport=LeanTransport(1), timeout=0.2) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(f"http://127.0.0.1:{port}/")
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{free_port()}/")


async def test_malformed_answers_are_protocol_errors() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        writer.close()

    server, port = await _one_shot_server(garbage)
    async with server, httpx.AsyncClient(transport=LeanTransport(1)) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(f"http://127.0.0.1:{port}/")


async def test_only_plain_http() -> None:
    async with httpx.AsyncClient(transport=LeanTransport(1)) as http:
        with pytest.raises(httpx.UnsupportedProtocol):
            await http.get("https://127.0.0.1:1/")
