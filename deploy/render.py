"""Render the Kubernetes manifests for N replicas of the HPSv3 Triton server (the image of the root Dockerfile).

    python deploy/render.py > deploy/hpsv3.yaml                         # the committed defaults
    python deploy/render.py --image REGISTRY/hpsv3-serve:gpu --replicas 4 --max-replicas 16 \\
        --namespace ml --gpu-product NVIDIA-H100-80GB-HBM3 --storage-class nfs-rwx | kubectl apply -f -
    python deploy/render.py --engine torch ...       # the fast torch engine: no export, no TensorRT build

Objects (all named --name, labelled app.kubernetes.io/name=--name):
  PersistentVolumeClaim  the model cache (/models/cache), ReadWriteMany: replicas share one export and one
                         engine build (the entrypoint locks it); one GPU model per cache (engines are per GPU)
  Deployment             N replicas; nvidia.com/gpu requests = limits; /dev/shm in memory; startup probe with a
                         budget for the first start's export + engine build, then readiness /v2/health/ready and
                         liveness /v2/health/live; hardened (below)
  Service                ClusterIP: http 8000, grpc 8001, metrics 8002
  Service (headless)     NAME-pods: one DNS record per ready pod, for clients that balance per request
  NetworkPolicy          who may connect to the pods (below)
  HorizontalPodAutoscaler on hpsv3_queue_time_us, the mean queue time per request of each pod: Triton's
                         nv_inference_queue_duration_us via Prometheus Adapter (deploy/prometheus-adapter-values.yaml)
  PodDisruptionBudget    at most one replica down for voluntary disruptions
  ServiceMonitor         with --service-monitor (Prometheus Operator CRD)

Hardening:
  NetworkPolicy   ingress to http 8000 and grpc 8001 only from pods labelled --client-label (hpsv3-client=true)
                  in the server's namespace, or in the namespaces labelled --client-namespace-label when given;
                  to metrics 8002 only from the namespace --monitoring-namespace (monitoring, where Prometheus
                  runs, with or without --service-monitor). Egress is not restricted (hub downloads). The
                  kubelet's probes come from the pod's own node, which the Kubernetes documentation lists among
                  what NetworkPolicy cannot block, and which most network plugins (Calico and Cilium among them,
                  as far as we know) let through; on a plugin that filters it the probes fail, and the nodes'
                  addresses then need an ipBlock rule of their own.
  securityContext uid/gid 1000, runAsNonRoot, seccomp RuntimeDefault, no privilege escalation, every capability
                  dropped, read-only root filesystem. What the server writes goes to volumes: the cache (PVC), /dev/shm
                  (memory), /tmp (the rendered model repository, vLLM's sockets) and HOME=/home/hpsv3, where the
                  image points vLLM's, torch's and Triton's caches (emptyDirs on the node's disk, --scratch-size).
  secrets         no service account token in the pod. The Hugging Face token is a file, not an environment
                  variable: key `token` of the Secret --hf-secret (optional: public repos need none), mounted
                  read-only at /run/secrets/huggingface; HF_TOKEN_PATH names it for huggingface_hub.
                      kubectl -n NS create secret generic hpsv3-hf --from-file=token=$HOME/.cache/huggingface/token
  admin key       Triton's model-repository API (load/unload) answers only requests with the header
                  `hpsv3-admin-key`. Without --admin-secret the entrypoint makes a random key at each start that
                  only it knows. With --admin-secret NAME, key `key` of that Secret is mounted read-only at
                  /run/secrets/hpsv3-admin/key and HPSV3_ADMIN_KEY_FILE names it:
                      openssl rand -hex 32 > admin.key
                      kubectl -n NS create secret generic hpsv3-admin --from-file=key=./admin.key
                      python deploy/render.py --admin-secret hpsv3-admin ... | kubectl -n NS apply -f -
                      kubectl -n NS port-forward deploy/hpsv3 8000:8000 &   # inside the pod, past the policy
                      curl -X POST -H "hpsv3-admin-key: $(cat admin.key)" http://127.0.0.1:8000/v2/repository/index
                  (or from a shell in the pod, kubectl exec); other pods reach port 8000 only with the client label.
"""

from __future__ import annotations

import argparse
import sys

import yaml

