"""What every HTTP request passes before and after its route, in one ASGI layer.

`Front` is the API's whole middleware stack (Starlette's own stack of
ServerErrorMiddleware, our request timer, catch-all and URL check, and
ExceptionMiddleware each wrapped `send` and cost a coroutine per request; together
they were about a tenth of a redeem's CPU). In order, for each request:

- the URL check (`api_worker.body`): a path or query whose percent-decoded bytes are
  not UTF-8 is answered 400 `invalid_request`;
- the error model (`api_worker.errors`): an exception with a handler in
  EXCEPTION_HANDLERS (ApiError, the store's, routing's 404/405) is answered by it;
  anything else is logged with its traceback and answered 500 `internal` (once a
  response has started, nothing more is sent and the server closes the connection);
- the request's duration, one observation of `tglogin_http_request_duration_seconds`
  by route template, method and status (`api_worker.metrics`), whatever happened;
- a note for the access line that none carried (the client left before its answer) is
  logged as a line of its own (`api_worker.logs.note_on_access_line`).

`direct(endpoint)` is a route's ASGI app without Starlette's second exception layer
around each endpoint: `Front` handles what an endpoint raises the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette._exception_handler import _lookup_exception_handler
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, ExceptionHandler, Message, Receive, Scope, Send

from api_worker.body import text_url, url_not_text
from api_worker.errors import error_response, logger
from api_worker.logs import route_label, take_note
from api_worker.metrics import Timings

# what a request did for whom, when no access line carried it
notes = logging.getLogger("api_worker.front")

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Exception], Awaitable[Response]]


class Front:
    """The API's one middleware: URL check, error model, request duration."""

    def __init__(self, app: ASGIApp, handlers: Mapping[Any, ExceptionHandler]) -> None:
        self.app = app
        # every handler of ours is a coroutine function taking the request
        self._handlers: dict[Any, Handler] = dict(handlers)
        # where Starlette's routes look for handlers (as ExceptionMiddleware sets it)
        self._scope_handlers: tuple[dict[Any, Handler], dict[int, Any]] = (
            self._handlers, {})
        self._timings = Timings()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        started = False

        async def _send(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
            await send(message)

        try:
            if not text_url(scope):
                await url_not_text()(scope, receive, _send)
                return
            scope["starlette.exception_handlers"] = self._scope_handlers
            try:
                await self.app(scope, receive, _send)
            except Exception as exc:
                handler: Handler | None = _lookup_exception_handler(
                    self._handlers, exc)  # type: ignore[arg-type,assignment]
                if handler is None:
                    raise
                if started:
                    raise RuntimeError(
                        "Caught handled exception, but response already started."
                    ) from exc
                response = await handler(Request(scope, receive, send), exc)
                await response(scope, receive, _send)
                exc.__traceback__ = None  # reused exception instances collect tracebacks
        except Exception:
            logger.exception(
                "unexpected error answering %s %s", scope["method"], route_label(scope)
            )
            if not started:  # else too late for a clean answer: the server closes
                await error_response(500, "internal", "An unexpected error occurred.")(
                    scope, receive, _send
                )
        finally:
            self._timings.observe(scope, status, time.perf_counter() - start)
            note = take_note()
            if note is not None:
                notes.info("%s (the client left before its answer)", note)




def direct(endpoint: Endpoint) -> ASGIApp:
    """The ASGI app of a route whose `endpoint` is a coroutine function: the request
    in, the response out, exceptions to `Front`."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await endpoint(Request(scope, receive, send))
        await response(scope, receive, send)

    return app
