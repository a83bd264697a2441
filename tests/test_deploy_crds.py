"""The Queue CRD: generated from the models, committed without drift, and example queues that
the API server would accept and the controller can read (``scheduler/crds.py``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from manifests import queue_validator
from pydantic import BaseModel

from scheduler.crds import (
    QueueObjectError,
    SchemaConversionError,
    crd_documents,
    crds,
    queue_crd,
    queue_from_object,
    queue_object,
    structural_schema,
)
from scheduler.model import PreemptionPolicy, Queue, Quota

ROOT = Path(__file__).resolve().parents[1]
CRD_DIR = ROOT / "deploy" / "base" / "crds"
EXAMPLES = ROOT / "deploy" / "examples"


def apportion(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- no drift between the models and the committed CRDs --------------------------------------


def test_committed_crds_equal_the_generated_ones():
    committed = {p.name: p.read_text(encoding="utf-8") for p in CRD_DIR.glob("*.yaml")}
    generated = crd_documents()
    assert committed.keys() == generated.keys(), "run: apportion crds --output-dir deploy/base/crds"
    for name, text in generated.items():
        assert committed[name] == text, (
            f"deploy/base/crds/{name} differs from the models; regenerate it with "
            "`apportion crds --output-dir deploy/base/crds`"
        )


def test_apportion_crds_prints_the_committed_stream(tmp_path):
    result = apportion("crds")
    assert result.returncode == 0, result.stderr
    assert list(yaml.safe_load_all(result.stdout)) == crds()
    written = apportion("crds", "--output-dir", str(tmp_path))
    assert written.returncode == 0, written.stderr
    for name, text in crd_documents().items():
        assert (tmp_path / name).read_text(encoding="utf-8") == text


def test_apportion_crds_bad_output_dir_is_a_clear_error(tmp_path):
    result = apportion("crds", "--output-dir", str(tmp_path / "missing"))
    assert result.returncode == 2
    assert "is not a directory" in result.stderr and "Traceback" not in result.stderr
    assert "create it first, or leave --output-dir out to print the CRDs" in result.stderr


# --- the schema is structural ----------------------------------------------------------------


def _nodes(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        found += _nodes(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            found += _nodes(schema[key], f"{path}[{key}]")
    return found


def test_crd_schema_is_structural():
    version = queue_crd()["spec"]["versions"][0]
    for path, node in _nodes(version["schema"]["openAPIV3Schema"]):
        assert "type" in node, f"{path}: no type"
        for banned in ("$ref", "$defs", "anyOf", "oneOf", "allOf", "title", "uniqueItems"):
            assert banned not in node, f"{path}: {banned}"
        assert not ("properties" in node and "additionalProperties" in node), path
        assert node.get("default") is not None if "default" in node else True, path
        if "exclusiveMinimum" in node:
            assert node["exclusiveMinimum"] is True and "minimum" in node, path
    assert version["subresources"] == {"status": {}}
    assert queue_crd()["spec"]["scope"] == "Cluster"


def test_every_printer_column_points_into_the_schema():
    version = queue_crd()["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    for column in version["additionalPrinterColumns"]:
        if column["jsonPath"] == ".metadata.creationTimestamp":
            continue
        node = schema
        for part in column["jsonPath"].strip(".").split("."):
            node = node["properties"][part]
        assert node["type"] == column["type"], column


# --- the conversion, on small models ---------------------------------------------------------


class _Inner(BaseModel):
    """Inner doc."""

    n: int = 0


class _Outer(BaseModel):
    maybe: int | None = None
    inner: _Inner = _Inner()
    """Field doc wins over the class doc."""
    ratio: float = 1.0


class _TwoTypes(BaseModel):
    either: int | str


class _Pair(BaseModel):
    pair: tuple[int, str]


def test_conversion_inlines_refs_and_maps_nullable():
    schema = structural_schema(_Outer)
    assert schema["properties"]["maybe"] == {"type": "integer", "nullable": True}
    inner = schema["properties"]["inner"]
    assert inner["type"] == "object" and inner["properties"]["n"]["type"] == "integer"
    assert inner["default"] == {"n": 0}
    assert "title" not in inner and "$ref" not in str(schema)


def test_conversion_refuses_what_a_crd_cannot_express():
    with pytest.raises(SchemaConversionError, match="either"):
        structural_schema(_TwoTypes)
    with pytest.raises(SchemaConversionError, match="pair"):
        structural_schema(_Pair)


def test_bounds_of_the_models_reach_the_schema():
    spec = queue_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    weight = spec["properties"]["weight"]
    assert (weight["minimum"], weight["maximum"]) == (0.001, 1000)
    quota = spec["properties"]["quota"]["additionalProperties"]["properties"]
    assert (quota["nominal"]["minimum"], quota["nominal"]["maximum"]) == (0, 10_000_000)
    assert quota["borrowing_limit"]["nullable"] is True
    assert spec["properties"]["max_priority"]["maximum"] == 2**31 - 1
    assert "name" not in spec["properties"], "the queue's name is metadata.name"


# --- custom objects against the schema, as the API server would check them -------------------


def example_queues() -> list[dict[str, Any]]:
    found = []
    for path in sorted((EXAMPLES / "queues").glob("*.yaml")):
        if path.name != "kustomization.yaml":
            found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def test_three_example_teams_validate_against_the_crd_and_the_models():
    examples = example_queues()
    assert len(examples) == 3
    validator = queue_validator()
    for obj in examples:
        problems = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(obj)]
        assert not problems, (obj["metadata"]["name"], problems)
        assert queue_from_object(obj).name == obj["metadata"]["name"]
    cohorts = {queue_from_object(o).cohort for o in examples}
    assert "research" in cohorts and None in cohorts


def test_the_configmap_example_holds_the_same_queues():
    configmap = yaml.safe_load((EXAMPLES / "queues-configmap.yaml").read_text())
    listed = [Queue.model_validate(q) for q in yaml.safe_load(configmap["data"]["queues.yaml"])]
    by_name = {q.name: q for q in map(queue_from_object, example_queues())}
    assert {q.name: q for q in listed} == by_name and len(listed) == len(by_name)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"quota": {"H100-80GB": {"nominal": -1}}}, "nominal"),
        ({"weight": 0}, "weight"),
        ({"preemption": {"within_queue": "Sometimes"}}, "within_queue"),
        ({"cohortt": "x"}, "cohortt"),
        ({"namespaces": "team-a"}, "namespaces"),
        # The name rules the controller checks, at `kubectl apply` too.
        ({"cohort": "Lab_1"}, "cohort"),
        ({"cohort": "a" * 254}, "cohort"),
        ({"namespaces": ["team-a", "BAD_NS"]}, "namespaces"),
        ({"namespaces": ["n" * 64]}, "namespaces"),
    ],
)
def test_the_schema_rejects_bad_queues(change, field):
    obj = example_queues()[0]
    obj["spec"] = {**obj["spec"], **change}
    errors = list(queue_validator().iter_errors(obj))
    assert errors and any(field in str(e.absolute_path) + e.message for e in errors), errors
    with pytest.raises(QueueObjectError):
        queue_from_object(obj)


# DNS-1123 labels: names of namespaces, and of queues and cohorts too (scheduler/names.py).
_names = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True)
_limits = st.none() | st.integers(0, 64)
_queues = st.builds(
    Queue,
    name=_names,
    cohort=st.none() | _names,
    weight=st.floats(0.1, 10, allow_nan=False),
    quota=st.dictionaries(
        st.sampled_from(["H100-80GB", "A100-80GB", "L40S", "mig-1g.10gb", "mig-3g.40gb"]),
        st.builds(
            Quota, nominal=st.integers(0, 64), borrowing_limit=_limits, lending_limit=_limits
        ),
        max_size=3,
    ),
    namespaces=st.lists(_names, max_size=3).map(tuple),
    preemption=st.builds(
        PreemptionPolicy,
        within_queue=st.sampled_from(["Never", "LowerPriority", "LowerOrNewerEqualPriority"]),
        reclaim_within_cohort=st.sampled_from(["Never", "LowerPriority", "Any"]),
    ),
    max_priority=st.none() | st.integers(-1000, 10**6),
)


@settings(max_examples=60, deadline=None)
@given(_queues)
def test_every_queue_round_trips_through_a_valid_custom_object(queue):
    obj = queue_object(queue)
    assert not list(queue_validator().iter_errors(obj))
    assert queue_from_object(obj) == queue


# --- errors name the field -------------------------------------------------------------------


def _obj(spec: Any, **top: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apportion.io/v1alpha1",
        "kind": "Queue",
        "metadata": {"name": "team-a"},
        "spec": spec,
        **top,
    }


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (_obj({"quota": {"H100": {"nominal": -1}}}), "spec.quota.H100.nominal: -1 is negative"),
        (_obj({"weight": 0}), "spec.weight: 0 must be greater than 0"),
        (_obj({"cohortt": "lab"}), "spec.cohortt: unknown field; did you mean 'cohort'?"),
        (_obj({"name": "other"}), "spec.name: a Queue's name is its metadata.name"),
        (_obj({}, apiVersion="apportion.io/v1"), "apiVersion: 'apportion.io/v1' is not"),
        (_obj({}, kind="ClusterQueue"), "kind: 'ClusterQueue' is not 'Queue'"),
        (_obj([]), "spec: a list is not a mapping"),
        ({"metadata": {}}, "metadata.name: null is not a queue name"),
        ("queue", "(top level): 'queue' is not a mapping"),
        # Were 4 and 1.0: the API server refuses both for the schema's integer and number.
        (_obj({"quota": {"H100": {"nominal": "4"}}}), "spec.quota.H100.nominal: '4' is text,"),
        (_obj({"weight": True}), "spec.weight: true is a boolean, not a number"),
        # A cohort Kueue would refuse; a name the API server takes but no pod's label can.
        (_obj({"cohort": "Lab"}), "spec.cohort: 'Lab' is not a cohort name (as Kueue's,"),
        (_obj({}, metadata={"name": "q" * 64}), "metadata.name: 'qqq"),  # 64 characters
    ],
)
def test_queue_from_object_names_the_field(obj, message):
    with pytest.raises(QueueObjectError) as caught:
        queue_from_object(obj)
    assert message in str(caught.value)


def test_queue_from_object_defaults_a_missing_spec():
    assert queue_from_object({**_obj(None)}) == Queue(name="team-a")
