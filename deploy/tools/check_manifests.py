#!/usr/bin/env python3
"""Offline checks of rendered Tenantry manifests (called by deploy/validate.sh).

For every rendered target (an overlay, the base, an example):
  1. every object is validated against the Kubernetes OpenAPI schemas bundled in the
     `kubernetes-validate` package, strictly (unknown fields are errors), for each pinned
     Kubernetes version; an object whose kind has no schema is an error unless its
     apiVersion/kind is explicitly listed with --skip-kind (custom resources);
  2. project rules no schema can express: security context, resources, probes, termination grace
     vs. the configured shutdown grace, configuration keys known to crates/common/src/config.rs,
     database URLs only from Secrets and only the pod's own, references between objects
     (ConfigMaps, Services -> pods, HPA/PDB -> Deployments), a default-deny NetworkPolicy;
  3. with --ha TARGET: every server Deployment has an HPA and a PDB and leaves replicas to the HPA.

Exit status 0 when everything passed, 1 otherwise. Prints one line per target and every problem.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
import kubernetes_validate
import kubernetes_validate.utils as kv_utils

# The validator re-reads ~1 MB of JSON definitions per object; cache the parsed schema files.
kv_utils.schema_contents = functools.lru_cache(maxsize=None)(kv_utils.schema_contents)

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
SERVER_COMPONENT = "server"
OWN_IMAGE = re.compile(r"(^|/)tenantry(-agent)?(:|@|$)")
DB_URL_KEYS = {"TENANTRY_TENANT_DATABASE_URL", "TENANTRY_ENTITLEMENT_DATABASE_URL"}
# Which database URL each of our binaries may hold.
OWN_DB = {
    "tenant-service": {"TENANTRY_TENANT_DATABASE_URL"},
    "entitlement-service": {"TENANTRY_ENTITLEMENT_DATABASE_URL"},
    "gateway": set(),
}
NON_KEY_VARIABLES = {"TENANTRY_CONFIG"}
SHUTDOWN_MARGIN_SECONDS = 5


@dataclass
class Target:
    name: str
    path: Path
    ha: bool = False
    objects: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def error(self, obj: dict | None, message: str) -> None:
        where = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}: " if obj else ""
        self.errors.append(f"{where}{message}")


def config_keys(config_rs: Path) -> set[str]:
    """Field names of `pub struct Config` — every key a binary accepts."""
    text = config_rs.read_text()
    match = re.search(r"pub struct Config \{(.*?)\n\}", text, re.S)
    if not match:
        raise SystemExit(f"cannot find `pub struct Config` in {config_rs}")
    keys = set(re.findall(r"^\s*pub (\w+):", match.group(1), re.M))
    if not keys:
        raise SystemExit(f"no fields found in `pub struct Config` of {config_rs}")
    return keys


def pod_spec(obj: dict) -> dict | None:
    kind = obj.get("kind")
    if kind in {"Deployment", "StatefulSet", "DaemonSet"}:
        return obj["spec"]["template"]["spec"]
    if kind == "Job":
        return obj["spec"]["template"]["spec"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def pod_labels(obj: dict) -> dict:
    if obj.get("kind") == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("labels", {})
    return obj["spec"]["template"].get("metadata", {}).get("labels", {})


def labels_match(selector: dict, labels: dict) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def check_schema(target: Target, versions: list[str], skip_kinds: set[str]) -> None:
    for obj in target.objects:
        api_kind = f"{obj.get('apiVersion')}/{obj.get('kind')}"
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path) or "(root)"
                target.error(obj, f"schema (Kubernetes {version}, strict): {path}: {e.message}")
            except kv_utils.SchemaNotFoundError:
                if api_kind in skip_kinds:
                    note = f"{api_kind} {obj['metadata']['name']} (custom resource, no bundled schema)"
                    if note not in target.skipped:
                        target.skipped.append(note)
                else:
                    target.error(obj, f"no Kubernetes {version} schema for {api_kind}")
            except kv_utils.VersionNotSupportedError:
                raise SystemExit(f"kubernetes-validate does not support Kubernetes {version}")


def container_env(target: Target, obj: dict, container: dict, config_maps: dict) -> dict:
    """The environment a container sees: envFrom ConfigMaps, then env (literal or reference)."""
    env: dict[str, object] = {}
    for source in container.get("envFrom") or []:
        ref = source.get("configMapRef")
        if ref:
            cm = config_maps.get(ref["name"])
            if cm is None:
                if not ref.get("optional"):
                    target.error(obj, f"envFrom ConfigMap {ref['name']} is not in the render")
                continue
            env.update(cm.get("data") or {})
        elif source.get("secretRef"):
            target.error(obj, "envFrom a Secret hides which keys a pod gets; use secretKeyRef")
    for var in container.get("env") or []:
        if "valueFrom" in var:
            env[var["name"]] = var["valueFrom"]
        else:
            env[var["name"]] = var.get("value", "")
    return env


def check_workload(target: Target, obj: dict, keys: set[str], config_maps: dict) -> None:
    spec = pod_spec(obj)
    if spec is None:
        return
    psc = spec.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True:
        target.error(obj, "pod securityContext.runAsNonRoot must be true")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        target.error(obj, "pod securityContext.seccompProfile.type must be RuntimeDefault")
    if spec.get("automountServiceAccountToken") is not False:
        target.error(obj, "automountServiceAccountToken must be false (no workload uses the API)")
    if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
        target.error(obj, "host namespaces are not allowed")

    containers = [("initContainer", c) for c in spec.get("initContainers") or []]
    containers += [("container", c) for c in spec.get("containers") or []]
    for what, c in containers:
        name = f"{what} {c['name']}"
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            target.error(obj, f"{name}: allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            target.error(obj, f"{name}: readOnlyRootFilesystem must be true")
        if sc.get("privileged"):
            target.error(obj, f"{name}: privileged is not allowed")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            target.error(obj, f"{name}: capabilities.drop must contain ALL")
        if (sc.get("capabilities") or {}).get("add"):
            target.error(obj, f"{name}: no capabilities may be added")
        res = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in (res.get(kind) or {}):
                    target.error(obj, f"{name}: resources.{kind}.{r} is not set")
        image = c.get("image", "")
        if image.endswith(":latest") or (":" not in image.rsplit("/", 1)[-1] and "@" not in image):
            target.error(obj, f"{name}: image {image!r} has no pinned tag or digest")

        if not OWN_IMAGE.search(image):
            continue
        env = container_env(target, obj, c, config_maps)
        for var in env:
            if var.startswith("TENANTRY_") and var not in NON_KEY_VARIABLES:
                key = var[len("TENANTRY_"):].lower()
                if key not in keys:
                    target.error(
                        obj,
                        f"{name}: {var} is not a configuration key (config.rs has no `{key}`; "
                        "the binaries refuse unknown keys)",
                    )
        for var in DB_URL_KEYS & env.keys():
            if not (isinstance(env[var], dict) and "secretKeyRef" in env[var]):
                target.error(obj, f"{name}: {var} must come from a Secret (secretKeyRef)")
        binary = Path((c.get("command") or [""])[0]).name
        if binary in OWN_DB:
            for var in (DB_URL_KEYS & env.keys()) - OWN_DB[binary]:
                target.error(obj, f"{name}: {binary} must not hold another service's {var}")
        if binary == "tenantry" and "migrate" in (c.get("command") or []):
            command = c["command"]
            service = command[command.index("--service") + 1] if "--service" in command else "all"
            if service == "all":
                target.error(obj, f"{name}: each migration Job migrates one service with its own role")
            elif set(DB_URL_KEYS & env.keys()) != {f"TENANTRY_{service.upper()}_DATABASE_URL"}:
                target.error(obj, f"{name}: the {service} migrator must get exactly its own database URL")

        if obj["kind"] != "Deployment":
            continue
        if binary in {"tenant-service", "entitlement-service"} and str(
            env.get("TENANTRY_MIGRATE_ON_START", "true")
        ).lower() != "false":
            target.error(obj, f"{name}: TENANTRY_MIGRATE_ON_START must be false (a Job migrates)")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe not in c:
                target.error(obj, f"{name}: {probe} is missing")
        ports = {p["containerPort"] for p in c.get("ports") or []}
        port_names = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
        if binary in {"tenant-service", "entitlement-service"}:
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                grpc = (c.get(probe) or {}).get("grpc")
                if not grpc or grpc.get("port") not in ports:
                    target.error(obj, f"{name}: {probe} must be a native gRPC probe on the gRPC port")
        live = (c.get("livenessProbe") or {}).get("httpGet") or {}
        if live.get("path") == "/readyz":
            target.error(obj, f"{name}: liveness must not depend on other services (/readyz)")
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            http = (c.get(probe) or {}).get("httpGet")
            if http and http["port"] not in ports and http["port"] not in port_names:
                target.error(obj, f"{name}: {probe} targets port {http['port']} the container does not expose")
        # Graceful shutdown: preStop delay + drain grace must fit in the termination grace.
        grace_ms = int(str(env.get("TENANTRY_SHUTDOWN_GRACE_MS", "25000")))
        pre_stop = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds")
        if pre_stop is None:
            target.error(obj, f"{name}: preStop sleep is missing (endpoints need time to drop the pod)")
            pre_stop = 0
        termination = spec.get("terminationGracePeriodSeconds", 30)
        needed = pre_stop + grace_ms / 1000 + SHUTDOWN_MARGIN_SECONDS
        if termination < needed:
            target.error(
                obj,
                f"terminationGracePeriodSeconds {termination} < preStop {pre_stop}s + "
                f"shutdown grace {grace_ms / 1000:g}s + {SHUTDOWN_MARGIN_SECONDS}s margin",
            )
        if not spec.get("topologySpreadConstraints"):
            target.error(obj, "topologySpreadConstraints are missing")


def check_references(target: Target) -> None:
    by_kind: dict[str, dict[str, dict]] = {}
    for obj in target.objects:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
    workloads = [o for o in target.objects if o["kind"] in WORKLOAD_KINDS]

    for svc in by_kind.get("Service", {}).values():
        selector = svc["spec"].get("selector")
        if not selector:
            target.error(svc, "has no selector")
            continue
        backends = [
            w for w in workloads
            if w["kind"] != "Job" and all(pod_labels(w).get(k) == v for k, v in selector.items())
        ]
        if not backends:
            target.error(svc, f"selector {selector} matches no pod template")
            continue
        for port in svc["spec"].get("ports", []):
            tp = port.get("targetPort", port["port"])
            for w in backends:
                exposed = {
                    p.get("name") if isinstance(tp, str) else p["containerPort"]
                    for c in pod_spec(w)["containers"] for p in c.get("ports") or []
                }
                if tp not in exposed:
                    target.error(svc, f"targetPort {tp!r} is not a port of {w['kind']}/{w['metadata']['name']}")
            if port.get("name", "").startswith("grpc") and port.get("appProtocol") not in {
                "kubernetes.io/h2c", "grpc",
            }:
                target.error(svc, f"gRPC port {port.get('name')} needs appProtocol kubernetes.io/h2c (or grpc)")

    for kind in ("HorizontalPodAutoscaler",):
        for hpa in by_kind.get(kind, {}).values():
            ref = hpa["spec"]["scaleTargetRef"]
            if ref["name"] not in by_kind.get(ref["kind"], {}):
                target.error(hpa, f"scales {ref['kind']}/{ref['name']}, which is not in the render")
    for pdb in by_kind.get("PodDisruptionBudget", {}).values():
        if not any(w["kind"] != "Job" and labels_match(pdb["spec"]["selector"], pod_labels(w)) for w in workloads):
            target.error(pdb, "selector matches no workload")
    for np in by_kind.get("NetworkPolicy", {}).values():
        sel = np["spec"]["podSelector"]
        if sel and not any(labels_match(sel, pod_labels(w)) for w in workloads):
            target.error(np, f"podSelector {sel} matches no pod in the render")
    # A default-deny policy must exist wherever workloads do.
    if workloads and not any(
        np["spec"]["podSelector"] == {} and set(np["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not np["spec"].get("ingress") and not np["spec"].get("egress")
        for np in by_kind.get("NetworkPolicy", {}).values()
    ):
        target.errors.append("no default-deny NetworkPolicy (empty podSelector, Ingress+Egress, no rules)")
    for cm_ref in {
        (w["kind"], w["metadata"]["name"], v["configMap"]["name"])
        for w in workloads for v in pod_spec(w).get("volumes") or [] if "configMap" in v
    }:
        if cm_ref[2] not in by_kind.get("ConfigMap", {}):
            target.errors.append(f"{cm_ref[0]}/{cm_ref[1]}: volume ConfigMap {cm_ref[2]} is not in the render")

    if target.ha:
        hpas = {h["spec"]["scaleTargetRef"]["name"] for h in by_kind.get("HorizontalPodAutoscaler", {}).values()}
        for dep in by_kind.get("Deployment", {}).values():
            if dep["metadata"].get("labels", {}).get("app.kubernetes.io/component") != SERVER_COMPONENT:
                continue
            if dep["metadata"]["name"] not in hpas:
                target.error(dep, "has no HorizontalPodAutoscaler")
            elif "replicas" in dep["spec"]:
                target.error(dep, "sets replicas although an HPA owns them")
            if not any(
                labels_match(p["spec"]["selector"], pod_labels(dep))
                for p in by_kind.get("PodDisruptionBudget", {}).values()
            ):
                target.error(dep, "has no PodDisruptionBudget")


def secrets_used(target: Target) -> dict[str, set[str]]:
    names: dict[str, set[str]] = {}
    for w in target.objects:
        spec = pod_spec(w) if w["kind"] in WORKLOAD_KINDS else None
        if not spec:
            continue
        for c in (spec.get("initContainers") or []) + spec["containers"]:
            for var in c.get("env") or []:
                ref = (var.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    names.setdefault(ref["name"], set()).add(ref["key"])
        for v in spec.get("volumes") or []:
            if "secret" in v:
                names.setdefault(v["secret"]["secretName"], set()).add("(volume)")
    return names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-rs", type=Path, required=True)
    parser.add_argument("--k8s-version", action="append", required=True)
    parser.add_argument("--skip-kind", action="append", default=[], help="apiVersion/kind with no schema, e.g. postgresql.cnpg.io/v1/Cluster")
    parser.add_argument("--ha", action="append", default=[], help="target that must have HPA + PDB per server")
    parser.add_argument("targets", nargs="+", help="NAME=RENDERED.yaml")
    args = parser.parse_args()

    keys = config_keys(args.config_rs)
    failed = False
    for spec in args.targets:
        name, _, path = spec.partition("=")
        target = Target(name=name, path=Path(path), ha=name in args.ha)
        target.objects = [o for o in yaml.safe_load_all(target.path.read_text()) if o]
        if not target.objects:
            target.errors.append("renders no objects")
        check_schema(target, args.k8s_version, set(args.skip_kind))
        config_maps = {o["metadata"]["name"]: o for o in target.objects if o["kind"] == "ConfigMap"}
        for obj in target.objects:
            check_workload(target, obj, keys, config_maps)
        check_references(target)

        kinds: dict[str, int] = {}
        for o in target.objects:
            kinds[o["kind"]] = kinds.get(o["kind"], 0) + 1
        summary = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        status = "FAIL" if target.errors else "ok"
        print(f"  {status:4} {name}: {len(target.objects)} objects ({summary})")
        for note in target.skipped:
            print(f"       skipped schema: {note}")
        used = secrets_used(target)
        if used:
            listed = "; ".join(f"{n} ({', '.join(sorted(k))})" for n, k in sorted(used.items()))
            print(f"       Secrets it reads (created by the operator): {listed}")
        for err in target.errors:
            print(f"       ERROR {err}")
        failed |= bool(target.errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
