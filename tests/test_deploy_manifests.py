"""deploy/: every kustomization renders (files exist, patches land on existing objects), every
object validates against the Kubernetes 1.30 schemas, and the install is safe: the webhooks
never see system namespaces or non-GPU pods, the pods pass Pod Security "restricted" and
OpenShift's restricted-v2 SCC, TLS is wired in both overlays, and the names match the
webhook's contract."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml
from kustomize import KustomizeError, load_documents, render
from manifests import (
    COMPONENTS,
    DEPLOY,
    KUSTOMIZATIONS,
    OVERLAYS,
    STANDALONE,
    Obj,
    all_manifests,
    by_kind,
    one,
    pod_spec,
    queue_validator,
    rendered,
    restricted_violations,
)

from webhook.namespaces import is_system

FIXTURES = Path(__file__).parent / "fixtures" / "deploy"
KUBERNETES_VERSION = "1.30.0"
NAMESPACE = "apportion-system"
SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease", "openshift", NAMESPACE)


def overlay(name: str) -> list[Obj]:
    return rendered(DEPLOY / "overlays" / name)


# --- kustomizations: files exist, patches apply ----------------------------------------------


def _short(path: Path) -> str:
    return path.relative_to(DEPLOY).as_posix()


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=_short)
def test_every_kustomization_renders(directory):
    objects = render(directory)
    assert objects
    identities = [
        (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects
    ]
    assert len(identities) == len(set(identities)), "an object is defined twice"


def test_every_yaml_file_under_deploy_is_used():
    used: set[Path] = set(STANDALONE)
    for directory in KUSTOMIZATIONS:
        used.add(directory / "kustomization.yaml")
        spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
        used |= {(directory / r).resolve() for r in spec.get("resources", [])}
        used |= {(directory / p["path"]).resolve() for p in spec.get("patches", [])}
        used |= {(directory / c / "kustomization.yaml").resolve()
                 for c in spec.get("components", [])}  # fmt: skip
    files = {p.resolve() for p in DEPLOY.rglob("*.yaml")}
    assert not files - {p.resolve() for p in used}, "files no kustomization or doc applies"


def test_the_renderer_reports_missing_files_and_stray_patches(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: [gone.yaml]\n")
    with pytest.raises(KustomizeError, match=r"'gone\.yaml' does not exist"):
        render(tmp_path)
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    (tmp_path / "patch.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n")
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [cm.yaml]\npatches: [{path: patch.yaml}]\n"
    )
    with pytest.raises(KustomizeError, match="matches 0 objects"):
        render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("resources: [cm.yaml]\nreplicas: []\n")
    with pytest.raises(KustomizeError, match="does not implement"):
        render(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("resources: [cm.yaml]\ncomponents: [.]\n")
    with pytest.raises(KustomizeError, match="is not a Component"):
        render(tmp_path)
    (tmp_path / "part").mkdir()
    (tmp_path / "part" / "kustomization.yaml").write_text(
        "kind: Component\npatches: [{path: ../patch.yaml}]\n"
    )
    (tmp_path / "kustomization.yaml").write_text("resources: [cm.yaml]\ncomponents: [part]\n")
    with pytest.raises(KustomizeError, match=r"component fields .* not implement"):
        render(tmp_path)


def _canonical(objects: list[Obj]) -> list[str]:
    # kustomize prints 1.0 as 1: compare numbers by value.
    def number(value: float) -> float | int:
        return int(value) if value.is_integer() else value

    return sorted(
        json.dumps(
            json.loads(json.dumps(o), parse_float=lambda t: number(float(t))), sort_keys=True
        )
        for o in objects
    )


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=_short)
def test_kubectl_kustomize_renders_the_same_objects(directory):
    # Optional cross-check of tests/kustomize.py against the real kustomize: kubectl is
    # not required to install Apportion or to run this suite.
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: the Python renderer alone checks the kustomizations")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    theirs = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert _canonical(theirs) == _canonical(render(directory))


# --- schemas ---------------------------------------------------------------------------------

# Kinds of the cert-manager and Prometheus Operator APIs are not in the Kubernetes schemas.
# These reduced schemas hold the fields deploy/ uses, with their types and allowed values from
# those projects' API references; unknown fields are errors, so a typo cannot pass.
_STR = {"type": "string"}
_ISSUER_REF = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {"name": _STR, "kind": {"enum": ["Issuer", "ClusterIssuer"]}, "group": _STR},
}
_RULE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["expr"],
    "properties": {
        "alert": _STR,
        "record": _STR,
        "expr": _STR,
        "for": {"pattern": r"^\d+[smhdwy]$"},
        "labels": {"type": "object", "additionalProperties": _STR},
        "annotations": {"type": "object", "additionalProperties": _STR},
    },
}


def _kind(spec: Obj, required: list[str]) -> Obj:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": _STR,
            "kind": _STR,
            "metadata": {"type": "object", "required": ["name", "namespace"]},
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": required,
                "properties": spec,
            },
        },
    }


THIRD_PARTY = {
    ("cert-manager.io/v1", "Issuer"): _kind(
        {
            "selfSigned": {"type": "object"},
            "ca": {
                "type": "object",
                "required": ["secretName"],
                "properties": {"secretName": _STR},
            },
        },
        [],
    ),
    ("cert-manager.io/v1", "Certificate"): _kind(
        {
            "secretName": _STR,
            "commonName": _STR,
            "isCA": {"type": "boolean"},
            "dnsNames": {"type": "array", "items": _STR},
            "duration": {"pattern": r"^\d+h$"},
            "renewBefore": {"pattern": r"^\d+h$"},
            "privateKey": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                    "size": {"type": "integer"},
                    "rotationPolicy": {"enum": ["Never", "Always"]},
                },
            },
            "usages": {
                "type": "array",
                "items": {
                    "enum": [
                        "server auth",
                        "client auth",
                        "digital signature",
                        "key encipherment",
                        "cert sign",
                    ]
                },
            },
            "issuerRef": _ISSUER_REF,
        },
        ["secretName", "issuerRef"],
    ),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): _kind(
        {
            "selector": {"type": "object", "required": ["matchLabels"]},
            "namespaceSelector": {
                "type": "object",
                "properties": {"matchNames": {"type": "array", "items": _STR}},
            },
            "endpoints": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "port": _STR,
                        "path": _STR,
                        "scheme": {"enum": ["http", "https"]},
                        "interval": _STR,
                        "scrapeTimeout": _STR,
                    },
                },
            },
        },
        ["selector", "endpoints"],
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): _kind(
        {
            "groups": {
                "type": "array",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name", "rules"],
                    "properties": {
                        "name": _STR,
                        "rules": {"type": "array", "items": _RULE},
                        # the operator's RuleGroup.interval: a Prometheus duration
                        "interval": {"pattern": r"^(\d+(ms|s|m|h|d|w|y))+$"},
                    },
                },
            }
        },
        ["groups"],
    ),
}


def _schema_problems(obj: Obj) -> list[str]:
    if obj["apiVersion"] == "apportion.io/v1alpha1":
        return [e.message for e in queue_validator().iter_errors(obj)]
    reduced = THIRD_PARTY.get((obj["apiVersion"], obj["kind"]))
    if reduced is not None:
        return [e.message for e in jsonschema.Draft7Validator(reduced).iter_errors(obj)]
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'.'.join(map(str, error.path))}: {error.message}"]
    return []


@pytest.mark.parametrize(
    ("where", "obj"),
    all_manifests(),
    ids=lambda v: v if isinstance(v, str) else f"{v['kind']}/{v['metadata']['name']}",
)
def test_every_manifest_validates_against_kubernetes_1_30(where, obj):
    assert _schema_problems(obj) == []


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("Deployment", ["spec", "replica"], 2),  # a typo: strict schemas know every field
        ("Deployment", ["spec", "replicas"], "two"),
        ("MutatingWebhookConfiguration", ["webhooks", 0, "timeoutSeconds"], "5s"),
        ("Certificate", ["spec", "dnsName"], ["x"]),
        ("PrometheusRule", ["spec", "groups", 0, "rules", 0, "for"], "ten minutes"),
        ("Queue", ["spec", "weight"], -1),
    ],
)
def test_schema_validation_catches_mistakes(kind, path, value):
    objects = (
        overlay("kubernetes")
        + rendered(DEPLOY / "monitoring")
        + rendered(DEPLOY / "examples" / "queues")
    )
    obj = copy.deepcopy(by_kind(objects, kind)[0])
    target = obj
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    assert _schema_problems(obj)


# --- the webhook configurations: what they intercept, and what they never touch -------------


MUTATE, VALIDATE, GATE = (
    "mutate.pods.apportion.io",
    "validate.pods.apportion.io",
    "gate.pods.apportion.io",
)


def webhooks(objects: list[Obj]) -> dict[str, Obj]:
    """Every webhook of Apportion's two configurations, by name."""
    found = {}
    for kind, names in (
        ("MutatingWebhookConfiguration", [MUTATE]),
        ("ValidatingWebhookConfiguration", [VALIDATE, GATE]),
    ):
        hooks = one(objects, kind, "apportion")["webhooks"]
        assert [h["name"] for h in hooks] == names
        found.update((h["name"], h) for h in hooks)
    return found


