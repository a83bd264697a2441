"""What the deploy tests share: every manifest under deploy/, rendered, and the checks that
are more than one assertion (Pod Security "restricted", custom objects against a CRD)."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from kustomize import is_component, load_documents, render

from scheduler.crds import queue_crd

__all__ = [
    "COMPONENTS",
    "DEPLOY",
    "KUSTOMIZATIONS",
    "OVERLAYS",
    "STANDALONE",
    "Obj",
    "all_manifests",
    "by_kind",
    "one",
    "pod_spec",
    "queue_validator",
    "rendered",
    "restricted_violations",
]

Obj = dict[str, Any]

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("kubernetes", "openshift")
KUSTOMIZATIONS = sorted(
    p.parent for p in DEPLOY.rglob("kustomization.yaml") if not is_component(p.parent)
)
COMPONENTS = sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml") if is_component(p.parent))
# Manifests applied on their own (`kubectl apply -f`), not through a kustomization.
STANDALONE = (DEPLOY / "examples" / "queues-configmap.yaml",)


@cache
def _rendered(directory: Path) -> tuple[Obj, ...]:
    return tuple(render(directory))


def rendered(directory: Path) -> list[Obj]:
    """A fresh copy of a kustomization's objects (tests may modify what they get)."""
    return copy.deepcopy(list(_rendered(directory)))


def all_manifests() -> list[tuple[str, Obj]]:
    """(where, object) for every object a user can apply from deploy/."""
    found = []
    for directory in KUSTOMIZATIONS:
        if directory.name == "base":
            continue  # rendered within each overlay
        where = directory.relative_to(ROOT).as_posix()
        found += [(where, obj) for obj in rendered(directory)]
    for path in STANDALONE:
        found += [(path.relative_to(ROOT).as_posix(), obj) for obj in load_documents(path)]
    return found


def by_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    matches = [o for o in by_kind(objects, kind) if name in (None, o["metadata"]["name"])]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def pod_spec(obj: Obj) -> Obj:
    spec: Obj = obj["spec"]["template"]["spec"]
    return spec


# --- Pod Security "restricted", and what OpenShift's restricted-v2 SCC adds ------------------

_ALLOWED_VOLUMES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)
_SECCOMP_OK = frozenset({"RuntimeDefault", "Localhost"})


def restricted_violations(spec: Obj) -> list[str]:
    """Why a pod spec would be refused by Pod Security "restricted" or by OpenShift's
    restricted-v2 SCC (which assigns UID, fsGroup and SELinux level itself)."""
    problems = []
    pod_sc = spec.get("securityContext", {})
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            problems.append(f"spec.{field} is set")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= _ALLOWED_VOLUMES:
            problems.append(f"volume {volume['name']}: {sorted(kinds)} is not allowed")
    if pod_sc.get("sysctls"):
        problems.append("securityContext.sysctls is set")
    for field in ("runAsUser", "fsGroup"):
        if field in pod_sc:
            problems.append(f"securityContext.{field} is fixed (restricted-v2 assigns it)")
    if "seLinuxOptions" in pod_sc:
        problems.append("securityContext.seLinuxOptions is set (restricted-v2 assigns it)")
    containers = [*spec.get("initContainers", []), *spec.get("containers", [])]
    for c in containers:
        sc = c.get("securityContext", {})
        where = f"container {c['name']}"
        if sc.get("privileged"):
            problems.append(f"{where}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            problems.append(f"{where}: capabilities do not drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{where}: adds capabilities {caps['add']}")
        if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")):
            problems.append(f"{where}: runAsNonRoot is not true")
        if "runAsUser" in sc:
            problems.append(f"{where}: runAsUser is fixed (restricted-v2 assigns it)")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in _SECCOMP_OK:
            problems.append(f"{where}: seccompProfile is {seccomp}, not RuntimeDefault")
        if "seLinuxOptions" in sc:
            problems.append(f"{where}: seLinuxOptions is set (restricted-v2 assigns it)")
        for port in c.get("ports", []):
            if "hostPort" in port:
                problems.append(f"{where}: hostPort {port['hostPort']}")
    return problems


# --- custom objects against the generated CRD ------------------------------------------------


def _as_jsonschema(node: Any) -> Any:
    """OpenAPI v3 (as a CRD holds it) → JSON Schema draft 4, with strict field validation
    (unknown fields rejected, as `kubectl apply` does by default)."""
    if isinstance(node, list):
        return [_as_jsonschema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _as_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    if out.pop("nullable", False):
        out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def queue_validator() -> jsonschema.Draft4Validator:
    """Checks a Queue object as the API server would against queues.apportion.io."""
    schema = copy.deepcopy(queue_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta is the server's
    return jsonschema.Draft4Validator(_as_jsonschema(schema))
