"""A link that opens the bot's chat in the local Telegram sandbox, where `make run` and
the tests talk to it: a `t.me` deep link leads nowhere there."""

from __future__ import annotations

import ipaddress
from urllib.parse import parse_qs, quote, urlsplit

import httpx

from shared.settings import Settings

# whether the Bot API at an origin is the local Telegram sandbox, by origin
_sandbox_origins: dict[str, bool] = {}


async def sandbox_link(settings: Settings, deep_link: str) -> str | None:
    """`<sandbox>/?start=<payload>` when the bot talks to the local Telegram sandbox."""
    base = urlsplit(settings.telegram_api_base_url)
    try:
        loopback = ipaddress.ip_address(base.hostname or "").is_loopback
    except ValueError:
        loopback = base.hostname == "localhost"
    if not loopback:
        return None
    origin = f"{base.scheme}://{base.netloc}"
    if origin not in _sandbox_origins:
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                answer = await client.get(f"{origin}/control/bots")
            _sandbox_origins[origin] = answer.status_code == 200
        except httpx.HTTPError:
            return None  # ask again next time
    payload = parse_qs(urlsplit(deep_link).query).get("start", [""])[0]
    return f"{origin}/?start={quote(payload)}" if _sandbox_origins[origin] and payload else None