QUEUE_METRIC = "hpsv3_queue_time_us"
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
CLIENT_PORTS = ("http", "grpc")
HOME = "/home/hpsv3"  # the image's HOME (Dockerfile), where it points vLLM's, torch's and Triton's caches
HF_TOKEN_DIR = "/run/secrets/huggingface"
ADMIN_KEY_DIR = "/run/secrets/hpsv3-admin"
SECRET_MODE = 0o440  # root-owned, readable by the pod's fsGroup (1000) only


def _metadata(name: str, args: argparse.Namespace) -> dict:
    meta = {"name": name, "labels": {"app.kubernetes.io/name": args.name, "app.kubernetes.io/component": "server"}}
    if args.namespace:
        meta["namespace"] = args.namespace
    return meta


def cache_claim(args: argparse.Namespace) -> dict:
    spec = {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": args.cache_size}}}
    if args.storage_class:
        spec["storageClassName"] = args.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(f"{args.name}-cache", args),
        "spec": spec,
    }


def _probe(path: str, period: int, failures: int) -> dict:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _secret(name: str, secret: str, key: str, folder: str, optional: bool) -> tuple[dict, dict]:
    """A volume with one key of a Secret, and its read-only mount at `folder`/`key`."""
    items = [{"key": key, "path": key}]
    volume = {
        "name": name,
        "secret": {"secretName": secret, "items": items, "defaultMode": SECRET_MODE, "optional": optional},
    }
    return volume, {"name": name, "mountPath": folder, "readOnly": True}


def volumes(args: argparse.Namespace) -> list[tuple[dict, dict]]:
    """Every volume with its mount. The root filesystem is read-only: the first four are all the server writes."""
    pairs = [
        (
            {"name": "cache", "persistentVolumeClaim": {"claimName": f"{args.name}-cache"}},
            {"name": "cache", "mountPath": "/models/cache"},
        ),
        (
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": args.shm_size}},
            {"name": "dshm", "mountPath": "/dev/shm"},
        ),
        ({"name": "tmp", "emptyDir": {"sizeLimit": args.scratch_size}}, {"name": "tmp", "mountPath": "/tmp"}),
        ({"name": "home", "emptyDir": {"sizeLimit": args.scratch_size}}, {"name": "home", "mountPath": HOME}),
        _secret("hf-token", args.hf_secret, "token", HF_TOKEN_DIR, optional=True),
    ]
    if args.admin_secret:  # required once named: a missing Secret holds the pod in ContainerCreating
        pairs.append(_secret("admin-key", args.admin_secret, "key", ADMIN_KEY_DIR, optional=False))
    return pairs


def _revisions(args: argparse.Namespace) -> dict[str, str]:
    """The entrypoint's hub revision settings that were given (none: each repo's main branch)."""
    given = {"HPSV3_REVISION": args.revision, "HPSV3_BASE_REVISION": args.base_revision}
    return {name: value for name, value in given.items() if value}


def _judge_sources(args: argparse.Namespace) -> dict[str, list[str]]:
    """The judges' weights and bases that were given (none: each judge's hub ids)."""
    given = {"HPSV3_JUDGE_WEIGHTS": args.judge_weights, "HPSV3_JUDGE_BASE": args.judge_base}
    return {name: pairs for name, pairs in given.items() if pairs}


def _env(args: argparse.Namespace) -> list[dict]:
    env = [
        {"name": "HPSV3_CHECKPOINT", "value": args.checkpoint},
        {"name": "HPSV3_BASE", "value": args.base},
        *({"name": name, "value": value} for name, value in _revisions(args).items()),
        {"name": "HPSV3_ENGINE", "value": args.engine},
        {"name": "HPSV3_PRECISION", "value": args.precision},
        {"name": "HPSV3_MODELS", "value": args.models},
        {"name": "HPSV3_REWARDS", "value": "1" if args.rewards else "0"},
        *({"name": name, "value": ",".join(pairs)} for name, pairs in _judge_sources(args).items()),
        {"name": "HF_TOKEN_PATH", "value": f"{HF_TOKEN_DIR}/token"},  # huggingface_hub reads the token there
    ]
    if args.admin_secret:  # otherwise the entrypoint makes a random key per start
        env.append({"name": "HPSV3_ADMIN_KEY_FILE", "value": f"{ADMIN_KEY_DIR}/key"})
    return env


