"""deploy/render.py: the Kubernetes manifests validate against the Kubernetes schemas and fit together."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from tests.test_deploy_dockerfile import image_env

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
        ("--admin-secret", "hpsv3-admin", "--client-label", "app.kubernetes.io/part-of=scorer",
         "--client-namespace-label", "team=ml", "--monitoring-namespace", "observability", "--scratch-size", "4Gi"),
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
    assert {mount["name"] for mount in container["volumeMounts"]} == set(volumes)
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


def _pod(docs: dict[str, dict]) -> tuple[dict, dict]:
    """The Deployment's pod spec and its one container."""
    spec = docs["Deployment/hpsv3"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return spec, container


def _rules(docs: dict[str, dict]) -> dict[tuple[int, ...], list[dict]]:
    """The NetworkPolicy's ingress rules: the ports of each → who may connect to them."""
    rules = docs["NetworkPolicy/hpsv3"]["spec"]["ingress"]
    return {tuple(port["port"] for port in rule["ports"]): rule["from"] for rule in rules}


def test_network_policy_admits_clients_to_http_and_grpc_only() -> None:
    docs = objects()
    policy = docs["NetworkPolicy/hpsv3"]["spec"]
    labels = docs["Deployment/hpsv3"]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    rules = _rules(docs)
    _, container = _pod(docs)
    exposed = {port["containerPort"] for port in container["ports"]}
    assert sorted(port for ports in rules for port in ports) == sorted(exposed)  # each port in one rule
    assert all(peers for peers in rules.values())  # an empty `from` would admit everyone
    assert rules[(8000, 8001)] == [{"podSelector": {"matchLabels": {"hpsv3-client": "true"}}}]  # this namespace


def test_network_policy_admits_clients_from_labelled_namespaces_when_asked() -> None:
    docs = objects("--client-label", "app=scorer", "--client-namespace-label", "team=ml")
    (peer,) = _rules(docs)[(8000, 8001)]
    assert peer == {
        "podSelector": {"matchLabels": {"app": "scorer"}},
        "namespaceSelector": {"matchLabels": {"team": "ml"}},
    }
    with pytest.raises(SystemExit):
        objects("--client-label", "hpsv3-client")


@pytest.mark.parametrize("argv, namespace", [((), "monitoring"), (("--monitoring-namespace", "obs"), "obs")])
def test_network_policy_admits_only_the_monitoring_namespace_to_metrics(argv: tuple[str, ...], namespace: str) -> None:
    selector = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
    assert _rules(objects(*argv))[(8002,)] == [selector]


def test_pod_and_container_are_hardened() -> None:
    pod, container = _pod(objects())
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
    }
    assert pod["automountServiceAccountToken"] is False


def test_the_server_writes_only_to_volumes() -> None:
    pod, container = _pod(objects())
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    writable = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"] if not mount.get("readOnly")}
    assert set(writable) == {"/models/cache", "/dev/shm", "/tmp", render.HOME}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[writable["/tmp"]] and "emptyDir" in volumes[writable[render.HOME]]
    env = image_env()  # the caches the image points somewhere: all in a writable volume
    assert env["HOME"] == render.HOME
    for name in ("XDG_CACHE_HOME", "TRITON_HOME", "TORCHINDUCTOR_CACHE_DIR", "HPSV3_CACHE_DIR", "HF_HOME"):
        assert any(f"{env[name]}/".startswith(f"{path}/") for path in writable), name


def _secret_file(docs: dict[str, dict], variable: str) -> tuple[dict, dict]:
    """The Secret volume and mount behind the file that the environment variable `variable` names."""
    pod, container = _pod(docs)
    (path,) = [env["value"] for env in container["env"] if env["name"] == variable]
    folder, _, key = path.rpartition("/")
    (mount,) = [mount for mount in container["volumeMounts"] if mount["mountPath"] == folder]
    (volume,) = [volume for volume in pod["volumes"] if volume["name"] == mount["name"]]
    assert volume["secret"]["items"] == [{"key": key, "path": key}]
    assert volume["secret"]["defaultMode"] & 0o007 == 0  # not world-readable
    assert mount.get("readOnly") is True
    return volume["secret"], mount


