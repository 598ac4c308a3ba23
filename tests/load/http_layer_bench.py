"""CPU per request of HTTP servers and clients for the helper's two hops, at a fixed rate
on loopback: what each candidate HTTP layer costs, apart from the helper's own work.

    .venv/bin/python tests/load/http_layer_bench.py [--rate 1000] [--seconds 10]

Servers (each answers ``POST /verify`` with a 330-byte JSON body, as the simulator does;
load from one fixed client process, the server's CPU read from /proc):
  aiohttp  aiohttp.web, access log off, as the helper and the simulator run it
  uvicorn  uvicorn (httptools, uvloop) with a raw ASGI app, no framework, access log off
  lean     the home-made httptools server this project used before (from git, f43f1de)

Clients (each sends the helper's verifier request at the rate to one fixed aiohttp
server, one process; its own CPU from time.process_time):
  aiohttp  aiohttp.ClientSession, plainly configured (pool, DNS cache, no cookies)
  helper   vvp_helper.verifier.client.VerifierClient.verify (the above plus its checks, the
           JSON encoding of the request and the decoding of the verdict)
  httpx    httpx.AsyncClient (HTTP/1.1, keep-alive pool)
  lean     the home-made httptools client this project used before (from git, f43f1de)

uvloop is used by every process when installed, as the helper does. Needs the git
history (``git show``) for the lean pair and the `uvicorn` package for the uvicorn row.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
LEAN_REVISION = "f43f1de"
ANSWER = json.dumps(
    {
        "overall_status": "VALID",
        "request_id": "00000000-0000-4000-8000-000000000000",
        "errors": [],
        "claims": [{"name": "caller_authorised", "status": "VALID", "reasons": []}],
        "brand_name": "Acme Bank",
        "brand_logo_url": "https://brand.demo.example/acme.png",
        "certainty": "HIGH",
        "signer_aid": "EFhWJ1bXjE0Yy0Ah8ZrQq3d5U1o2bJkHsZ2aQ1oVQm3c",
        "cache_hit": True,
    }
).encode()
REQUEST = json.dumps(
    {
        "passport_jwt": "eyJ" + "A" * 600,
        "context": {
            "call_id": "bench@edge",
            "received_at": "2026-11-29T00:00:00+00:00",
            "sip": {
                "from_uri": "sip:+441923311001@carrier.example",
                "to_uri": "sip:+441923311006@carrier.example",
                "invite_time": "2026-11-29T00:00:00+00:00",
            },
        },
    }
).encode()
#: Set in a client process whose caller measures the server: print "start" after warm-up.
ANNOUNCE = False
IDENTITY = "<https://example/oobi>;info=evd;alg=EdDSA;ppt=vvp;kid=" + "E" * 44


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def lean_modules() -> Path:
    """The pre-aiohttp server and client, from git history, as package ``lean``."""
    root = Path(tempfile.mkdtemp(prefix="lean-http-"))
    package = root / "lean"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("httpserver", "httpclient", "jsonfast"):
        source = subprocess.run(
            ["git", "show", f"{LEAN_REVISION}:helper/vvp_helper/{name}.py"],
            cwd=REPO, check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        (package / f"{name}.py").write_text(source)
    return root


def run_loop(main: Awaitable[Any]) -> Any:
    factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)  # type: ignore[arg-type]


# --- servers (run in their own process: `server KIND PORT`)


async def serve_aiohttp(port: int) -> None:
    from aiohttp import web

    async def verify(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")

    app = web.Application()
    app.router.add_post("/verify", verify)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    await asyncio.Event().wait()


def serve_uvicorn(port: int) -> None:
    import uvicorn

    async def app(
        scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]
    ) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": ANSWER})

    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_level="warning",
                http="httptools", loop="uvloop", lifespan="off", backlog=4096)  # fmt: skip


async def serve_lean(port: int) -> None:
    httpserver = importlib.import_module("lean.httpserver")

    async def verify(request: Any) -> Any:
        return httpserver.Response(200, ANSWER)

    server = httpserver.HttpServer({("POST", "/verify"): verify})
    await server.start("127.0.0.1", port)
    await asyncio.Event().wait()


# --- clients (run in their own process: `client KIND URL RATE SECONDS`)


async def paced(
    send: Callable[[], Awaitable[None]], rate: float, seconds: float
) -> tuple[int, float]:
    """Send at ``rate`` per second for ``seconds``; returns (answered, CPU seconds)."""
    answered = 0
    failed = 0

    async def one() -> None:
        nonlocal answered, failed
        try:
            await send()
            answered += 1
        except Exception:
            failed += 1

    # warm-up: the pool and the server's connections
    await asyncio.gather(*(one() for _ in range(50)))
    answered = 0
    if ANNOUNCE:  # a server measurement starts reading the server's CPU now
        print("start", flush=True)
    tick = 0.01
    per_tick = rate * tick
    tasks: set[asyncio.Task[None]] = set()
    cpu0, start = time.process_time(), time.monotonic()
    sent = 0.0
    while (now := time.monotonic()) - start < seconds:
        due = (now - start) * rate - sent
        for _ in range(int(due)):
            task = asyncio.ensure_future(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(tick if due < per_tick else 0)
    await asyncio.gather(*tasks)
    cpu = time.process_time() - cpu0
    if failed:
        print(f"  ({failed} requests failed)", file=sys.stderr)
    return answered, cpu


async def client_aiohttp(url: str, rate: float, seconds: float) -> tuple[int, float]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=512, ttl_dns_cache=300, keepalive_timeout=4)
    headers = {"Content-Type": "application/json", "Accept": "application/json",
               "VVP-Identity": IDENTITY}  # fmt: skip
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=5),
        cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
    ) as session:  # fmt: skip

        async def send() -> None:
            async with session.post(url, data=REQUEST, headers=headers) as response:
                await response.read()

        return await paced(send, rate, seconds)


async def client_helper(url: str, rate: float, seconds: float) -> tuple[int, float]:
    from vvp_helper.verifier.client import VerifierClient, VerifyRequest

    client = VerifierClient(url, timeout=5, max_connections=512)
    body = json.loads(REQUEST)
    request = VerifyRequest(
        vvp_identity=IDENTITY,
        passport_jwt=body["passport_jwt"],
        call_id="bench@edge",
        received_at=body["context"]["received_at"],
        from_uri=body["context"]["sip"]["from_uri"],
        to_uri=body["context"]["sip"]["to_uri"],
        invite_time=body["context"]["sip"]["invite_time"],
    )

    async def send() -> None:
        await client.verify(request)

    try:
        return await paced(send, rate, seconds)
    finally:
        await client.close()


async def client_httpx(url: str, rate: float, seconds: float) -> tuple[int, float]:
    import httpx

    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    headers = {"Content-Type": "application/json", "VVP-Identity": IDENTITY}
    async with httpx.AsyncClient(limits=limits, timeout=5) as client:

        async def send() -> None:
            (await client.post(url, content=REQUEST, headers=headers)).read()

        return await paced(send, rate, seconds)


async def client_lean(url: str, rate: float, seconds: float) -> tuple[int, float]:
    httpclient = importlib.import_module("lean.httpclient")
    client = httpclient.HttpClient(url, max_connections=512, max_answer_bytes=1 << 20)
    headers = f"Content-Type: application/json\r\nVVP-Identity: {IDENTITY}\r\n".encode()

    async def send() -> None:
        await client.post(REQUEST, headers)

    try:
        return await paced(send, rate, seconds)
    finally:
        await client.close()


SERVERS = ("aiohttp", "uvicorn", "lean")
CLIENTS = {
    "aiohttp": client_aiohttp,
    "helper": client_helper,
    "httpx": client_httpx,
    "lean": client_lean,
}


def process_cpu(pid: int) -> float:
    """utime + stime of ``pid`` and its children so far, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def child(argv: list[str], lean: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{lean}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen([sys.executable, __file__, *argv], env=env, text=True,
                            stdout=subprocess.PIPE)  # fmt: skip


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def measure_server(kind: str, rate: float, seconds: float, lean: Path) -> tuple[int, float]:
    port = free_port()
    server = child(["server", kind, str(port)], lean)
    try:
        wait_listening(port)
        load = child(["client", "lean", f"http://127.0.0.1:{port}/verify", str(rate),
                      str(seconds), "--report-start"], lean)  # fmt: skip
        assert load.stdout is not None
        load.stdout.readline()  # the load generator's warm-up is done
        cpu0 = process_cpu(server.pid)
        answered, _ = json.loads(load.stdout.readline())
        cpu = process_cpu(server.pid) - cpu0
        load.wait()
        return answered, cpu
    finally:
        server.terminate()
        server.wait()


def measure_client(kind: str, rate: float, seconds: float, lean: Path) -> tuple[int, float]:
    port = free_port()
    server = child(["server", "aiohttp", str(port)], lean)
    try:
        wait_listening(port)
        load = child(["client", kind, f"http://127.0.0.1:{port}/verify", str(rate),
                      str(seconds)], lean)  # fmt: skip
        out, _ = load.communicate()
        answered, cpu = json.loads(out.strip().splitlines()[-1])
        return int(answered), float(cpu)
    finally:
        server.terminate()
        server.wait()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "server":
        kind, port = sys.argv[2], int(sys.argv[3])
        if kind == "uvicorn":
            serve_uvicorn(port)
        else:
            run_loop({"aiohttp": serve_aiohttp, "lean": serve_lean}[kind](port))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        kind, url, rate, seconds = sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
        global ANNOUNCE
        ANNOUNCE = "--report-start" in sys.argv
        result = run_loop(CLIENTS[kind](url, rate, seconds))
        print(json.dumps(result), flush=True)
        return 0

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--only", choices=("servers", "clients"), default=None)
    args = parser.parse_args()
    lean = lean_modules()
    print(f"{args.rate:g} requests/s for {args.seconds:g} s on loopback, one process each")
    if args.only != "clients":
        print("server (load: the lean client)   requests   CPU s   us/request")
        for kind in SERVERS:
            if kind == "uvicorn" and importlib.util.find_spec("uvicorn") is None:
                print(f"  {kind:<30} (not installed: pip install uvicorn)")
                continue
            answered, cpu = measure_server(kind, args.rate, args.seconds, lean)
            print(f"  {kind:<30} {answered:>8} {cpu:>7.2f} {cpu / answered * 1e6:>10.0f}")
    if args.only != "servers":
        print("client (target: aiohttp server)  requests   CPU s   us/request")
        for kind in CLIENTS:
            answered, cpu = measure_client(kind, args.rate, args.seconds, lean)
            print(f"  {kind:<30} {answered:>8} {cpu:>7.2f} {cpu / answered * 1e6:>10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
