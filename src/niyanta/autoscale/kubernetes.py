"""Scale a pool's worker Deployment through the Kubernetes API's ``scale`` subresource.

Each pool maps to one Deployment (``deployments`` maps pool -> deployment name). Authentication
is a bearer token (in a cluster: the service account token file); TLS verification uses the
given CA file. Speaking plain HTTP(S) with httpx keeps the official client's weight out.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import httpx

from niyanta.errors import InvalidInput

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubernetesDeploymentScaler:
    def __init__(
        self,
        api_url: str,
        namespace: str,
        deployments: Mapping[str, str],
        token: str | None = None,
        ca_file: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.AsyncClient(
            base_url=api_url.rstrip("/"),
            headers=headers,
            verify=ca_file if ca_file else True,
            timeout=timeout_s,
        )
        self._namespace = namespace
        self._deployments = dict(deployments)

    @classmethod
    def in_cluster(cls, deployments: Mapping[str, str]) -> KubernetesDeploymentScaler:
        """Configure from the pod's service account, as a Deployment running in the cluster."""
        token = (SERVICE_ACCOUNT / "token").read_text().strip()
        namespace = (SERVICE_ACCOUNT / "namespace").read_text().strip()
        return cls(
            "https://kubernetes.default.svc",
            namespace,
            deployments,
            token=token,
            ca_file=str(SERVICE_ACCOUNT / "ca.crt"),
        )

    def _path(self, pool: str) -> str:
        name = self._deployments.get(pool)
        if name is None:
            raise InvalidInput(f"no Deployment configured for pool {pool!r}")
        return f"/apis/apps/v1/namespaces/{self._namespace}/deployments/{name}/scale"

    async def current(self, pool: str) -> int:
        response = await self._client.get(self._path(pool))
        response.raise_for_status()
        return int(response.json()["spec"].get("replicas", 0))

    async def scale(self, pool: str, workers: int) -> None:
        response = await self._client.patch(
            self._path(pool),
            json={"spec": {"replicas": workers}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        response.raise_for_status()

    async def close(self) -> None:
        await self._client.aclose()
