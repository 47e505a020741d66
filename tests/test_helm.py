"""The Helm chart (`deploy/helm/hitl-gateway`), rendered as `helm template` renders it (Helm's own engine, from
helm-python-sdk: no helm binary here) for the default values and a production-like file, linted strictly, and
every manifest validated against the Kubernetes schemas (kubernetes-validate, offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helm_python import Chart
from helm_python.chart import lint
from helm_python.errors import HelmError

ROOT = Path(__file__).parents[1]
CHART = ROOT / "deploy" / "helm" / "hitl-gateway"
PRODUCTION = ROOT / "deploy" / "helm" / "values-production.yaml"
KUBERNETES = "1.33.0"


def rendered(values: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The chart's manifests by kind, as `helm template demo deploy/helm/hitl-gateway [-f values]` renders them."""
    with Chart.load(CHART) as chart:
        files = chart.render(values=values, name="demo", namespace="hitl", is_install=True)
    manifests = [doc for text in files.values() for doc in yaml.safe_load_all(text) if doc]
    return {manifest["kind"]: manifest for manifest in manifests}


def production() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(PRODUCTION.read_text())
    return loaded


@pytest.mark.parametrize("values", [None, "production"])
def test_the_chart_lints_and_every_manifest_is_valid_kubernetes(values: str | None) -> None:
    given = production() if values else None
    report = lint(CHART, given, strict=True, kube_version=f"v{KUBERNETES}")
    assert not report["errors"] and not [m for m in report["messages"] if m["severity"] >= 2], report
    manifests = rendered(given)
    for manifest in manifests.values():
        kubernetes_validate.validate(manifest, KUBERNETES, strict=True)  # raises on an unknown or wrong field
    expected = {"Deployment", "Service", "Job"} | ({"Ingress", "HorizontalPodAutoscaler"} if values else set())
    assert set(manifests) == expected


def test_replicas_are_probed_drained_and_hold_no_secret() -> None:
    deployment = rendered()["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    [gateway] = pod["containers"]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert gateway["startupProbe"]["httpGet"]["path"] == "/health/live"
    env = {item["name"]: item["value"] for item in gateway["env"]}
    pre_stop = gateway["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain, shutdown = float(env["HITL_DRAIN_SECONDS"]), float(env["HITL_SHUTDOWN_TIMEOUT"])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain + shutdown  # the whole way out fits
    assert gateway["envFrom"] == [{"secretRef": {"name": "hitl-gateway"}}]  # by reference
    assert not [name for name in env if "KEY" in name or "URL" in name or "UPSTREAMS" in name]
    assert gateway["securityContext"]["runAsNonRoot"] is True
    assert gateway["resources"]["requests"]["memory"] and gateway["resources"]["requests"]["cpu"]
    assert deployment["spec"]["replicas"] == 2


def test_migrations_run_as_a_hook_before_install_and_upgrade() -> None:
    job = rendered()["Job"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    [migrate] = job["spec"]["template"]["spec"]["containers"]
    assert migrate["args"] == ["hitl", "migrate"] and migrate["envFrom"][0]["secretRef"]["name"] == "hitl-gateway"


def test_production_values_scale_and_expose_the_gateway() -> None:
    manifests = rendered(production())
    assert "replicas" not in manifests["Deployment"]["spec"]  # the autoscaler owns the count
    assert manifests["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == 3
    ingress = manifests["Ingress"]["spec"]
    assert (
        ingress["tls"][0]["secretName"] == "hitl-example-com-tls" and ingress["rules"][0]["host"] == "hitl.example.com"
    )
    [gateway] = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert {"name": "HITL_TRACING__OTLP_ENDPOINT", "value": "http://otel-collector.observability:4318"} in gateway[
        "env"
    ]


def test_a_release_without_its_secret_is_refused() -> None:
    with pytest.raises(HelmError, match="existingSecret"):
        rendered({"existingSecret": ""})
