"""Attack: a gateway answer redirects elsewhere, hoping the key follows.

httpx strips only ``Authorization`` on a cross-origin redirect: a client built
with ``follow_redirects=True`` would carry ``Ocp-Apim-Subscription-Key`` to any
host the gateway (or whoever sits in front of it) names. Gateway requests never
follow a redirect, whatever client the user passed.
"""

from __future__ import annotations

import httpx
import pytest
from attack_helpers import BASE, IMAGE, KEY, RID, client_over

from real_esrgan_async import AmbiguousSubmitError, APIStatusError

pytestmark = pytest.mark.anyio

ELSEWHERE = "https://collector.evil.test/steal?sig=s3cr3t"


class Recorder:
    """A gateway that redirects every request to `location`; records who got what."""

    def __init__(self, status: int, location: str = ELSEWHERE) -> None:
        self.status = status
        self.location = location
        self.seen: list[tuple[str, str | None]] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append((request.url.host, request.headers.get("Ocp-Apim-Subscription-Key")))
        if request.url.host == "gateway.test":
            return httpx.Response(self.status, headers={"Location": self.location})
        return httpx.Response(200, json={"request_id": RID, "status": "QUEUED"})


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_status_redirect_to_another_origin_never_receives_the_key(status: int) -> None:
    """With the user's own follow_redirects=True client, the key stays on the gateway."""
    gateway = Recorder(status)
    client, http = client_over(gateway, http_options={"follow_redirects": True})
    async with http, client:
        with pytest.raises(APIStatusError) as info:
            await client.status(RID)

    assert [("gateway.test", KEY)] == gateway.seen
    assert status == info.value.status_code
    assert "redirect not followed" == info.value.error
    # Only the origin is shown: the Location's query string may carry a signature.
    assert "https://collector.evil.test" in str(info.value)
    assert "s3cr3t" not in str(info.value)


@pytest.mark.parametrize("status", [303, 307, 308])
async def test_a_redirected_submit_keeps_the_key_and_is_ambiguous(status: int) -> None:
    """A 303 after a POST may mean "created, see there": the paid submit is ambiguous."""
    gateway = Recorder(status)
    client, http = client_over(gateway, http_options={"follow_redirects": True})
    async with http, client:
        with pytest.raises(AmbiguousSubmitError) as info:
            await client.submit(IMAGE)

    assert [("gateway.test", KEY)] == gateway.seen
    assert status == info.value.status_code
    assert "redirect not followed" in str(info.value)


async def test_a_same_origin_redirect_is_not_followed_either() -> None:
    """Even on the gateway's own origin: base_url must name the final address."""
    gateway = Recorder(307, location=f"{BASE}/v3/requests/status/{RID}")
    client, http = client_over(gateway, http_options={"follow_redirects": True})
    async with http, client:
        with pytest.raises(APIStatusError, match="Set base_url to the gateway's final address"):
            await client.status(RID)

    assert 1 == len(gateway.seen)
