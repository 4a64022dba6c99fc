"""`python -m bench.bare_api`: a bare Starlette endpoint on the product API's server stack.

`POST /v1/codes/redeem` parses a small JSON body and answers JSON, nothing else: the
ceiling a redeem is compared with. The server is `api_worker`'s own configuration
(`api_worker.__main__.server_config`: the same event loop, protocol class and its
connection bounds, proxy headers, keep-alive, backlog, log configuration and level) and
the same `Server`, which logs the loop and parser it runs on; it listens on API_PORT.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api_worker.__main__ import HEADER_TIMEOUT, TRUSTED_PROXIES, Server, server_config


async def redeem(request: Request) -> Response:
    body = await request.json()
    return JSONResponse({"code": body.get("code"), "ok": True})


def main() -> None:
    app = Starlette(routes=[Route("/v1/codes/redeem", redeem, methods=["POST"])])
    config = server_config(
        app,
        host="127.0.0.1",
        port=int(os.environ["API_PORT"]),
        log_level=os.environ.get("LOG_LEVEL", "INFO"),
        forwarded_allow_ips=os.environ.get("FORWARDED_ALLOW_IPS", TRUSTED_PROXIES),
        header_timeout=HEADER_TIMEOUT,
    )
    Server(config, app).run()


if __name__ == "__main__":
    main()
