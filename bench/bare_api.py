"""`python -m bench.bare_api`: a bare Starlette endpoint on the product API's uvicorn settings.

`POST /v1/codes/redeem` parses a small JSON body and answers JSON, nothing else: the
ceiling a redeem is compared with. The server is configured exactly as
`python -m api_worker` configures it (same protocol class, proxy headers, keep-alive,
backlog, log configuration and level), listening on API_PORT.
"""

from __future__ import annotations

import os

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api_worker.__main__ import (
    BACKLOG,
    HEADER_TIMEOUT,
    KEEP_ALIVE,
    TRUSTED_PROXIES,
    log_config,
    protocol,
    trusted_proxies,
)


async def redeem(request: Request) -> Response:
    body = await request.json()
    return JSONResponse({"code": body.get("code"), "ok": True})


def main() -> None:
    app = Starlette(routes=[Route("/v1/codes/redeem", redeem, methods=["POST"])])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=int(os.environ["API_PORT"]),
        log_config=log_config(os.environ.get("LOG_LEVEL", "INFO")),
        proxy_headers=True,
        forwarded_allow_ips=trusted_proxies(os.environ.get("FORWARDED_ALLOW_IPS", TRUSTED_PROXIES)),
        http=protocol(HEADER_TIMEOUT),
        timeout_keep_alive=KEEP_ALIVE,
        backlog=BACKLOG,
        timeout_graceful_shutdown=8,
        lifespan="on",
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