@pytest.mark.parametrize("name", OVERLAYS)
def test_webhooks_are_opt_in_and_exclude_system_namespaces_by_name(name):
    for hook in webhooks(overlay(name)).values():
        selector = hook["namespaceSelector"]
        assert selector["matchLabels"] == {"apportion.io/enabled": "true"}
        (excluded,) = selector["matchExpressions"]
        assert excluded["key"] == "kubernetes.io/metadata.name"
        assert excluded["operator"] == "NotIn"
        assert set(SYSTEM_NAMESPACES) <= set(excluded["values"])


@pytest.mark.parametrize("value", ["true", "True", "TRUE", "yes", " true"])
def test_a_namespace_is_opted_in_exactly_as_the_webhook_configurations_match_it(value):
    """The API server sends a namespace's pods only where its label equals the selector's
    value, byte for byte. Was: Apportion read the label ignoring case, so it took a
    namespace labelled ``True`` for opted in (its controller adopted that namespace's
    gated pods) while the API server sent the webhooks none of its pods."""
    from webhook.namespaces import NamespacePolicy

    for hook in webhooks(overlay(OVERLAYS[0])).values():
        ((key, matched),) = hook["namespaceSelector"]["matchLabels"].items()
        assert NamespacePolicy.from_labels({key: value}).enabled is (value == matched)


