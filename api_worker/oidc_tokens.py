"""OpenID Connect: the token, userinfo and revocation endpoints (being built)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from shared.settings import OidcSettings


def routes(oidc: OidcSettings) -> list[BaseRoute]:
    return []
