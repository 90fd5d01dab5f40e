"""Options of the long-running commands, turned into settings before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from niyanta.cli.main import app
from niyanta.cli.serve import coordinator_settings, import_workload_modules, parse_listen


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("[::1]:9000", ("::1", 9000)),
        ("coordinator.local:8443", ("coordinator.local", 8443)),
    ],
)
def test_listen_address(listen: str, expected: tuple[str, int]) -> None:
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["8080", "host:", ":8080", "host:http", "host:0", "host:70000"])
def test_bad_listen_address(listen: str) -> None:
    with pytest.raises(typer.BadParameter, match="HOST:PORT"):
        parse_listen(listen)


def test_coordinator_options_become_settings() -> None:
    settings = coordinator_settings(
        store="postgresql://db/niyanta",
        broker="nats://127.0.0.1:4222",
        listen="0.0.0.0:9090",
        coordinator_id="coord-1",
        lease_ttl=3.0,
        heartbeat=0.5,
        cluster="eu-1",
    )
    assert settings.store_url == "postgresql://db/niyanta"
    assert settings.broker == "nats://127.0.0.1:4222"
    assert (settings.host, settings.port) == ("0.0.0.0", 9090)
    assert settings.coordinator_id == "coord-1"
    assert (settings.lease_ttl_s, settings.heartbeat_interval_s) == (3.0, 0.5)
    assert settings.cluster == "eu-1"


def test_unset_coordinator_options_keep_the_defaults() -> None:
    settings = coordinator_settings(store="sqlite:///x.db", broker="builtin", listen="h:1")
    assert (settings.lease_ttl_s, settings.heartbeat_interval_s) == (5.0, 1.0)
    assert settings.coordinator_id.startswith("coordinator-")


def test_an_unimportable_workload_module_is_a_usage_error() -> None:
    with pytest.raises(typer.BadParameter, match="cannot import 'no_such_module_here'"):
        import_workload_modules("examples.demo_jobs, no_such_module_here")


def test_worker_refuses_bad_labels_and_brokers_before_connecting() -> None:
    runner = CliRunner()
    bad_labels = runner.invoke(app, ["worker", "--labels", "zone"])
    assert bad_labels.exit_code == 2 and "invalid label" in bad_labels.output
    bad_broker = runner.invoke(app, ["worker", "--broker", "kafka://x"])
    assert bad_broker.exit_code == 2 and "nats://HOST:PORT" in bad_broker.output


def test_the_memory_broker_is_only_for_dev() -> None:
    result = CliRunner().invoke(app, ["coordinator", "--broker", "memory"])
    assert result.exit_code == 2
    assert "niyanta dev" in result.output


def test_dev_runs_on_sqlite_only() -> None:
    result = CliRunner().invoke(app, ["dev", "--store", "postgresql://db/x"])
    assert result.exit_code == 2
    assert "SQLite" in result.output


def test_store_migrate_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'n.db'}"
    first = CliRunner().invoke(app, ["store", "migrate", "--store", url])
    second = CliRunner().invoke(app, ["store", "migrate", "--store", url])
    assert first.exit_code == second.exit_code == 0, first.output
    assert first.stdout == second.stdout
    assert "schema version" in first.stdout
    assert (tmp_path / "n.db").exists()


def test_control_loop_options_reach_the_coordinator_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import niyanta.cli.serve as serve
    import niyanta.coordinator.server as server
    from niyanta.autoscale.kubernetes import KubernetesDeploymentScaler
    from niyanta.coordinator.fleet_loop import fleet_scaler_from
    from niyanta.coordinator.settings import CoordinatorSettings

    started: list[CoordinatorSettings] = []
    monkeypatch.setattr(server, "run_coordinator", started.append)
    # The command configures the process's logging and tracing; not in the test process.
    monkeypatch.setattr(serve, "set_up_observability", lambda *_: None)
    result = CliRunner().invoke(
        app,
        ["coordinator", "--alert-webhook", "http://127.0.0.1:9/alerts", "--slo-window", "60",
         "--fleet-scaler", "kubernetes", "--fleet-pools", "cpu=workers-cpu,gpu=workers-gpu",
         "--kubernetes-api-url", "http://127.0.0.1:9", "--kubernetes-namespace", "jobs"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    settings = started[0]
    assert settings.alert_webhook == "http://127.0.0.1:9/alerts"
    assert settings.slo_window_s == 60.0
    assert settings.fleet_pools == {"cpu": "workers-cpu", "gpu": "workers-gpu"}
    assert settings.kubernetes_namespace == "jobs"
    assert isinstance(fleet_scaler_from(settings), KubernetesDeploymentScaler)
    assert fleet_scaler_from(CoordinatorSettings()) is None  # off by default


def test_a_fleet_scaler_without_pools_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["coordinator", "--fleet-scaler", "ec2"])
    assert result.exit_code != 0 and "fleet_pools" in result.output


@pytest.mark.parametrize("how", ["option", "environment"])
def test_worker_dials_every_coordinator_in_a_comma_separated_list(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import niyanta.broker.factory

    dialled: list[list[str]] = []

    def open_link(spec: str, worker_id: str, **kwargs: object) -> object:
        urls = kwargs["urls"]
        assert isinstance(urls, list)
        dialled.append(urls)
        raise ValueError("stop here: the test only wants the URLs")

    monkeypatch.setattr(niyanta.broker.factory, "open_worker_link", open_link)
    urls = "http://10.0.0.1:8080, http://10.0.0.2:8080,http://10.0.0.3:8080"
    args, env = (
        (["worker", "--coordinator", urls], {})
        if how == "option"
        else (["worker"], {"NIYANTA_COORDINATOR": urls})
    )
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 2  # the ValueError above, reported as a bad --broker
    assert dialled == [["http://10.0.0.1:8080", "http://10.0.0.2:8080", "http://10.0.0.3:8080"]]