@pytest.mark.parametrize("name", OVERLAYS)
def test_webhook_settings_follow_the_contract(name):
    objects = overlay(name)
    hooks = webhooks(objects)
    service = one(objects, "Service", "apportion-webhook")
    https = next(p for p in service["spec"]["ports"] if p["name"] == "https")
    container = pod_spec(one(objects, "Deployment", "apportion"))["containers"][0]
    container_port = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container_port[https["targetPort"]] == 8443
    for name, path, operations in (
        (MUTATE, "/mutate", ["CREATE"]),
        # Validation also guards Apportion's gate and decision annotations against user
        # UPDATEs; the gate's removal alone fails closed (the third webhook).
        (VALIDATE, "/validate", ["CREATE", "UPDATE"]),
        (GATE, "/validate", ["UPDATE"]),
    ):
        hook = hooks[name]
        assert hook["clientConfig"]["service"] == {
            "name": "apportion-webhook",
            "namespace": NAMESPACE,
            "path": path,
            "port": https["port"],
        }
        # A dry run is sent either way; only the mutating call books anything (not on one).
        assert hook["sideEffects"] == ("NoneOnDryRun" if name == MUTATE else "None")
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["timeoutSeconds"] <= 5
        assert hook["rules"] == [
            {
                "operations": operations,
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": ["pods"],
                "scope": "Namespaced",
            }
        ]
        assert "caBundle" not in hook["clientConfig"], "the overlay's CA injector fills it"
    # Deliberate (deploy/README.md): a pod the mutating webhook missed would run ungated.
    assert hooks[MUTATE]["failurePolicy"] == "Fail"
    assert hooks[VALIDATE]["failurePolicy"] == "Ignore"
    assert hooks[GATE]["failurePolicy"] == "Fail"
    conditions = hooks[MUTATE]["matchConditions"]
    assert hooks[VALIDATE]["matchConditions"] == conditions
    assert hooks[GATE]["matchConditions"][: len(conditions)] == conditions, "and two more"
    namespaces = [h["namespaceSelector"] for h in hooks.values()]
    assert namespaces[0] == namespaces[1] == namespaces[2]


def test_reinvocation_stays_never_while_a_second_mutation_would_admit_the_pod_again():
    """With reinvocationPolicy IfNeeded the API server calls the mutating webhook again,
    with a new request uid, on the pod as Apportion left it, when a later webhook changed
    the pod. That call would have to change nothing and book nothing. It does not: a pod
    with only a generateName (every Job's and ReplicaSet's; a real capture here) has no name
    at admission, so its workload is named after the request uid, and the second call
    admits it again: a second GPU held, a second placement annotated and ANDed into its
    node affinity (were it another node, the pod could never be scheduled). Admission
    holds its intents per replica, and another replica may answer the second call, so the
    fix is more than remembering the first name. Switch to IfNeeded only once this second
    call returns no patch and the queue's usage stays at one GPU."""
    from webhook_support import admission, answer, fixture_cluster, mutated, patch_of, review, vary

    from webhook.metrics import Metrics

    assert webhooks(overlay("kubernetes"))[MUTATE]["reinvocationPolicy"] == "Never"
    cluster = fixture_cluster()
    webhook = admission(cluster)
    registry = Metrics(cluster).registry
    # A pod the Job controller created (generateName only), asking 1 H100, made a lone pod.
    body = vary(
        review("job-controller-creates-pods.mutate-create"), labels={"apportion.io/gang": None}
    )
    assert "name" not in body["request"]["object"]["metadata"]

    def usage() -> float | None:
        labels = {"queue": "team-a", "flavor": "H100-80GB"}
        return registry.get_sample_value("apportion_queue_usage_gpus", labels)

    first = answer(webhook.mutate, body)
    assert usage() == 1
    again = patch_of(answer(webhook.mutate, mutated(body, first)))  # the mutated pod, new uid
    assert usage() == 2, "reinvocation is safe now: switch to IfNeeded (deploy/README.md)"
    changed = {op["path"] for op in again}
    assert "/metadata/annotations/apportion.io~1placement" in changed
    assert any(path.endswith("/matchExpressions/-") for path in changed)


def _review(name: str) -> Obj:
    review: Obj = json.loads((FIXTURES / name).read_text())
    return review["request"]


