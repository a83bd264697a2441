"""RBAC grants exactly what webhook/ calls: no more, no less (tests/apicalls.py reads the calls)."""

from __future__ import annotations

from pathlib import Path

import pytest
from apicalls import Permission, client_endpoints, rule_permissions, scan_source
from kustomize import load_documents

ROOT = Path(__file__).resolve().parents[1]
RBAC = ROOT / "deploy" / "base" / "rbac.yaml"
# Only the own namespace: the Lease and the queue ConfigMap.
NAMESPACED_ONLY = {("coordination.k8s.io", "leases"), ("", "configmaps")}


def roles() -> list[dict]:
    return [d for d in load_documents(RBAC) if d["kind"] in ("ClusterRole", "Role")]


def scan(source: str):
    return scan_source(source, "webhook/x.py")


def needs(source: str) -> set[str]:
    result = scan(source)
    assert not result.problems, result.problems
    return {str(p) for p in result.permissions}


# --- the scanner, on small sources -----------------------------------------------------------


def test_the_client_endpoints_are_read_from_the_installed_client():
    endpoints = client_endpoints()
    (eviction,) = endpoints["create_namespaced_pod_eviction"]
    assert (eviction.api_class, eviction.http_method) == ("CoreV1Api", "POST")
    assert eviction.path.endswith("/pods/{name}/eviction")
    assert {e.api_class for e in endpoints["create_namespaced_event"]} == {
        "CoreV1Api",
        "EventsV1Api",
    }


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "from kubernetes import client\nv1 = client.CoreV1Api()\n"
            "v1.list_pod_for_all_namespaces(label_selector='a')",
            {"core/pods:list"},
        ),
        (
            "v1.patch_namespaced_pod(name, ns, body)\nv1.read_namespaced_pod(name, ns)",
            {"core/pods:patch", "core/pods:get"},
        ),
        ("core.create_namespaced_pod_eviction(n, ns, body)", {"core/pods/eviction:create"}),
        ("api.list_node()\napi.read_node('n')", {"core/nodes:list", "core/nodes:get"}),
        (
            "api.list_namespace()\napi.read_namespace('a')",
            {"core/namespaces:list", "core/namespaces:get"},
        ),
        (
            "class Elector:\n"
            "    def __init__(self, api):\n"
            "        self.leases = client.CoordinationV1Api(api)\n"
            "    def renew(self):\n"
            "        self.leases.read_namespaced_lease('apportion-controller', ns)\n"
            "        self.leases.replace_namespaced_lease('apportion-controller', ns, body)\n"
            "        self.leases.create_namespaced_lease(ns, body)\n",
            {
                "coordination.k8s.io/leases:get",
                "coordination.k8s.io/leases:update",
                "coordination.k8s.io/leases:create",
            },
        ),
        (
            "from kubernetes import watch\nw = watch.Watch()\n"
            "for event in w.stream(v1.list_node, timeout_seconds=60):\n    pass",
            {"core/nodes:watch"},
        ),
        (
            "async def run(core: CoreV1Api):\n"
            "    async for e in watch.Watch().stream(core.list_pod_for_all_namespaces):\n"
            "        await core.create_namespaced_event(ns, body)",
            {"core/pods:watch", "core/events:create"},
        ),
        (
            "GROUP = 'apportion.io'\n"
            "objects.list_cluster_custom_object(GROUP, 'v1alpha1', 'queues')\n"
            "objects.patch_cluster_custom_object_status(\n"
            "    group=GROUP, version='v1alpha1', plural='queues', name=n, body=b)",
            {"apportion.io/queues:list", "apportion.io/queues/status:patch"},
        ),
        (
            "from scheduler.crds import GROUP, QUEUE_PLURAL, VERSION\n"
            "from scheduler import crds\n"
            "w.stream(objects.list_cluster_custom_object, GROUP, VERSION, QUEUE_PLURAL)\n"
            "objects.get_cluster_custom_object(crds.GROUP, crds.VERSION, crds.QUEUE_PLURAL, n)",
            {"apportion.io/queues:watch", "apportion.io/queues:get"},
        ),
        (
            "events: EventsV1Api = make()\nevents.create_namespaced_event(ns, body)",
            {"events.k8s.io/events:create"},
        ),
        ("self.list_nodes()\nd.get('x')\nqueue.patch(x)\nlog.read_node_state()", set()),
    ],
)
def test_the_scanner_maps_calls_to_permissions(source, expected):
    assert needs(source) == expected


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("api.create_namespaced_event(ns, body)", "could be CoreV1Api, EventsV1Api"),
        ("objects.list_cluster_custom_object(group, 'v1', plural)", "cannot tell the group"),
        ("w.stream(v1.read_node, 'a')", "not a list call"),
    ],
)
def test_the_scanner_reports_what_it_cannot_resolve(source, problem):
    result = scan(source)
    assert any(problem in p for p in result.problems), result.problems
    assert any("webhook/x.py line 1" in p for p in result.problems)


def test_rules_are_expanded_and_wildcards_refused():
    role = {
        "kind": "Role",
        "metadata": {"name": "r"},
        "rules": [{"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get"]}],
    }
    assert set(rule_permissions([role])) == {
        Permission("", "pods", "get"),
        Permission("", "nodes", "get"),
    }
    role["rules"][0]["verbs"] = ["*"]
    with pytest.raises(ValueError, match="wildcard"):
        rule_permissions([role])


# --- the manifests ---------------------------------------------------------------------------


def test_rbac_is_least_privilege_by_construction():
    granted = rule_permissions(roles())  # refuses wildcards
    cluster = {p for p, owners in granted.items() if any("ClusterRole" in o for o in owners)}
    for permission in cluster:
        assert (permission.group, permission.resource) not in NAMESPACED_ONLY, permission
        assert permission.resource != "secrets", "the webhook reads its TLS files, not Secrets"
        assert permission.verb not in (
            "delete",
            "deletecollection",
            "escalate",
            "bind",
            "impersonate",
        )
    (role,) = [r for r in roles() if r["kind"] == "Role"]
    assert role["metadata"]["namespace"] == "apportion-system"


def _compare(needed: dict[Permission, list[str]]) -> None:
    granted = set(rule_permissions(roles()))
    missing = sorted(set(needed) - granted)
    unused = sorted(granted - set(needed))
    assert not missing, "webhook/ calls what RBAC does not grant: " + ", ".join(
        f"{p} ({needed[p][0]})" for p in missing
    )
    assert not unused, "RBAC grants what webhook/ never calls: " + ", ".join(map(str, unused))


def test_rbac_grants_exactly_what_webhook_calls():
    result = scan_source("")
    for path in sorted((ROOT / "webhook").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        scan_source(path.read_text(encoding="utf-8"), rel, result)
    assert not result.problems, "\n".join(result.problems)
    _compare(result.permissions)
