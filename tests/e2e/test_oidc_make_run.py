"""`make run` with OpenID Connect clients and nothing else: the key it makes in its
private state, the local issuer, and every supervised API process accepting both."""

from __future__ import annotations

import json
import stat

import httpx

from shared.oidc_keys import SigningKeys
from tests.fixtures.common import wait_until
from tests.fixtures.oidc import CLI, SHOP
from tests.fixtures.system import SystemStarter


def test_make_run_makes_a_key_every_api_process_reads(start_system: SystemStarter) -> None:
    system = start_system(OIDC_CLIENTS=json.dumps([SHOP, CLI]))
    key = system.project / "var" / "oidc" / "signing-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    kid = SigningKeys.from_file(key).signing_kid
    issuer = f"http://127.0.0.1:{system.env['API_PORT']}"
    assert f"OpenID Connect provider: {issuer}/.well-known/openid-configuration " \
        f"(signing keys in {key})" in system.output()
    assert httpx.get(f"{system.api_url}/readyz").status_code == 200
    # both API processes read the same key (each names its id at start) and publish it
    wait_until(
        lambda: system.output().count(f"signing key {kid}") == 2, timeout=10,
        what="both API processes to report the key",
    )
    document = httpx.get(f"{system.api_url}/.well-known/openid-configuration").json()
    assert document["issuer"] == issuer
    jwks = httpx.get(document["jwks_uri"]).json()  # a fresh connection: either process
    assert jwks["keys"][0]["kid"] == kid
    text = key.read_text()
    body = "".join(text.splitlines()[1:-1])
    assert "PRIVATE KEY" not in system.output() and body[:40] not in system.output()