def test_hf_token_is_a_mounted_file_not_an_environment_variable() -> None:
    docs = objects("--hf-secret", "my-hf")
    _, container = _pod(docs)
    assert not {env["name"] for env in container["env"]} & {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"}
    assert not [env for env in container["env"] if "valueFrom" in env]  # no secret in the environment at all
    secret, mount = _secret_file(docs, "HF_TOKEN_PATH")
    assert secret["secretName"] == "my-hf" and secret["items"][0]["key"] == "token"
    assert secret["optional"] is True  # public repos need no token
    assert mount["mountPath"] == "/run/secrets/huggingface"


def test_admin_key_is_an_optional_secret_mounted_read_only() -> None:
    _, container = _pod(objects())
    assert "HPSV3_ADMIN_KEY_FILE" not in {env["name"] for env in container["env"]}  # the entrypoint makes one
    assert not [mount for mount in container["volumeMounts"] if "admin" in mount["mountPath"]]
    secret, mount = _secret_file(objects("--admin-secret", "hpsv3-admin"), "HPSV3_ADMIN_KEY_FILE")
    assert secret["secretName"] == "hpsv3-admin" and secret["items"][0]["key"] == "key"
    assert secret["optional"] is False  # named, it must exist: no silent fallback to a random key
    assert mount["mountPath"] == "/run/secrets/hpsv3-admin"


def test_hub_revisions_reach_the_entrypoint_only_when_pinned() -> None:
    def env(*argv: str) -> dict[str, str]:
        _, container = _pod(objects(*argv))
        return {item["name"]: item.get("value") for item in container["env"]}

    assert "HPSV3_REVISION" not in env() and "HPSV3_BASE_REVISION" not in env()
    pinned = env("--revision", "a" * 40, "--base-revision", "b" * 40)
    assert pinned["HPSV3_REVISION"] == "a" * 40 and pinned["HPSV3_BASE_REVISION"] == "b" * 40


def test_served_models_reach_the_entrypoint() -> None:
    def env(*argv: str) -> dict[str, str]:
        _, container = _pod(objects(*argv))
        return {item["name"]: item.get("value") for item in container["env"]}

    assert env()["HPSV3_MODELS"] == "hpsv3" and "HPSV3_JUDGE_WEIGHTS" not in env()
    chosen = env("--models", "hpsv3,pickscore,clip-h", "--judge-weights", "pickscore=/models/cache/ps",
                 "--judge-weights", "clip-h=/models/cache/ch", "--judge-base", "pickscore=/models/cache/b")  # fmt: skip
    assert chosen["HPSV3_MODELS"] == "hpsv3,pickscore,clip-h"
    assert chosen["HPSV3_JUDGE_BASE"] == "pickscore=/models/cache/b"
    assert chosen["HPSV3_JUDGE_WEIGHTS"] == "pickscore=/models/cache/ps,clip-h=/models/cache/ch"
    assert chosen["HPSV3_REWARDS"] == "1" and env("--no-rewards")["HPSV3_REWARDS"] == "0"


def test_the_adapter_rule_serves_the_autoscalers_metric() -> None:
    values = yaml.safe_load((ROOT / "deploy" / "prometheus-adapter-values.yaml").read_text())
    rule = values["rules"]["custom"][0]
    assert rule["name"]["as"] == render.QUEUE_METRIC
    assert "nv_inference_queue_duration_us" in rule["metricsQuery"] and 'model="hpsv3"' in rule["metricsQuery"]
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


def test_committed_manifests_are_the_rendered_defaults() -> None:
    committed = (ROOT / "deploy" / "hpsv3.yaml").read_text()
    assert committed == render.render([]), "deploy/hpsv3.yaml is stale: python deploy/render.py > deploy/hpsv3.yaml"
