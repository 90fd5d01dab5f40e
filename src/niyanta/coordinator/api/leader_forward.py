"""Requests only the leader can carry out, forwarded to it by a follower.

Only the leader talks to workers: it alone knows which workers are connected (``GET
/v1/workers``), can drain one, and can ask a running replica to checkpoint and yield (pause) or
stop at once (cancel). A follower answers those requests with the leader's answer to the same
request, found through the store (the leader lease names the holder, the coordinators table its
URL). A request forwarded once is never forwarded again: a follower that receives a forwarded
request (leadership moved meanwhile) answers ``not_leader`` (503) and the client tries again.
"""

from __future__ import annotations

import httpx
from fastapi import Request, Response

from niyanta.coordinator.service import CoordinatorService
from niyanta.errors import NotLeader

FORWARDED_BY = "x-niyanta-forwarded-by"
FORWARD_TIMEOUT_S = 10.0
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
"""Listen addresses that name no host another coordinator could dial."""


async def leader_answer(request: Request, service: CoordinatorService) -> Response | None:
    """None when this coordinator leads (it acts itself); otherwise the leader's answer.
    ``NotLeader`` when no leader can be reached."""
    if service.is_leader:
        return None
    if FORWARDED_BY in request.headers:
        raise NotLeader("this coordinator no longer leads; try again")
    url = await service.leader_url()
    if url is None:
        raise NotLeader("no coordinator leads at the moment; try again shortly")
    if httpx.URL(url).host in WILDCARD_HOSTS:
        raise NotLeader(
            f"the leader publishes {url}, which other coordinators cannot reach: start it with"
            " --advertise-url"
        )
    headers = {FORWARDED_BY: service.coordinator_id}
    if "content-type" in request.headers:
        headers["content-type"] = request.headers["content-type"]
    try:
        async with httpx.AsyncClient(timeout=FORWARD_TIMEOUT_S) as client:
            answer = await client.request(
                request.method,
                f"{url.rstrip('/')}{request.url.path}",
                params=request.query_params,
                content=await request.body(),
                headers=headers,
            )
    except httpx.HTTPError as exc:
        raise NotLeader(f"the leader at {url} cannot be reached: {exc!r}") from exc
    return Response(
        content=answer.content,
        status_code=answer.status_code,
        media_type=answer.headers.get("content-type"),
    )