def container(args: argparse.Namespace) -> dict:
    gpus = str(args.gpus)
    return {
        "name": "tritonserver",
        "image": args.image,
        "imagePullPolicy": "IfNotPresent",
        "env": _env(args),
        "ports": [{"name": name, "containerPort": port, "protocol": "TCP"} for name, port in PORTS.items()],
        "resources": {
            "requests": {"nvidia.com/gpu": gpus, "cpu": args.cpu, "memory": args.memory},
            "limits": {"nvidia.com/gpu": gpus, "memory": args.memory},
        },
        # first start: hub download, ONNX export and engine build (up to --startup-minutes)
        "startupProbe": _probe("/v2/health/ready", 30, max(1, args.startup_minutes * 2)),
        "readinessProbe": _probe("/v2/health/ready", 10, 3),
        "livenessProbe": _probe("/v2/health/live", 15, 4),
        "volumeMounts": [mount for _, mount in volumes(args)],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
    }


def deployment(args: argparse.Namespace) -> dict:
    labels = {"app.kubernetes.io/name": args.name}
    pod_spec = {
        "automountServiceAccountToken": False,  # the server never calls the Kubernetes API
        "securityContext": {
            "runAsUser": 1000,
            "runAsGroup": 1000,
            "fsGroup": 1000,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationGracePeriodSeconds": 60,
        "containers": [container(args)],
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "volumes": [volume for volume, _ in volumes(args)],
    }
    if args.gpu_product:
        pod_spec["nodeSelector"] = {"nvidia.com/gpu.product": args.gpu_product}
    annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(PORTS["metrics"])}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(args.name, args),
        "spec": {
            "replicas": args.replicas,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec},
        },
    }


def services(args: argparse.Namespace) -> list[dict]:
    ports = [{"name": name, "port": port, "targetPort": name, "protocol": "TCP"} for name, port in PORTS.items()]
    ports[1]["appProtocol"] = "grpc"
    selector = {"app.kubernetes.io/name": args.name}
    cluster = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(args.name, args),
        "spec": {"type": "ClusterIP", "selector": selector, "ports": ports},
    }
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(f"{args.name}-pods", args),
        "spec": {"clusterIP": "None", "selector": selector, "ports": ports[:2]},
    }
    return [cluster, headless]


def _ports(*names: str) -> list[dict]:
    return [{"port": PORTS[name], "protocol": "TCP"} for name in names]


def network_policy(args: argparse.Namespace) -> dict:
    """Clients reach http and grpc, the monitoring namespace reaches metrics; nothing else reaches the pods."""
    clients = {"podSelector": {"matchLabels": args.client_label}}
    if args.client_namespace_label:  # both selectors in one peer: labelled pods in labelled namespaces
        clients["namespaceSelector"] = {"matchLabels": args.client_namespace_label}
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": args.monitoring_namespace}}}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(args.name, args),
        "spec": {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": args.name}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [clients], "ports": _ports(*CLIENT_PORTS)},
                {"from": [monitoring], "ports": _ports("metrics")},
            ],
        },
    }


def autoscaler(args: argparse.Namespace) -> dict:
    metric = {
        "type": "Pods",
        "pods": {
            "metric": {"name": QUEUE_METRIC},
            "target": {"type": "AverageValue", "averageValue": str(args.queue_target_us)},
        },
    }
    behavior = {  # GPU pods take minutes to become ready: scale up at once, down slowly
        "scaleUp": {"stabilizationWindowSeconds": 60, "policies": [{"type": "Pods", "value": 2, "periodSeconds": 120}]},
        "scaleDown": {
            "stabilizationWindowSeconds": 600,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}],
        },
    }
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(args.name, args),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": args.name},
            "minReplicas": args.replicas,
            "maxReplicas": max(args.max_replicas, args.replicas),
            "metrics": [metric],
            "behavior": behavior,
        },
    }


def disruption_budget(args: argparse.Namespace) -> dict:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(args.name, args),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": args.name}}},
    }


def service_monitor(args: argparse.Namespace) -> dict:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _metadata(args.name, args),
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": args.name}},
            "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
        },
    }


def manifests(args: argparse.Namespace) -> list[dict]:
    """Every object, in apply order."""
    objects = [
        cache_claim(args),
        deployment(args),
        *services(args),
        network_policy(args),
        autoscaler(args),
        disruption_budget(args),
    ]
    return [*objects, service_monitor(args)] if args.service_monitor else objects


