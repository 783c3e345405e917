"""deploy/render.py: the Kubernetes manifests validate against the Kubernetes schemas and fit together."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is missing: pip install -e '.[deploy-checks]' (make does)"
)
K8S_VERSIONS = ("1.30", "1.33")  # an older supported cluster and a recent one


def _renderer():
    spec = importlib.util.spec_from_file_location("deploy_render", ROOT / "deploy" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _renderer()


def objects(*argv: str) -> dict[str, dict]:
    docs = list(yaml.safe_load_all(render.render(list(argv))))
    return {f"{doc['kind']}/{doc['metadata']['name']}": doc for doc in docs}


@pytest.mark.parametrize(
    "argv",
    [
        (),
        ("--replicas", "4", "--max-replicas", "16", "--gpus", "2", "--namespace", "ml", "--storage-class", "nfs",
         "--gpu-product", "NVIDIA-H100-80GB-HBM3", "--image", "registry.example.com/hpsv3:1", "--service-monitor"),
    ],
)  # fmt: skip
def test_manifests_validate_against_the_kubernetes_schemas(argv: tuple[str, ...]) -> None:
    for name, doc in objects(*argv).items():
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: not in the Kubernetes schemas (checked below)
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "hpsv3", name


def test_strict_validation_catches_a_misspelt_field() -> None:
    deployment = objects()["Deployment/hpsv3"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_the_pieces_fit_together() -> None:
    docs = objects("--replicas", "3", "--gpus", "2", "--service-monitor")
    pod = docs["Deployment/hpsv3"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert docs["Deployment/hpsv3"]["spec"]["replicas"] == 3
    assert container["resources"]["requests"]["nvidia.com/gpu"] == container["resources"]["limits"]["nvidia.com/gpu"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 3600  # first start: export + engine build
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert volumes["cache"]["persistentVolumeClaim"]["claimName"] in {name.split("/")[1] for name in docs}
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert {"/dev/shm", "/models/cache"} <= mounts
    token = next(env for env in container["env"] if env["name"] == "HF_TOKEN")
    assert token["valueFrom"]["secretKeyRef"]["key"] == "HF_TOKEN"
    for service in (docs["Service/hpsv3"], docs["Service/hpsv3-pods"]):
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        assert {port["targetPort"] for port in service["spec"]["ports"]} <= set(ports)
    assert {port["port"] for port in docs["Service/hpsv3"]["spec"]["ports"]} == {8000, 8001, 8002}
    hpa = docs["HorizontalPodAutoscaler/hpsv3"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "hpsv3" and hpa["minReplicas"] == 3
    assert hpa["metrics"][0]["pods"]["metric"]["name"] == render.QUEUE_METRIC
    monitor = docs["ServiceMonitor/hpsv3"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= docs["Service/hpsv3"]["metadata"]["labels"].items()
    assert monitor["endpoints"][0]["port"] == "metrics"


def test_the_adapter_rule_serves_the_autoscalers_metric() -> None:
    values = yaml.safe_load((ROOT / "deploy" / "prometheus-adapter-values.yaml").read_text())
    rule = values["rules"]["custom"][0]
    assert rule["name"]["as"] == render.QUEUE_METRIC
    assert "nv_inference_queue_duration_us" in rule["metricsQuery"] and 'model="hpsv3"' in rule["metricsQuery"]
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


def test_committed_manifests_are_the_rendered_defaults() -> None:
    committed = (ROOT / "deploy" / "hpsv3.yaml").read_text()
    assert committed == render.render([]), "deploy/hpsv3.yaml is stale: python deploy/render.py > deploy/hpsv3.yaml"
