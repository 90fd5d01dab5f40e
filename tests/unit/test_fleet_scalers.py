"""Fleet scaling: the pure desired-workers rule, the Kubernetes scale subresource against a real
local HTTP server, and the EC2 Auto Scaling calls through botocore's Stubber."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from niyanta.autoscale.ec2 import Ec2AutoScalingGroupScaler
from niyanta.autoscale.fleet import PoolBounds, PoolState, desired_workers, pool_of_affinity
from niyanta.autoscale.kubernetes import KubernetesDeploymentScaler
from niyanta.errors import InvalidInput
from niyanta.model import Affinity, LabelSelector, SelectorOp


def test_desired_workers_covers_running_and_pending_slots() -> None:
    pools = {"default": PoolState(workers=2, slots=8, used_slots=8), "gpu": PoolState(1, 2, 1)}
    desired = desired_workers(
        pools,
        {"default": 5, "gpu": 0, "compliance": 3},
        {"gpu": PoolBounds(min_workers=1, max_workers=3), "compliance": PoolBounds(0, 10, 2)},
    )
    assert desired == {"compliance": 2, "default": 4, "gpu": 1}


def test_desired_workers_respects_max() -> None:
    desired = desired_workers({"default": PoolState(1, 4, 4)}, {"default": 400}, {})
    assert desired == {"default": 100}


def test_pool_of_affinity_reads_hard_pool_selector() -> None:
    affinity = Affinity(required=(LabelSelector("pool", SelectorOp.EQ, ("gpu",)),))
    assert pool_of_affinity(affinity) == "gpu"
    assert pool_of_affinity(Affinity()) == "default"


class _ScaleApi(BaseHTTPRequestHandler):
    """Speaks the apps/v1 Deployment scale subresource for one deployment."""

    replicas = 2
    patches: list[dict[str, Any]] = []
    path_ok = "/apis/apps/v1/namespaces/jobs/deployments/workers-default/scale"

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path != self.path_ok or self.headers["Authorization"] != "Bearer t0k":
            self._reply(404, {"kind": "Status"})
            return
        self._reply(200, {"kind": "Scale", "spec": {"replicas": type(self).replicas}})

    def do_PATCH(self) -> None:
        length = int(self.headers["Content-Length"])
        body = json.loads(self.rfile.read(length))
        assert self.headers["Content-Type"] == "application/merge-patch+json"
        type(self).patches.append(body)
        type(self).replicas = body["spec"]["replicas"]
        self._reply(200, {"kind": "Scale", "spec": {"replicas": type(self).replicas}})

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def scale_api() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _ScaleApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_kubernetes_scaler_patches_deployment_scale(scale_api: str) -> None:
    scaler = KubernetesDeploymentScaler(
        scale_api, "jobs", {"default": "workers-default"}, token="t0k"
    )
    try:
        assert await scaler.current("default") == 2
        await scaler.scale("default", 7)
        assert _ScaleApi.patches[-1] == {"spec": {"replicas": 7}}
        assert await scaler.current("default") == 7
        with pytest.raises(InvalidInput):
            await scaler.scale("gpu", 1)
    finally:
        await scaler.close()


async def test_ec2_scaler_sets_desired_capacity() -> None:
    client = boto3.client(
        "autoscaling",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )
    scaler = Ec2AutoScalingGroupScaler({"default": "niyanta-workers"}, client=client)
    with Stubber(client) as stub:
        stub.add_response(
            "describe_auto_scaling_groups",
            {
                "AutoScalingGroups": [
                    {
                        "AutoScalingGroupName": "niyanta-workers",
                        "MinSize": 0,
                        "MaxSize": 10,
                        "DesiredCapacity": 3,
                        "DefaultCooldown": 60,
                        "AvailabilityZones": ["us-east-1a"],
                        "HealthCheckType": "EC2",
                        "CreatedTime": "2026-01-01T00:00:00Z",
                    }
                ]
            },
            {"AutoScalingGroupNames": ["niyanta-workers"]},
        )
        stub.add_response(
            "set_desired_capacity",
            {},
            {
                "AutoScalingGroupName": "niyanta-workers",
                "DesiredCapacity": 5,
                "HonorCooldown": False,
            },
        )
        assert await scaler.current("default") == 3
        await scaler.scale("default", 5)
        stub.assert_no_pending_responses()