def _without_gpus(request: Obj) -> Obj:
    request = copy.deepcopy(request)
    for c in request["object"]["spec"]["containers"]:
        for key in ("requests", "limits"):
            c["resources"][key] = {
                k: v for k, v in c["resources"].get(key, {}).items() if not k.startswith("nvidia")
            }
    return request


def _in_namespace(request: Obj, namespace: str) -> Obj:
    request = copy.deepcopy(request)
    request["namespace"] = request["object"]["metadata"]["namespace"] = namespace
    return request


def _gpu_in_init_container_only(request: Obj) -> Obj:
    request = _without_gpus(request)
    init = copy.deepcopy(request["object"]["spec"]["containers"][0])
    init["name"] = "warmup"
    init["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
    request["object"]["spec"]["initContainers"] = [init]
    return request


def _memory_annotation_only(request: Obj) -> Obj:
    request = _without_gpus(request)
    request["object"]["metadata"].setdefault("annotations", {})["apportion.io/gpu-memory"] = "18Gi"
    return request


def _no_resources(request: Obj) -> Obj:
    request = copy.deepcopy(request)
    for c in request["object"]["spec"]["containers"]:
        c.pop("resources", None)
    request["object"]["metadata"].pop("annotations", None)
    return request


GPU = _review("create-pod-gpu-1.mutate-create.json")
CASES = [
    ("whole GPU", GPU, True),
    ("MIG slice", _review("create-pod-mig-1g-10gb.mutate-create.json"), True),
    ("Job pod without a name yet", _review("job-controller-creates-pods.mutate-create.json"), True),
    ("GPU in an init container", _gpu_in_init_container_only(GPU), True),
    ("gpu-memory annotation", _memory_annotation_only(GPU), True),
    ("CPU only", _without_gpus(GPU), False),
    ("no resources at all", _no_resources(GPU), False),
    *[(f"GPU pod in {ns}", _in_namespace(GPU, ns), False) for ns in SYSTEM_NAMESPACES],
    ("GPU pod in openshift-monitoring", _in_namespace(GPU, "openshift-monitoring"), False),
    ("GPU pod in openshift-user-workload", _in_namespace(GPU, "openshift-user-workload"), False),
    ("GPU pod in team-openshift-lab", _in_namespace(GPU, "team-openshift-lab"), True),
]


def _matches(conditions: list[Obj], request: Obj) -> bool:
    """The API server calls a webhook only when every matchCondition is true."""
    env = celpy.Environment()
    activation = {
        "object": celpy.json_to_cel(request["object"]),
        "oldObject": celpy.json_to_cel(request.get("oldObject")),
        "request": celpy.json_to_cel(request),
    }
    results = []
    for condition in conditions:
        program = env.program(env.compile(condition["expression"]))
        result = program.evaluate(activation)
        assert isinstance(result, celpy.celtypes.BoolType), (condition["name"], result)
        results.append(bool(result))
    return all(results)


@pytest.mark.parametrize(("case", "request_", "expected"), CASES, ids=[c[0] for c in CASES])
def test_match_conditions_send_only_gpu_pods_outside_system_namespaces(case, request_, expected):
    for name in (MUTATE, VALIDATE):
        hook = webhooks(overlay("kubernetes"))[name]
        assert _matches(hook["matchConditions"], request_) is expected, (name, case)


@pytest.mark.parametrize(
    "namespace",
    [
        *SYSTEM_NAMESPACES,
        "openshift-monitoring",
        "openshiftlab",
        "team-openshift-lab",
        "gpu-team-a",
    ],
)
def test_standalone_leaves_out_the_namespaces_the_webhook_configurations_do(namespace):
    """Was: standalone (every namespace managed) managed apportion-system and left out
    openshiftlab, a team's."""
    conditions = [
        c
        for c in webhooks(overlay("kubernetes"))[MUTATE]["matchConditions"]
        if c["name"] == "not-a-system-namespace"
    ]
    called = _matches(conditions, _in_namespace(GPU, namespace))
    assert is_system(namespace) is not called


UNGATE = _review("update-pod-ungate-add-nodeselector.validate-update.json")
"""A captured PUT by a cluster user removing Apportion's gate from a gated GPU pod."""


def _keeps_the_gate(request: Obj) -> Obj:
    request = copy.deepcopy(request)
    request["object"]["spec"]["schedulingGates"] = [{"name": "apportion.io/admission"}]
    return request


def _by(request: Obj, username: str) -> Obj:
    request = copy.deepcopy(request)
    request["userInfo"]["username"] = username
    return request


def _other_gate_removed(request: Obj) -> Obj:
    request = copy.deepcopy(request)
    request["oldObject"]["spec"]["schedulingGates"] = [{"name": "example.com/quota"}]
    return request


GATE_CASES = [
    ("a user removes the gate", UNGATE, True),
    ("Apportion removes its gate", _by(UNGATE, "own service account"), False),
    ("an update that keeps the gate", _keeps_the_gate(UNGATE), False),
    ("another gate removed", _other_gate_removed(UNGATE), False),
    ("the gate removed from a CPU-only pod", _without_gpus(UNGATE), False),
    ("the gate removed in kube-system", _in_namespace(UNGATE, "kube-system"), False),
]


@pytest.mark.parametrize(
    ("case", "request_", "expected"), GATE_CASES, ids=[c[0] for c in GATE_CASES]
)
def test_only_the_removal_of_apportions_gate_by_others_fails_closed(case, request_, expected):
    """The validating webhook fails open; while no replica answered, a user could remove
    Apportion's gate from a waiting GPU pod and start it outside its queue, the breach the
    mutating webhook fails closed against. The gate webhook fails closed on that update
    alone, so no other update of a GPU pod (finalizers, labels) waits on Apportion, nor do
    Apportion's own admissions. /validate refuses the captured update
    (test_webhook_admission.py, test_only_apportion_may_remove_its_gate)."""
    objects = overlay("kubernetes")
    if request_["userInfo"]["username"] == "own service account":
        deployment = one(objects, "Deployment", "apportion")
        account = pod_spec(deployment)["serviceAccountName"]
        namespace = deployment["metadata"]["namespace"]
        request_ = _by(request_, f"system:serviceaccount:{namespace}:{account}")
    from webhook import keys

    conditions = webhooks(objects)[GATE]["matchConditions"]
    assert f"'{keys.GATE}'" in conditions[2]["expression"], "the gate Apportion sets"
    assert _matches(conditions, request_) is expected, case


# --- the Deployment: safe to run, and what the webhook expects -------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
def test_pods_pass_restricted_and_restricted_v2(name):
    objects = overlay(name)
    assert restricted_violations(pod_spec(one(objects, "Deployment", "apportion"))) == []
    job = one(rendered(DEPLOY / "jobs"), "Job", "apportion-plan-sweep")
    assert restricted_violations(pod_spec(job)) == []
    namespace = one(objects, "Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert "apportion.io/enabled" not in namespace["metadata"]["labels"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s["securityContext"].update(runAsUser=1001), "runAsUser is fixed"),
        (lambda s: s["securityContext"].update(fsGroup=1001), "fsGroup is fixed"),
        (lambda s: s.update(hostNetwork=True), "hostNetwork"),
        (lambda s: s["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
        (
            lambda s: s["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
            "allowPrivilegeEscalation",
        ),
        (
            lambda s: s["containers"][0]["securityContext"]["capabilities"].update(drop=[]),
            "drop ALL",
        ),
        (
            lambda s: s["containers"][0]["securityContext"]["capabilities"].update(
                add=["SYS_ADMIN"]
            ),
            "adds capabilities",
        ),
        (
            lambda s: [
                s["securityContext"].pop("runAsNonRoot"),
                s["containers"][0]["securityContext"].pop("runAsNonRoot"),
            ],
            "runAsNonRoot",
        ),
        (
            lambda s: [
                s["securityContext"].pop("seccompProfile"),
                s["containers"][0]["securityContext"].pop("seccompProfile"),
            ],
            "seccompProfile",
        ),
        (lambda s: s["containers"][0]["ports"][0].update(hostPort=8443), "hostPort"),
    ],
)
def test_the_restricted_check_catches_each_violation(change, expected):
    spec = pod_spec(one(overlay("kubernetes"), "Deployment", "apportion"))
    change(spec)
    assert any(expected in p for p in restricted_violations(spec)), restricted_violations(spec)


def test_deployment_is_highly_available_and_probed_on_the_plain_port():
    objects = overlay("kubernetes")
    deployment = one(objects, "Deployment", "apportion")
    spec = pod_spec(deployment)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (term,) = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()
    pdb = one(objects, "PodDisruptionBudget", "apportion")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = one(objects, "Service", "apportion-webhook")
    assert service["spec"]["selector"].items() <= labels.items()
    (container,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"https": 8443, "probe": 8080}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "probe"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "probe"}
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= container["resources"][kind].keys()
    assert container["args"] == ["serve"]
    assert container["image"] == "apportion:0.1.0"
    assert spec["serviceAccountName"] == "apportion"


@pytest.mark.parametrize("name", OVERLAYS)
def test_webhook_pods_are_critical_and_admitted_where_the_class_is_limited(name):
    # A fail-closed webhook at the default priority (0) is preempted by any GPU job with a
    # PriorityClass and evicted first under node pressure; GPU pods then cannot be created.
    objects = overlay(name)
    deployment = one(objects, "Deployment", "apportion")
    priority_class = pod_spec(deployment).get("priorityClassName")
    assert priority_class == "system-cluster-critical"
    # Where consumption of the class is limited (GKE by default), only a ResourceQuota in
    # the namespace whose scope names it lets the ReplicaSet create the pods.
    quotas = [
        q
        for q in by_kind(objects, "ResourceQuota")
        if q["metadata"]["namespace"] == NAMESPACE
        and {"scopeName": "PriorityClass", "operator": "In", "values": [priority_class]}
        in q["spec"].get("scopeSelector", {}).get("matchExpressions", [])
    ]
    (quota,) = quotas
    assert quota["spec"]["hard"].keys() == {"pods"}, "a quota on cpu or memory would bind"
    spec = deployment["spec"]
    rollout = spec["replicas"] + spec["strategy"]["rollingUpdate"]["maxSurge"]
    assert int(quota["spec"]["hard"]["pods"]) >= rollout


def test_a_stopping_webhook_pod_serves_until_its_endpoint_is_gone():
    # The API server keeps sending reviews to a deleted pod until the endpoint removal has
    # reached it (and the nodes' proxies): seconds. A pod that stops serving on SIGTERM
    # at once makes every rollout and drain reject GPU pods (the mutating webhook fails
    # closed). preStop runs before SIGTERM and within the grace period.
    spec = pod_spec(one(overlay("kubernetes"), "Deployment", "apportion"))
    (container,) = spec["containers"]
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre_stop:
        delay = int(pre_stop["sleep"]["seconds"])
    else:
        command = pre_stop.get("exec", {}).get("command", [])
        assert command[:1] == ["sleep"], f"no preStop delay: {pre_stop}"
        delay = int(command[1])
    assert 5 <= delay < spec["terminationGracePeriodSeconds"] - 10, "time left to finish"


def test_deployment_environment_follows_the_contract():
    deployment = one(overlay("kubernetes"), "Deployment", "apportion")
    spec = pod_spec(deployment)
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # The trusted service account is the pod's own, not a name typed twice.
    assert env["APPORTION_SERVICE_ACCOUNT"]["valueFrom"] == {
        "fieldRef": {"fieldPath": "spec.serviceAccountName"}
    }
    assert env["APPORTION_MODE"]["value"] in ("shadow", "enforce")
    assert env["APPORTION_ON_ALLOCATOR_FAILURE"]["value"] in ("gate", "allow")
    assert env["APPORTION_PORT"]["value"] == "8443"
    assert env["APPORTION_PROBE_PORT"]["value"] == "8080"
    assert float(env["APPORTION_STUCK_AFTER_S"]["value"]) >= 0
    mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    for variable, volume in (
        ("APPORTION_CERT_FILE", "tls"),
        ("APPORTION_KEY_FILE", "tls"),
        ("APPORTION_QUEUES", "queues"),
    ):
        assert env[variable]["value"].startswith(mounts[volume] + "/"), variable
    assert volumes["tls"]["secret"]["secretName"] == "apportion-webhook-tls"
    assert volumes["queues"]["configMap"]["name"] == "apportion-queues"


def test_environment_from_the_downward_api_names_fields_it_offers():
    """Only some pod fields reach environment variables (labels and annotations only by
    key); the Kubernetes 1.30 API's own description of EnvVarSource.fieldRef lists them."""
    schemas = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    source = json.loads((schemas / f"v{KUBERNETES_VERSION}-local-strict" / "envvarsource-v1.json")
                        .read_text())  # fmt: skip
    offered = source["properties"]["fieldRef"]["description"]
    assert "spec.serviceAccountName" in offered, offered
    for where, obj in all_manifests():
        if obj["kind"] not in ("Deployment", "Job"):
            continue
        for container in pod_spec(obj)["containers"]:
            for variable in container.get("env", []):
                field = variable.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                if field is not None:
                    assert re.search(rf"(^|[ `]){re.escape(field)}[,.`]", offered), (where, field)


def test_rolebindings_bind_the_deployments_service_account():
    objects = overlay("kubernetes")
    account = pod_spec(one(objects, "Deployment", "apportion"))["serviceAccountName"]
    one(objects, "ServiceAccount", account)
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = one(objects, kind, "apportion")
        one(objects, role_kind, binding["roleRef"]["name"])
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
        ]


def test_queue_configmaps_hold_queue_lists():
    from scheduler.model import Queue

    for path in (DEPLOY / "base" / "queues-configmap.yaml", STANDALONE[0]):
        configmap = load_documents(path)[0]
        queues = yaml.safe_load(configmap["data"]["queues.yaml"])
        assert isinstance(queues, list)
        [Queue.model_validate(q) for q in queues]


# --- TLS: cert-manager on Kubernetes, the service-CA operator on OpenShift -------------------


def test_kubernetes_overlay_issues_the_certificate_the_pods_mount():
    objects = overlay("kubernetes")
    secret = pod_spec(one(objects, "Deployment", "apportion"))["volumes"]
    secret_name = next(v["secret"]["secretName"] for v in secret if v["name"] == "tls")
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        source = one(objects, kind)["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
        namespace, _, name = source.partition("/")
        certificate = one(objects, "Certificate", name)
        assert certificate["metadata"]["namespace"] == namespace
    assert certificate["spec"]["secretName"] == secret_name
    assert "apportion-webhook.apportion-system.svc" in certificate["spec"]["dnsNames"]
    issuer = one(objects, "Issuer", certificate["spec"]["issuerRef"]["name"])
    ca = one(
        objects,
        "Certificate",
        next(
            c["metadata"]["name"]
            for c in by_kind(objects, "Certificate")
            if c["spec"]["secretName"] == issuer["spec"]["ca"]["secretName"]
        ),
    )
    assert ca["spec"]["isCA"] is True
    one(objects, "Issuer", ca["spec"]["issuerRef"]["name"])
    assert not [o for o in objects if "openshift" in json.dumps(o.get("metadata", {}))]


def test_openshift_overlay_uses_the_service_ca_operator():
    objects = overlay("openshift")
    volumes = pod_spec(one(objects, "Deployment", "apportion"))["volumes"]
    secret_name = next(v["secret"]["secretName"] for v in volumes if v["name"] == "tls")
    service = one(objects, "Service", "apportion-webhook")
    annotations = service["metadata"]["annotations"]
    assert annotations["service.beta.openshift.io/serving-cert-secret-name"] == secret_name
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        hook_annotations = one(objects, kind)["metadata"]["annotations"]
        assert hook_annotations == {"service.beta.openshift.io/inject-cabundle": "true"}
    assert not [o for o in objects if o["apiVersion"].startswith("cert-manager.io")]


# --- network policy: who may reach the webhook pods ---------------------------------------------

OUTSIDE = None
"""A connection from outside the pod network, as the API server's calls to webhooks are."""


def _selects(selector: Obj, labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"the check reads matchLabels only: {selector}"
    return selector.get("matchLabels", {}).items() <= labels.items()


def reaches(objects: list[Obj], source: dict[str, str] | None, port: str | int) -> bool:
    """Would a connection from a pod in a namespace with labels ``source`` (or from outside
    the pod network) to the webhook pods' ``port`` be let through, by the Kubernetes rules:
    no policy selecting the pod lets everything in; otherwise some rule must list the port
    (by container port name or number) and either have no ``from`` or match the source."""
    deployment = one(objects, "Deployment", "apportion")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    (container,) = pod_spec(deployment)["containers"]
    names = {p["name"]: p["containerPort"] for p in container["ports"]}
    number = names.get(port, port)
    policies = [
        p
        for p in by_kind(objects, "NetworkPolicy")
        if p["metadata"]["namespace"] == NAMESPACE
        and _selects(p["spec"]["podSelector"], labels)
        and "Ingress" in p["spec"]["policyTypes"]
    ]
    if not policies:
        return True
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            listed = {names.get(p["port"], p["port"]) for p in rule.get("ports", [])}
            if rule.get("ports") and number not in listed:
                continue
            peers = rule.get("from")
            if peers is None:
                return True
            for peer in peers:
                assert set(peer) <= {"namespaceSelector"}, f"unchecked peer kind: {peer}"
                if source is not OUTSIDE and _selects(peer["namespaceSelector"], source):
                    return True
    return False


def _namespace(name: str, **labels: str) -> dict[str, str]:
    return {"kubernetes.io/metadata.name": name, **labels}


@pytest.mark.parametrize("name", OVERLAYS)
def test_network_policy_lets_the_api_server_and_prometheus_in_and_no_one_else(name):
    objects = overlay(name)
    service = {p["name"]: p for p in one(objects, "Service", "apportion-webhook")["spec"]["ports"]}
    called = {h["clientConfig"]["service"]["port"] for h in webhooks(objects).values()}
    (webhook_port,) = [p["targetPort"] for p in service.values() if p["port"] in called]
    monitor = one(rendered(DEPLOY / "monitoring"), "ServiceMonitor", "apportion")
    (scraped,) = [service[e["port"]]["targetPort"] for e in monitor["spec"]["endpoints"]]
    prometheus = (
        _namespace("monitoring"),
        _namespace("openshift-monitoring", **{"network.openshift.io/policy-group": "monitoring"}),
        _namespace(
            "openshift-user-workload-monitoring",
            **{"network.openshift.io/policy-group": "monitoring"},
        ),
    )
    team = _namespace("team-a", **{"apportion.io/enabled": "true"})
    assert by_kind(objects, "NetworkPolicy"), "no NetworkPolicy: a default-deny cluster cuts it off"
    assert reaches(objects, OUTSIDE, webhook_port)
    assert reaches(objects, team, webhook_port)
    for namespace in prometheus:
        assert reaches(objects, namespace, scraped), namespace
    assert not reaches(objects, team, scraped)
    assert not reaches(objects, OUTSIDE, scraped)
    assert not reaches(objects, _namespace("monitoring-lookalike"), scraped)
    assert not reaches(objects, team, 9090), "a port the pods do not serve is let in"


def test_the_network_policy_check_sees_a_policy_that_shuts_the_api_server_out():
    objects = copy.deepcopy(overlay("kubernetes"))
    policy = one(objects, "NetworkPolicy", "apportion-webhook")
    policy["spec"]["ingress"][0]["from"] = [{"namespaceSelector": {"matchLabels": {}}}]
    service = {p["name"]: p for p in one(objects, "Service", "apportion-webhook")["spec"]["ports"]}
    assert reaches(objects, _namespace("team-a"), service["https"]["targetPort"])
    assert not reaches(objects, OUTSIDE, service["https"]["targetPort"])


# --- the sharded planning Job ----------------------------------------------------------------


def test_plan_sweep_is_an_indexed_job_with_one_shard_per_index():
    job = one(rendered(DEPLOY / "jobs"), "Job", "apportion-plan-sweep")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    args = pod_spec(job)["containers"][0]["args"]
    shard = args[args.index("--shard") + 1]
    match = re.fullmatch(r"\$\(JOB_COMPLETION_INDEX\)/(\d+)", shard)
    assert match and int(match.group(1)) == spec["completions"]
    assert pod_spec(job)["automountServiceAccountToken"] is False


# --- the image -------------------------------------------------------------------------------


def _images(objects: list[Obj]) -> set[str]:
    return {
        c["image"]
        for o in objects
        if o["kind"] in ("Deployment", "Job")
        for c in [*pod_spec(o).get("initContainers", []), *pod_spec(o)["containers"]]
    }


def test_no_manifest_tags_the_image_itself():
    """The tag comes from one setting (components/image), which every kustomization that
    runs Apportion includes: a tag written in a manifest would not follow it."""
    assert [c.relative_to(DEPLOY).as_posix() for c in COMPONENTS] == ["components/image"]
    for path in DEPLOY.rglob("*.yaml"):
        for doc in load_documents(path):
            if doc.get("kind") in ("Deployment", "Job"):
                assert _images([doc]) == {"apportion"}, path.relative_to(DEPLOY)


def test_the_plan_sweep_job_follows_the_webhooks_image_setting(tmp_path):
    """Change the one image setting: the webhook's Deployment (both overlays) and the
    planning Job move together."""
    copy_ = tmp_path / "deploy"
    shutil.copytree(DEPLOY, copy_)
    setting = copy_ / "components" / "image" / "kustomization.yaml"
    spec = yaml.safe_load(setting.read_text())
    spec["images"] = [{"name": "apportion", "newName": "mirror/apportion", "newTag": "9.9.9"}]
    setting.write_text(yaml.safe_dump(spec))
    for directory in ("overlays/kubernetes", "overlays/openshift", "jobs"):
        assert _images(render(copy_ / directory)) == {"mirror/apportion:9.9.9"}, directory
    shipped = {d: _images(rendered(DEPLOY / d)) for d in ("overlays/kubernetes", "jobs")}
    assert shipped == {"overlays/kubernetes": {"apportion:0.1.0"}, "jobs": {"apportion:0.1.0"}}


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    lines = [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


def test_containerfile_builds_a_wheel_and_runs_apportion_as_non_root():
    root = DEPLOY.parent
    steps = _instructions((root / "Containerfile").read_text())
    stages = [arg for op, arg in steps if op == "FROM"]
    assert len(stages) == 2 and stages[0].endswith("AS build")
    base = next(arg for op, arg in steps if op == "ARG" and arg.startswith("BASE="))
    assert "ubi9/python-311" in base
    froms = [i for i, (op, _) in enumerate(steps) if op == "FROM"]
    build, final = steps[froms[0] : froms[1]], steps[froms[1] :]
    ops = dict(final)
    assert re.fullmatch(r"[1-9]\d*", ops["USER"]), "a numeric non-root USER"
    assert json.loads(ops["ENTRYPOINT"]) == ["apportion"]
    assert json.loads(ops["CMD"]) == ["serve"]
    assert "--no-index" in ops["RUN"] and "pip wheel" in dict(build)["RUN"]
    # Mounted for the install, not copied: a copied directory stays in its layer, and so
    # in the image, whatever a later step deletes.
    assert not [arg for op, arg in final if op == "COPY" and "--from" in arg]
    assert ops["RUN"].startswith("--mount=type=bind,from=build,")
    copied = [
        source
        for op, arg in steps
        if op == "COPY" and "--from" not in arg
        for source in [w for w in arg.split() if not w.startswith("--")][:-1]
    ]
    assert {"pyproject.toml", "README.md", "scheduler"} <= set(copied)
    for path in copied:
        assert (root / path).exists(), f"COPY {path}: no such file"
    ignored = [
        line.strip()
        for line in (root / ".containerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert {".git", ".venv", "tests"} <= set(ignored)
    assert not {p.rstrip("/") for p in copied} & set(ignored), "copied files are not ignored"


def test_every_dashboard_panel_and_rule_parses():
    dashboard = json.loads((DEPLOY / "monitoring" / "apportion-dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["panels"]
    targets: list[Any] = [t for p in dashboard["panels"] for t in p.get("targets", [])]
    assert all(t["expr"] for t in targets)
