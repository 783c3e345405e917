"""Render the Kubernetes manifests for N replicas of the HPSv3 Triton server (the image of docker/Dockerfile).

    python deploy/render.py > deploy/hpsv3.yaml                         # the committed defaults
    python deploy/render.py --image REGISTRY/hpsv3-serve:gpu --replicas 4 --max-replicas 16 \\
        --namespace ml --gpu-product NVIDIA-H100-80GB-HBM3 --storage-class nfs-rwx | kubectl apply -f -

Objects (all named --name, labelled app.kubernetes.io/name=--name):
  PersistentVolumeClaim  the model cache (/models/cache), ReadWriteMany: replicas share one export and one
                         engine build (the entrypoint locks it); one GPU model per cache (engines are per GPU)
  Deployment             N replicas; nvidia.com/gpu requests = limits; /dev/shm in memory; HF_TOKEN from the
                         Secret --hf-secret (optional); startup probe with a budget for the first start's
                         export + engine build, then readiness /v2/health/ready and liveness /v2/health/live
  Service                ClusterIP: http 8000, grpc 8001, metrics 8002
  Service (headless)     NAME-pods: one DNS record per ready pod, for clients that balance per request
  HorizontalPodAutoscaler on hpsv3_queue_time_us, the mean queue time per request of each pod: Triton's
                         nv_inference_queue_duration_us via Prometheus Adapter (deploy/prometheus-adapter-values.yaml)
  PodDisruptionBudget    at most one replica down for voluntary disruptions
  ServiceMonitor         with --service-monitor (Prometheus Operator CRD)
"""

from __future__ import annotations

import argparse
import sys

import yaml

QUEUE_METRIC = "hpsv3_queue_time_us"
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}


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


def container(args: argparse.Namespace) -> dict:
    env = [
        {"name": "HPSV3_CHECKPOINT", "value": args.checkpoint},
        {"name": "HPSV3_BASE", "value": args.base},
        {"name": "HPSV3_PRECISION", "value": args.precision},
        {
            "name": "HF_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": args.hf_secret, "key": "HF_TOKEN", "optional": True}},
        },
    ]
    gpus = str(args.gpus)
    return {
        "name": "tritonserver",
        "image": args.image,
        "imagePullPolicy": "IfNotPresent",
        "env": env,
        "ports": [{"name": name, "containerPort": port, "protocol": "TCP"} for name, port in PORTS.items()],
        "resources": {
            "requests": {"nvidia.com/gpu": gpus, "cpu": args.cpu, "memory": args.memory},
            "limits": {"nvidia.com/gpu": gpus, "memory": args.memory},
        },
        # first start: hub download, ONNX export and engine build (up to --startup-minutes)
        "startupProbe": _probe("/v2/health/ready", 30, max(1, args.startup_minutes * 2)),
        "readinessProbe": _probe("/v2/health/ready", 10, 3),
        "livenessProbe": _probe("/v2/health/live", 15, 4),
        "volumeMounts": [{"name": "cache", "mountPath": "/models/cache"}, {"name": "dshm", "mountPath": "/dev/shm"}],
        "securityContext": {"allowPrivilegeEscalation": False},
    }


def deployment(args: argparse.Namespace) -> dict:
    labels = {"app.kubernetes.io/name": args.name}
    pod_spec = {
        "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000, "runAsNonRoot": True},
        "terminationGracePeriodSeconds": 60,
        "containers": [container(args)],
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "volumes": [
            {"name": "cache", "persistentVolumeClaim": {"claimName": f"{args.name}-cache"}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": args.shm_size}},
        ],
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
    objects = [cache_claim(args), deployment(args), *services(args), autoscaler(args), disruption_budget(args)]
    return [*objects, service_monitor(args)] if args.service_monitor else objects


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--name", default="hpsv3", help="name of every object")
    add("--namespace", help="namespace (default: none in the files, kubectl's -n decides)")
    add("--image", default="hpsv3-serve:gpu", help="the image built from docker/Dockerfile, in your registry")
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
    add("--precision", default="bf16", help="HPSV3_PRECISION: vision encoder engine precision")
    add("--hf-secret", default="hpsv3-hf", help="Secret with key HF_TOKEN (optional: public repos need none)")
    add("--startup-minutes", type=int, default=120, help="first-start budget before the pod is restarted")
    add("--service-monitor", action="store_true", help="also a ServiceMonitor (needs the Prometheus Operator)")
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