def _label(text: str) -> dict[str, str]:
    """KEY=VALUE on the command line → a matchLabels mapping."""
    key, sep, value = text.partition("=")
    if not (key and sep):
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return {key: value}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--name", default="hpsv3", help="name of every object")
    add("--namespace", help="namespace (default: none in the files, kubectl's -n decides)")
    add("--image", default="hpsv3-serve:gpu", help="the image of the Dockerfile (docker build .), in your registry")
    add("--replicas", type=int, default=2, help="replicas, and the autoscaler's minimum")
    add("--max-replicas", type=int, default=8, help="the autoscaler's maximum")
    add("--queue-target-us", type=int, default=50000, help="mean queue time per request to hold (µs)")
    add("--gpus", type=int, default=1, help="nvidia.com/gpu per replica")
    add("--gpu-product", help="nodeSelector nvidia.com/gpu.product (GPU feature discovery), e.g. NVIDIA-H100-80GB-HBM3")
    add("--cpu", default="8", help="CPU request per replica (image decoding)")
    add("--memory", default="64Gi", help="memory per replica (the first start's ONNX export needs ~35 GB)")
    add("--shm-size", default="8Gi", help="/dev/shm (Triton's Python backend passes tensors through it)")
    add("--cache-size", default="200Gi", help="cache volume: checkpoint, ONNX export, vLLM folder, engines")
    add("--storage-class", help="a ReadWriteMany storage class (NFS, Filestore, EFS, ...)")
    add("--checkpoint", default="MizzenAI/HPSv3", help="HPSV3_CHECKPOINT: hub id or a path in the cache volume")
    add("--base", default="Qwen/Qwen2-VL-7B-Instruct", help="HPSV3_BASE: hub id or a path in the cache volume")
    add("--revision", help="HPSV3_REVISION: commit hash (or branch, tag) of the --checkpoint hub repo; pin one so "
        "that every replica serves the same bytes")  # fmt: skip
    add("--base-revision", help="HPSV3_BASE_REVISION: commit hash (or branch, tag) of the --base hub repo")
    add("--engine", choices=("tensorrt-vllm", "torch"), default="tensorrt-vllm",
        help="HPSV3_ENGINE: TensorRT + vLLM (built on first start) or the fast torch engine (no build)")  # fmt: skip
    add("--precision", default="bf16", help="HPSV3_PRECISION: vision encoder engine precision (tensorrt-vllm)")
    add("--models", default="hpsv3", help="HPSV3_MODELS: reward models to serve, hpsv3 and other judges "
        "(README: Other reward models), each on the GPU in the judge's torch model, all in `rewards`")  # fmt: skip
    add("--rewards", action=argparse.BooleanOptionalAction, default=True,
        help="HPSV3_REWARDS: serve `rewards` beside other models; --no-rewards: the judges alone, without its second "
        "copy of their weights")  # fmt: skip
    add("--judge-weights", action="append", default=[], metavar="NAME=PATH",
        help="HPSV3_JUDGE_WEIGHTS: a judge's weights (hub id or a path in the cache volume); repeatable")  # fmt: skip
    add("--judge-base", action="append", default=[], metavar="NAME=PATH",
        help="HPSV3_JUDGE_BASE: what a judge is built on (hub id or a path in the cache volume)")  # fmt: skip
    add("--scratch-size", default="16Gi", help="sizeLimit of /tmp and of HOME, emptyDirs on the node's disk")
    add("--hf-secret", default="hpsv3-hf", help="Secret whose key `token` is the Hugging Face token (optional)")
    add("--admin-secret", help="Secret whose key `key` is the model-control admin key (default: random per start)")
    add("--client-label", type=_label, default="hpsv3-client=true", help="pods allowed to http and grpc (KEY=VALUE)")
    add(
        "--client-namespace-label",
        type=_label,
        help="KEY=VALUE: clients may be in the namespaces with this label (default: the server's namespace only)",
    )
    add("--monitoring-namespace", default="monitoring", help="the only namespace allowed to the metrics port")
    add("--startup-minutes", type=int, default=120, help="first-start budget before the pod is restarted")
    add("--service-monitor", action="store_true", help="also a ServiceMonitor (for a Prometheus Operator)")
    return parser


class _PlainDumper(yaml.SafeDumper):
    """No `&id001` anchors for dicts used twice: every object reads on its own."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def render(argv: list[str] | None = None) -> str:
    """The manifests for `argv` as one multi-document YAML text."""
    args = build_parser().parse_args(argv)
    return yaml.dump_all(manifests(args), Dumper=_PlainDumper, sort_keys=False, width=120)


if __name__ == "__main__":
    sys.stdout.write(render())
