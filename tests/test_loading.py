"""scheduler/loading.py: snapshot text and data in; a Snapshot or every problem, with paths."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from scheduler.allocator import decide
from scheduler.catalog import default_catalog
from scheduler.loading import (
    SnapshotError,
    load_cluster_text,
    load_snapshot_text,
    snapshot_from_data,
    validate_snapshot,
)
from scheduler.model import Gpu, MigSlice, Node, Queue, Quota, Snapshot
from scheduler.reasons import Outcome

FIXTURES = Path(__file__).parent / "fixtures" / "snapshots"
KNOWN = ", ".join(default_catalog().names())
BALANCED = [
    {"profile": "1g.10gb", "start": 0},
    {"profile": "1g.10gb", "start": 1},
    {"profile": "2g.20gb", "start": 2},
    {"profile": "3g.40gb", "start": 4},
]


def cluster(**fields: Any) -> dict[str, Any]:
    """A small valid snapshot as data: H100 node (GPU 4 in MIG), a shared T4 node, 2 queues."""
    data: dict[str, Any] = {
        "nodes": [
            {
                "name": "h100",
                "gpus": [{"index": i, "model": "H100-80GB"} for i in range(4)]
                + [{"index": 4, "model": "H100-80GB", "mig": copy.deepcopy(BALANCED)}],
            },
            {"name": "t4", "gpus": [{"index": 0, "model": "T4", "shared": True}]},
        ],
        "queues": [
            {"name": "team-a", "cohort": "lab", "quota": {"H100-80GB": {"nominal": 4}}},
            {"name": "team-b", "cohort": "lab", "max_priority": 100},
        ],
    }
    data.update(fields)
    return data


def job(name: str, demand: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"name": name, "queue": "team-a", "demand": demand, **fields}


def whole(name: str, node: str, *gpus: int, flavor: str = "H100-80GB") -> dict[str, Any]:
    return job(name, {"gpus": len(gpus)}, flavor=flavor, placement=[{"node": node, "gpus": gpus}])


def mig(name: str, gpu: int, start: int, profile: str = "1g.10gb") -> dict[str, Any]:
    return job(
        name,
        {"mig_profile": profile},
        flavor=f"mig-{profile}",
        placement=[{"node": "h100", "gpus": [gpu], "mig_start": start}],
    )


def fraction(name: str, milli: int, node: str = "t4", gpu: int = 0) -> dict[str, Any]:
    return job(
        name,
        {"gpu_milli": milli},
        flavor="T4",
        placement=[{"node": node, "gpus": [gpu], "milli": milli}],
    )


def problems_of(data: object) -> list[str]:
    with pytest.raises(SnapshotError) as info:
        if isinstance(data, str):
            load_snapshot_text(data, "f.yaml")
        else:
            snapshot_from_data(data)
    return info.value.problems


# --- the examples of the format's contract, exactly ----------------------------------------


def test_negative_quota_names_the_path_and_value() -> None:
    text = "queues:\n- name: a\n- name: b\n- name: c\n  quota:\n    H100: {nominal: -1}\n"
    assert problems_of(text) == ["queues[2].quota.H100.nominal: -1 is negative"]


def test_demand_with_two_kinds() -> None:
    data = cluster(workloads=[job("w", {"gpus": 1, "gpu_milli": 500})])
    assert problems_of(data) == [
        "workloads[0].demand: give exactly one of gpus, mig_profile, gpu_memory_mib, gpu_milli "
        "(given: gpus, gpu_milli)"
    ]


def test_unknown_gpu_model_lists_the_known_ones() -> None:
    nodes: list[dict[str, Any]] = [{"name": f"n{i}", "gpus": []} for i in range(3)]
    nodes.append(
        {"name": "n3", "gpus": [{"index": 0, "model": "T4"}, {"index": 1, "model": "H900"}]}
    )
    assert problems_of({"nodes": nodes}) == [
        f"nodes[3].gpus[1].model: 'H900' is not a known GPU model (known: {KNOWN})"
    ]


# --- pydantic errors, formatted ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "nodes: [{name: a, gpu: []}]",
            "nodes[0].gpu: unknown field; did you mean 'gpus'? "
            "(Node fields: name, labels, taints, gpus, cpu_milli, memory_mib, cpu_held_milli, "
            "memory_held_mib)",
        ),
        (
            "node_pool: []",
            "node_pool: unknown field; did you mean 'node_pools'? (snapshot fields: gpu_models, "
            "nodes, queues, workloads, now, prices, metrics, node_pools, namespaces)",
        ),
        ("queues: [{weight: 2}]", "queues[0].name: is required"),
        ("queues: [{name: a, weight: 0}]", "queues[0].weight: 0 must be greater than 0"),
        (
            "nodes: [{name: a, labels: {zone: 5}}]",
            "nodes[0].labels.zone: 5 is not a valid string (put it in quotes)",
        ),
        (
            "nodes: [{name: a, labels: {nvidia.com/gpu.present: true}}]",
            'nodes[0].labels["nvidia.com/gpu.present"]: true is not a valid string '
            "(put it in quotes)",
        ),
        (
            "nodes: [{name: a, taints: [{key: k, effect: Never}]}]",
            "nodes[0].taints[0].effect: 'Never' is not 'NoSchedule', 'PreferNoSchedule' or "
            "'NoExecute'",
        ),
        (
            "nodes: [{name: a, gpus: [{index: 0, model: H100, mig: [{profile: 1g.10gb, "
            "start: -1}]}]}]",
            "nodes[0].gpus[0].mig[0].start: -1 is negative",
        ),
        ("now: soon", "now: 'soon' is text, not a number"),
        ("nodes: {a: 1}", "nodes: a mapping is not a list"),
        (
            "workloads: [{name: w, queue: q, demand: {gpu_milli: 1000}}]",
            "workloads[0].demand.gpu_milli: 1000 is not less than 1000",
        ),
        (
            "workloads: [{name: w, queue: q, pods: 0, demand: {gpus: 1}}]",
            "workloads[0].pods: 0 must be at least 1",
        ),
        (
            "workloads: [{name: w, queue: q, created: 2024-01-01, demand: {gpus: 1}}]",
            "workloads[0].created: '2024-01-01' is text, not a number",
        ),
        ("1: 2", "(top level): key 1 is not a string"),
        (
            "node_pools: [{name: p, count: -1, gpu_model: T4, gpus_per_node: 1}]",
            "node_pools[0].count: -1 is negative",
        ),
        (
            "workloads: [{name: w, queue: q, demand: {gpus: 1}, node_affinity: "
            "[{match_expressions: [{key: zone, operator: Near, values: [a]}]}]}]",
            "workloads[0].node_affinity[0].match_expressions[0].operator: 'Near' is not 'In', "
            "'NotIn', 'Exists', 'DoesNotExist', 'Gt' or 'Lt'",
        ),
        (
            "workloads: [{name: w, queue: q, demand: {gpus: 1}, node_affinity: "
            "[{match_expressions: [{key: rack, operator: Gt, values: [x]}]}]}]",
            "workloads[0].node_affinity[0].match_expressions[0]: operator Gt needs one integer "
            "value (given ['x'])",
        ),
        (
            "workloads: [{name: w, queue: q, demand: {gpus: 1}, node_affinity: "
            "[{match_fields: [{key: metadata.uid, operator: In, values: [a]}]}]}]",
            "workloads[0].node_affinity[0]: match_fields select on metadata.name with In or NotIn "
            "only (given metadata.uid In)",
        ),
    ],
)
def test_pydantic_errors_name_path_and_value(text: str, expected: str) -> None:
    assert problems_of(text) == [expected]


def test_all_pydantic_errors_are_reported_at_once() -> None:
    text = "queues: [{name: a, weight: -1}]\nnow: -5\nnodes: [{gpus: []}]\n"
    assert problems_of(text) == [
        "nodes[0].name: is required",
        "queues[0].weight: -1 must be greater than 0",
        "now: -5 is negative",
    ]


def test_a_cluster_file_is_a_snapshot_file_with_namespaces() -> None:
    """``serve --cluster``'s file (README "Running it") is a snapshot plus the labels of its
    namespaces; decide, simulate and plan refused it ('namespaces: unknown field')."""
    text = (FIXTURES.parent / "webhook" / "cluster.yaml").read_text()
    snapshot, namespaces = load_cluster_text(text, "cluster.yaml")
    assert snapshot == load_snapshot_text(text, "cluster.yaml")
    assert namespaces == {
        "gpu-team-a": {"apportion.io/enabled": "true"},
        "gpu-team-b": {"apportion.io/enabled": "true", "apportion.io/default-queue": "team-b"},
        "not-opted-in": {},
    }
    assert load_cluster_text("nodes: []\n") == (Snapshot(), {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("namespaces: [team-a]", ["namespaces: a list is not a mapping"]),
        ("namespaces: {team-a: [x]}", ["namespaces.team-a: a list is not a mapping"]),
        (
            "namespaces: {team-a: {apportion.io/enabled: true}}",
            ['namespaces.team-a["apportion.io/enabled"]: true is not a valid string '
             "(put it in quotes)"],
        ),
        (
            "namespace: {team-a: {}}",
            ["namespace: unknown field; did you mean 'namespaces'? (snapshot fields: "
             "gpu_models, nodes, queues, workloads, now, prices, metrics, node_pools, "
             "namespaces)"],
        ),
    ],
)  # fmt: skip
def test_a_bad_namespaces_map_is_named(text: str, expected: list[str]) -> None:
    assert problems_of(text) == expected


NAMESPACE = (
    "is not a namespace name (a DNS-1123 label: at most 63 lowercase letters, digits and "
    "'-', beginning and ending with a letter or digit)"
)
SUBDOMAIN = (
    "a DNS-1123 subdomain: at most {} lowercase letters, digits, '-' and '.', beginning "
    "and ending with a letter or digit"
)
QUEUE = (
    "a queue name (pods name their queue in the label apportion.io/queue, whose values are "
    "at most 63 letters, digits, '-', '_' and '.', beginning and ending with a letter or "
    "digit)"
)


def test_names_kubernetes_would_refuse_are_refused() -> None:
    # Each was taken as written: a cluster no API server would hold, a queue no pod's
    # label can name.
    text = (
        "nodes: [{name: GPU_a}, {name: " + "n" * 254 + "}]\n"
        "node_pools: [{name: T4 pool, count: 1, gpu_model: T4, gpus_per_node: 1}]\n"
        "queues:\n"
        "  - {name: team a, cohort: Lab_1, namespaces: [Team-A, '']}\n"
        "  - {name: " + "q" * 64 + ", cohort: ''}\n"
        "workloads: [{name: w, queue: team a, namespace: -ns-, demand: {gpus: 1}}]\n"
        "namespaces: {" + "x" * 64 + ": {}}\n"
    )
    long_node = "'" + "n" * 56 + "..."
    assert problems_of(text) == [
        f"nodes[0].name: 'GPU_a' is not a node name ({SUBDOMAIN.format(253)})",
        f"nodes[1].name: {long_node} is 254 characters long, not a node name "
        f"({SUBDOMAIN.format(253)})",
        # Its nodes are named T4 pool-0, …: a node name with 6 characters more.
        f"node_pools[0].name: 'T4 pool' is not a node name ({SUBDOMAIN.format(247)})",
        f"queues[0].name: 'team a' is not {QUEUE}",
        f"queues[0].cohort: 'Lab_1' is not a cohort name (as Kueue's, {SUBDOMAIN.format(253)})",
        f"queues[0].namespaces[0]: 'Team-A' {NAMESPACE}",
        f"queues[0].namespaces[1]: '' {NAMESPACE}",
        f"queues[1].name: '{'q' * 56}... is 64 characters long, not {QUEUE}",
        f"queues[1].cohort: '' is not a cohort name (as Kueue's, {SUBDOMAIN.format(253)})",
        f"workloads[0].namespace: '-ns-' {NAMESPACE}",
        f"namespaces.{'x' * 64}: '{'x' * 56}... is 64 characters long, not "
        + NAMESPACE.removeprefix("is not "),
    ]


def test_names_kubernetes_accepts_load() -> None:
    # A queue name is a label value (a trace's tenant, vcEwI, may name one); a node name
    # is a subdomain, dots and all.
    snapshot = load_snapshot_text(
        "nodes: [{name: gpu-a.rack-1.example}]\n"
        "queues: [{name: vcEwI_2.x, cohort: lab.research, namespaces: [team-a]}]\n"
        "namespaces: {" + "x" * 63 + ": {}}\n",
        "f.yaml",
    )
    assert [q.name for q in snapshot.queues] == ["vcEwI_2.x"]


# --- text: YAML and JSON -------------------------------------------------------------------


def test_numbers_written_as_yes_or_no_are_refused() -> None:
    # pydantic took booleans as 1 and 0: `gpus: yes` was one GPU, `nominal: off` no quota.
    text = (
        "nodes: [{name: n, gpus: [{index: 0, model: H100, shared: yes, healthy: on}]}]\n"
        "queues: [{name: q, weight: on, quota: {H100: {nominal: off}}}]\n"
        "workloads: [{name: w, queue: q, pods: true, demand: {gpus: yes}, nominated: yes}]\n"
    )
    why = "is a boolean, not a number (YAML reads yes, no, on and off as booleans)"
    assert problems_of(text) == [
        f"queues[0].weight: true {why}",
        f"queues[0].quota.H100.nominal: false {why}",
        f"workloads[0].pods: true {why}",
        f"workloads[0].demand.gpus: true {why}",
    ]


def test_numbers_written_as_text_or_floats_are_refused() -> None:
    # pydantic took "2" as 2 and 2.0 as 2; a quoted number is not one in our files, and
    # a count is an integer. Each is named once (pydantic's own words for it left out).
    text = (
        'now: "100"\n'
        "nodes: [{name: n, cpu_milli: 4000.0, gpus: [{index: '0', model: H100}]}]\n"
        "queues: [{name: q, weight: '2', quota: {H100: {nominal: 2.5}}}]\n"
        "workloads: [{name: w, queue: q, pods: 1e1, demand: {gpus: ' 1'}}]\n"
        "prices: {H100: '4.5'}\n"
    )
    quoted = "is text, not a number (write it without quotes)"
    assert problems_of(text) == [
        f"now: '100' {quoted}",
        "nodes[0].cpu_milli: 4000.0 is not an integer (write 4000)",
        f"nodes[0].gpus[0].index: '0' {quoted}",
        f"queues[0].weight: '2' {quoted}",
        "queues[0].quota.H100.nominal: 2.5 is not an integer",
        "workloads[0].pods: 10.0 is not an integer (write 10)",
        f"workloads[0].demand.gpus: ' 1' {quoted}",
        f"prices.H100: '4.5' {quoted}",
    ]
    # JSON alike; a float where a float is wanted, and an integer, are numbers.
    assert problems_of('{"now": 1.0, "queues": [{"name": "q", "weight": 2}]}') == [
        "now: 1.0 is not an integer (write 1)"
    ]


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("1:30", "1:30 is 90 in YAML 1.1 (base 60) but text in YAML 1.2, which Apportion "
                 "reads: write 90, or quote it for text"),
        ("017", "017 is 15 in YAML 1.1 (octal) but 17 in YAML 1.2, which Apportion reads: "
                "write 15 or 17, whichever you mean, without the leading 0"),
        ("1_000", "1_000 is 1000 in YAML 1.1 ('_' left out) but text in YAML 1.2, which "
                  "Apportion reads: write 1000, or quote it for text"),
        ("0b101", "0b101 is 5 in YAML 1.1 (binary) but text in YAML 1.2, which Apportion "
                  "reads: write 5, or quote it for text"),
        ("-0x10", "-0x10 is -16 in YAML 1.1 (hex) but text in YAML 1.2, which Apportion "
                  "reads: write -16, or quote it for text"),
        ("1_0.5", "1_0.5 is 10.5 in YAML 1.1 ('_' left out) but text in YAML 1.2, which "
                  "Apportion reads: write 10.5, or quote it for text"),
    ],
)  # fmt: skip
def test_numbers_yaml_1_1_reads_otherwise_are_refused(written: str, expected: str) -> None:
    # PyYAML read YAML 1.1: `now: 1:30` was 90 and `nominal: 010` was 8, without a word.
    text = f"now: 5\nqueues:\n  - name: q\n    quota: {{H100: {{nominal: {written}}}}}\n"
    assert problems_of(text) == [
        f"f.yaml: line 4 column 29: queues[0].quota.H100.nominal: {expected}"
    ]


def test_every_yaml_1_1_number_is_named_once_by_its_path() -> None:
    # An anchor's value is named where it is written, once; a merge key's entries belong
    # to the mapping they are merged into.
    text = (
        "now: 1:30\n"
        "defaults: &q {weight: 017}\n"
        "queues:\n"
        "  - {<<: *q, name: a}\n"
        "  - {<<: *q, name: b}\n"
    )
    problems = problems_of(text)
    assert [p.split(": ")[1] for p in problems] == ["line 1 column 6", "line 2 column 23"]
    assert problems[1].startswith("f.yaml: line 2 column 23: defaults.weight: 017 is 15")


def test_numbers_read_as_yaml_1_2_reads_them() -> None:
    # 0o is octal and 1e3 a number in YAML 1.2 (text in 1.1); a leading 0 YAML 1.1 reads
    # no otherwise (08 is not octal) is decimal; quoted, each is text (a label here).
    snapshot = load_snapshot_text(
        "now: 0o17\n"
        "nodes: [{name: n, labels: {a: '1:30', b: '017'}, cpu_milli: 08,"
        " memory_mib: 0x10}]\n"
        "queues: [{name: q, weight: 1.5e+2}]\n"
        "prices: {H100: 2e0}\n",
        "f.yaml",
    )
    assert snapshot.now == 15
    assert snapshot.nodes[0].labels == {"a": "1:30", "b": "017"}
    assert (snapshot.nodes[0].cpu_milli, snapshot.nodes[0].memory_mib) == (8, 16)
    assert snapshot.queues[0].weight == 150.0
    assert snapshot.prices == {"H100": 2.0}


def test_yes_no_on_and_off_stay_booleans() -> None:
    # As kubectl (YAML 1.1) reads them: refused as text, never quietly the text "no".
    snapshot = load_snapshot_text(
        "nodes: [{name: n, gpus: [{index: 0, model: H100, shared: yes, healthy: on}]}]\n",
        "f.yaml",
    )
    assert (snapshot.nodes[0].gpus[0].shared, snapshot.nodes[0].gpus[0].healthy) == (True, True)
    assert problems_of("queues: [{name: q, namespaces: [no]}]\n") == [
        "queues[0].namespaces[0]: false is not a valid string (put it in quotes)"
    ]


def test_yaml_syntax_error_has_line_and_column() -> None:
    text = "nodes:\n  - name: a\n   bad: 1\n"
    [problem] = problems_of(text)
    assert problem.startswith("f.yaml: line 3 column 4: ")
    assert "expected <block end>" in problem


def test_json_syntax_error_has_line_and_column() -> None:
    assert problems_of('{\n  "nodes": [\n  }\n') == ["f.yaml: line 3 column 3: Expecting value"]
    # json's own sentence ended "starting at", which its place after it completed.
    assert problems_of('{"nodes": [{"name": "a') == [
        "f.yaml: line 1 column 21: Unterminated string starting here"
    ]


def test_duplicate_keys_are_errors_in_yaml_and_json() -> None:
    assert problems_of("now: 1\nnow: 2\n") == [
        "f.yaml: line 2 column 1: duplicate key 'now' (in the mapping at line 1 column 1)"
    ]
    assert problems_of('{"now": 1, "now": 2}') == [
        "f.yaml: line 1 column 12: duplicate key 'now' (in the mapping)"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "f.yaml: is empty; expected a mapping of snapshot fields"),
        ("# only a comment\n", "f.yaml: is empty; expected a mapping of snapshot fields"),
        ("- 1\n- 2\n", "f.yaml: the top level must be a mapping of snapshot fields, not a list"),
        ("42", "f.yaml: the top level must be a mapping of snapshot fields, not 42"),
        ("now: !!int abc\n", "f.yaml: invalid literal for int() with base 10: 'abc'"),
        ("now: *nowhere\n", "f.yaml: line 1 column 6: found undefined alias 'nowhere'"),
    ],
)
def test_unusable_text(text: str, expected: str) -> None:
    assert problems_of(text) == [expected]


_ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [{', '.join([f'*{a}'] * 10)}]\n" for a, b in zip("abcdefg", "bcdefgh", strict=True)
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"now": ' + "[" * 100_000 + "]" * 100_000 + "}", "f.yaml: nested too deeply to read"),
        ("now: " + "[" * 100_000 + "]" * 100_000, "f.yaml: nested too deeply to read"),
        (
            '{"now": ' + "9" * 5000 + "}",
            "f.yaml: a number has too many digits (more than 4,300)",
        ),
        ("now: " + "9" * 5000, "f.yaml: a number has too many digits (more than 4,300)"),
        (_ALIAS_BOMB, "f.yaml: its 70 YAML aliases expand it to more than 10,000,000 values"),
        ("a: &x [*x]\n", "f.yaml: its 1 YAML aliases expand it to more than 10,000,000 values"),
        (
            "node_pools: [{name: p, count: 100000, gpu_model: T4, gpus_per_node: 1024}]",
            "node_pools: 102,400,000 GPUs in all (nodes and pools); at most 1,000,000",
        ),
    ],
    ids=["deep-json", "deep-yaml", "int-json", "int-yaml", "aliases", "recursive", "pools"],
)
def test_text_past_what_can_be_held_is_refused_before_it_is(text: str, expected: str) -> None:
    """Each was a traceback (RecursionError, int() past 4,300 digits), or a long wait and
    gigabytes: 7 KB of nested aliases read as 100 million values, pools within their own
    bounds as 100 million GPUs."""
    assert problems_of(text) == [expected]


def test_yaml_flow_style_and_merge_keys_are_fine() -> None:
    assert load_snapshot_text("{now: 7}").now == 7
    text = (
        "node_pools:\n"
        "  - &base {name: a, count: 1, gpu_model: T4, gpus_per_node: 4}\n"
        "  - <<: *base\n"
        "    name: b\n"
    )
    assert [n.name for n in load_snapshot_text(text).nodes] == ["a-000", "b-000"]


def test_json_text_loads() -> None:
    snapshot = load_snapshot_text((FIXTURES / "custom-models.json").read_text(), "x.json")
    assert snapshot.now == 500
    assert [g.model for n in snapshot.nodes for g in n.gpus] == [
        "P100",
        "Tesla-P100-PCIE-16GB",
        "T4",
    ]


@settings(max_examples=300, deadline=None)
@given(st.text())
@example("\x1f")  # YAML's reader refuses it as the loader is made, not as it loads
def test_any_text_gives_a_snapshot_or_a_snapshot_error(text: str) -> None:
    try:
        load_snapshot_text(text)
    except SnapshotError as error:
        assert error.problems


_SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=3)
    ),
    max_leaves=12,
)
_FIELDS = ("gpu_models", "nodes", "queues", "workloads", "now", "prices", "node_pools")


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(_FIELDS), _VALUES))
def test_any_data_gives_a_snapshot_or_a_snapshot_error(data: dict[str, object]) -> None:
    try:
        snapshot_from_data(data)
    except SnapshotError as error:
        assert all(isinstance(p, str) and p for p in error.problems)


# --- node pools ----------------------------------------------------------------------------


def test_node_pools_expand_after_explicit_nodes() -> None:
    pool = {
        "name": "gpu",
        "count": 3,
        "gpu_model": "H100",
        "gpus_per_node": 8,
        "labels": {"team": "ml"},
        "taints": [{"key": "dedicated", "value": "ml"}],
        "cpu_milli": 96000,
        "memory_mib": 1000000,
        "mig_layout": BALANCED,
        "mig_gpus": 2,
        "shared": True,
    }
    snapshot = snapshot_from_data(cluster(node_pools=[pool]))
    assert [n.name for n in snapshot.nodes] == ["h100", "t4", "gpu-000", "gpu-001", "gpu-002"]
    node = snapshot.nodes[3]
    assert node.labels == {
        "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
        "nvidia.com/gpu.count": "8",
        "nvidia.com/gpu.present": "true",
        "team": "ml",
        "kubernetes.io/hostname": "gpu-001",
    }
    assert (node.cpu_milli, node.memory_mib) == (96000, 1000000)
    assert [t.key for t in node.taints] == ["dedicated"]
    layout = tuple(MigSlice.model_validate(s) for s in BALANCED)
    assert node.gpus == tuple(
        Gpu(index=i, model="H100-80GB", mig=layout if i < 2 else None, shared=i >= 2)
        for i in range(8)
    )


def test_mig_layout_applies_to_every_gpu_by_default() -> None:
    pool = {
        "name": "m",
        "count": 1,
        "gpu_model": "A100-80GB",
        "gpus_per_node": 4,
        "mig_layout": [{"profile": "7g.80gb", "start": 0}],
    }
    [node] = snapshot_from_data({"node_pools": [pool]}).nodes
    assert all(g.mig == (MigSlice(profile="7g.80gb", start=0),) for g in node.gpus)


def test_pool_names_widen_past_a_thousand_nodes() -> None:
    pool = {"name": "p", "count": 1001, "gpu_model": "T4", "gpus_per_node": 1}
    nodes = snapshot_from_data({"node_pools": [pool]}).nodes
    assert (nodes[0].name, nodes[-1].name) == ("p-0000", "p-1000")


def test_pool_keeps_a_product_label_of_its_model() -> None:
    pool = {
        "name": "p",
        "count": 1,
        "gpu_model": "H100-80GB",
        "gpus_per_node": 1,
        "labels": {"nvidia.com/gpu.product": "NVIDIA-H100-PCIe"},
    }
    [node] = snapshot_from_data({"node_pools": [pool]}).nodes
    assert node.labels["nvidia.com/gpu.product"] == "NVIDIA-H100-PCIe"


def _pool(**fields: Any) -> dict[str, Any]:
    return {"name": "p", "count": 2, "gpu_model": "H100-80GB", "gpus_per_node": 8, **fields}


@pytest.mark.parametrize(
    ("pools", "expected"),
    [
        (
            [_pool(gpu_model="H900")],
            f"node_pools[0].gpu_model: 'H900' is not a known GPU model (known: {KNOWN})",
        ),
        ([_pool(mig_gpus=2)], "node_pools[0].mig_gpus: 2 needs a mig_layout to apply"),
        (
            [_pool(mig_gpus=9, mig_layout=[])],
            "node_pools[0].mig_gpus: 9 is more than gpus_per_node (8)",
        ),
        (
            [_pool(gpu_model="L40S", mig_layout=[])],
            "node_pools[0].mig_layout: L40S does not support MIG (MIG-capable: A30, A100-40GB, "
            "A100-80GB, H100-80GB, H100-NVL, H200, B200)",
        ),
        (
            [
                _pool(
                    mig_layout=[
                        {"profile": "3g.40gb", "start": 0},
                        {"profile": "3g.40gb", "start": 2},
                    ]
                )
            ],
            "node_pools[0].mig_layout[1].start: 2 is not a valid start for 3g.40gb on H100-80GB "
            "(valid: 0, 4)",
        ),
        (
            [_pool(labels={"nvidia.com/gpu.product": "NVIDIA-L4"})],
            "node_pools[0].labels[\"nvidia.com/gpu.product\"]: 'NVIDIA-L4' is not a product of "
            "H100-80GB, the pool's gpu_model",
        ),
        (
            [_pool(labels={"kubernetes.io/hostname": "x"})],
            "node_pools[0].labels[\"kubernetes.io/hostname\"]: 'x' is set per node from its name; "
            "remove it",
        ),
        ([_pool(), _pool(count=1)], "node_pools[1].name: 'p' is already used by node_pools[0]"),
        (
            [_pool(name="h", count=1)],
            "node_pools[0]: node name 'h-000' is already used by nodes[0]",
        ),
    ],
)
def test_pool_problems(pools: list[dict[str, Any]], expected: str) -> None:
    data = cluster(node_pools=pools)
    data["nodes"][0]["name"] = "h-000"
    assert problems_of(data) == [expected]


def test_a_bad_pool_is_reported_once_not_per_node() -> None:
    bad = [{"profile": "1g.10gb", "start": 0}, {"profile": "1g.10gb", "start": 0}]
    assert problems_of({"node_pools": [_pool(count=50, mig_layout=bad)]}) == [
        "node_pools[0].mig_layout[1]: 1g.10gb@0 overlaps node_pools[0].mig_layout[0] "
        "(1g.10gb@0) in memory slices"
    ]


# --- cross-references: nodes, MIG, catalog -------------------------------------------------


def _gpu_node(*gpus: dict[str, Any]) -> dict[str, Any]:
    return {"nodes": [{"name": "n", "gpus": list(gpus)}]}


def _mig_gpu(model: str, *slices: tuple[str, int]) -> dict[str, Any]:
    return {"index": 0, "model": model, "mig": [{"profile": p, "start": s} for p, s in slices]}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"nodes": [{"name": "a"}, {"name": "b"}, {"name": "a"}]},
            ["nodes[2].name: node name 'a' is already used by nodes[0]"],
        ),
        (
            _gpu_node({"index": 0, "model": "T4"}, {"index": 0, "model": "T4"}),
            ["nodes[0].gpus[1].index: 0 is already used by nodes[0].gpus[0]"],
        ),
        (
            _gpu_node(_mig_gpu("T4")),
            [
                "nodes[0].gpus[0].mig: T4 does not support MIG (MIG-capable: A30, A100-40GB, "
                "A100-80GB, H100-80GB, H100-NVL, H200, B200)"
            ],
        ),
        (
            _gpu_node(_mig_gpu("A100-80GB", ("1g.5gb", 0))),
            [
                "nodes[0].gpus[0].mig[0].profile: '1g.5gb' is not a MIG profile of A100-80GB "
                "(profiles: 1g.10gb, 1g.10gb+me, 1g.20gb, 2g.20gb, 3g.40gb, 4g.40gb, 7g.80gb)"
            ],
        ),
        (
            _gpu_node(_mig_gpu("H100", ("2g.20gb", 6))),
            [
                "nodes[0].gpus[0].mig[0].start: 6 is not a valid start for 2g.20gb on H100-80GB "
                "(valid: 0, 2, 4)"
            ],
        ),
        (
            _gpu_node(_mig_gpu("H100", ("3g.40gb", 4), ("2g.20gb", 4))),
            [
                "nodes[0].gpus[0].mig[1]: 2g.20gb@4 overlaps nodes[0].gpus[0].mig[0] (3g.40gb@4) "
                "in memory slices"
            ],
        ),
        (
            _gpu_node(_mig_gpu("H100", ("7g.80gb", 0), ("1g.10gb", 3))),
            [
                "nodes[0].gpus[0].mig[1]: 1g.10gb@3 overlaps nodes[0].gpus[0].mig[0] (7g.80gb@0) "
                "in memory slices",
                "nodes[0].gpus[0].mig: compute slices sum to 8, more than the 7 of H100-80GB",
            ],
        ),
        (
            _gpu_node(_mig_gpu("H100", ("1g.10gb+me", 0), ("1g.10gb", 1), ("1g.10gb+me", 2))),
            [
                "nodes[0].gpus[0].mig[2].profile: '1g.10gb+me' is a second media-extension (+me) "
                "instance; a GPU has one (first: nodes[0].gpus[0].mig[0])"
            ],
        ),
        (
            _gpu_node(_mig_gpu("H100", ("4g.40gb", 0), ("4g.40gb", 0))),
            [
                "nodes[0].gpus[0].mig[1].profile: '4g.40gb' appears more than 1 times, its maximum "
                "on H100-80GB",
                "nodes[0].gpus[0].mig[1]: 4g.40gb@0 overlaps nodes[0].gpus[0].mig[0] (4g.40gb@0) "
                "in memory slices",
                "nodes[0].gpus[0].mig: compute slices sum to 8, more than the 7 of H100-80GB",
            ],
        ),
        (
            _gpu_node({**_mig_gpu("H100", ("7g.80gb", 0)), "shared": True}),
            [
                "nodes[0].gpus[0].shared: true conflicts with mig: fractional pods share whole "
                "GPUs, "
                "not MIG-partitioned ones"
            ],
        ),
        # One of the two prices was dropped without a word.
        (
            {"prices": {"H100-80GB": 4.0, "T4": 0.3, "h100": 5.0}},
            ["prices.h100: 'h100' is the same model as 'H100-80GB'"],
        ),
        (
            {"prices": {"H900": 1.0, "T4": -1.0}},
            [
                f"prices.H900: 'H900' is not a known GPU model (known: {KNOWN})",
                "prices.T4: -1 must be a finite number, 0 or more",
            ],
        ),
        # 1e308 made every cost of a capacity plan inf and NaN.
        (
            {
                "gpu_models": [{"name": "G1", "memory_mib": 1024, "price_per_hour": 2000}],
                "prices": {"T4": 1e308},
            },
            [
                "gpu_models[0].price_per_hour: 2000 is more than $1,000 per GPU-hour (the "
                "catalog's dearest GPU lists at $9/h: a larger price is likely per node or "
                "per month)",
                "prices.T4: 1e+308 is more than $1,000 per GPU-hour (the catalog's dearest GPU "
                "lists at $9/h: a larger price is likely per node or per month)",
            ],
        ),
        (
            {
                "gpu_models": [
                    {"name": "P100", "memory_mib": 16384},
                    {"name": "p100", "memory_mib": 16384},
                ]
            },
            ["gpu_models[1].name: 'p100' is already used by gpu_models[0]"],
        ),
        (
            {"gpu_models": [{"name": "H100", "memory_mib": 81920}]},
            [
                "gpu_models[0].name: 'H100' already names the built-in H100-80GB; use 'H100-80GB' "
                "to replace it, or another name"
            ],
        ),
        (
            {
                "gpu_models": [
                    {
                        "name": "X1",
                        "memory_mib": 1024,
                        "products": ["NVIDIA-L4"],
                        "relative_throughput": 0,
                    }
                ]
            },
            [
                "gpu_models[0].products[0]: 'NVIDIA-L4' is already a product of the built-in L4",
                "gpu_models[0].relative_throughput: 0.0 must be a finite number greater than 0",
            ],
        ),
        # Custom models whose names and products overlap once raised ValueError: a traceback.
        (
            {
                "gpu_models": [
                    {"name": "X1", "memory_mib": 1024, "products": ["p100"]},
                    {"name": "P100", "memory_mib": 16384},
                ]
            },
            ["gpu_models[0].products[0]: 'p100' is the name of gpu_models[1]"],
        ),
        (
            {
                "gpu_models": [
                    {"name": "X1", "memory_mib": 1024, "products": ["Tesla-X", "X1"]},
                    {"name": "X2", "memory_mib": 1024, "products": ["tesla-x"]},
                ]
            },
            ["gpu_models[1].products[0]: 'tesla-x' is already a product of gpu_models[0]"],
        ),
    ],
)
def test_node_and_catalog_problems(data: dict[str, Any], expected: list[str]) -> None:
    assert problems_of(data) == expected


def test_a_node_has_at_most_1024_gpus() -> None:
    gpus = [{"index": i, "model": "T4"} for i in range(1025)]
    assert problems_of({"nodes": [{"name": "n", "gpus": gpus}]}) == [
        "nodes[0].gpus: 1025 GPUs, more than a node can have (1024)"
    ]


def test_a_gpu_index_is_one_a_node_can_have() -> None:
    """An index of 10**30 was taken and shown in placements (n/gpu1000…0)."""
    gpus = [{"index": 0, "model": "T4"}, {"index": 1024, "model": "T4"}]
    assert problems_of({"nodes": [{"name": "n", "gpus": gpus}]}) == [
        "nodes[0].gpus[1].index: 1024 is past the last index a node can have (1023)"
    ]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        # A running workload's placement deleted but its start kept: it was decided again.
        ({"started": 5}, "workloads[2].started: 5 is set, but the workload has no placement "
         "(a running workload needs both; a waiting one has neither)"),
        ({"created": 101}, "workloads[2].created: 101 is after the snapshot's now (100)"),
    ],
)  # fmt: skip
def test_a_waiting_workloads_times_are_checked(fields: dict[str, Any], expected: str) -> None:
    data = cluster(workloads=[whole("a", "h100", 0), whole("b", "h100", 1)], now=100)
    data["workloads"].append(job("w", {"gpus": 1}, **fields))
    assert problems_of(data) == [expected]


def test_a_running_workloads_times_are_checked() -> None:
    early = {**whole("a", "h100", 0), "created": 50, "started": 20}
    late = {**whole("b", "h100", 1), "started": 200}
    assert problems_of(cluster(workloads=[early, late], now=100)) == [
        "workloads[0].started: 20 is before the workload was created (50)",
        "workloads[1].started: 200 is after the snapshot's now (100)",
    ]


def test_times_are_relative_without_now() -> None:
    """Without ``now`` a snapshot's times are its own (now is 0): nothing is "after" it."""
    running = {**whole("a", "h100", 0), "created": 50, "started": 60}
    assert snapshot_from_data(cluster(workloads=[running])).now == 0


def test_a_custom_model_may_not_be_named_like_a_mig_flavor() -> None:
    """A model 'mig-1g.10gb' made the quota key mig-1g.10gb mean two flavors."""
    model = {"name": "mig-1g.10gb", "memory_mib": 1}
    assert problems_of({"gpu_models": [model]}) == [
        "gpu_models[0].name: 'mig-1g.10gb' starts with 'mig-', which names MIG flavors in "
        "quotas (mig-<profile>); choose another name"
    ]


def test_valid_mig_layouts_pass() -> None:
    layouts = [
        [("4g.40gb", 0), ("3g.40gb", 4)],
        [("1g.10gb", s) for s in range(7)],
        [("3g.40gb", 0), ("2g.20gb", 4), ("1g.10gb+me", 6)],
        [("1g.20gb", 0), ("1g.20gb", 2), ("1g.20gb", 4), ("1g.20gb", 6)],
    ]
    gpus = [{**_mig_gpu("H100-80GB", *layout), "index": i} for i, layout in enumerate(layouts)]
    assert snapshot_from_data(_gpu_node(*gpus)).nodes[0].gpus[3].mig is not None


def test_a_replaced_builtin_model_and_custom_prices() -> None:
    data = {
        "gpu_models": [
            {"name": "T4", "memory_mib": 15360, "price_per_hour": 0.1},
            {"name": "P100", "memory_mib": 16384, "products": ["Tesla-P100"]},
        ],
        "prices": {"H100": 9.5},
        "nodes": [{"name": "n", "gpus": [{"index": 0, "model": "Tesla-P100"}]}],
    }
    catalog = snapshot_from_data(data).catalog()
    assert catalog["P100"].memory_mib == 16384
    assert (catalog["T4"].memory_mib, catalog["T4"].price_per_hour) == (15360, 0.1)
    assert catalog["H100-80GB"].price_per_hour == 9.5


# --- cross-references: queues and workloads ------------------------------------------------


def _queue(**fields: Any) -> dict[str, Any]:
    return {"name": "q", "cohort": "c", **fields}


@pytest.mark.parametrize(
    ("queues", "expected"),
    [
        ([_queue(), _queue()], "queues[1].name: 'q' is already used by queues[0]"),
        (
            [_queue(quota={"V100": {}})],
            f"queues[0].quota.V100: 'V100' is not a known flavor (a GPU model: {KNOWN}; "
            "or mig-<profile>)",
        ),
        (
            [_queue(quota={"mig-1g.10g": {}})],
            "queues[0].quota[\"mig-1g.10g\"]: 'mig-1g.10g' is not a known flavor: no GPU model "
            "has MIG profile '1g.10g'; did you mean '1g.10gb'?",
        ),
        (
            [_queue(quota={"H100": {"nominal": 1}, "h100-80gb": {"nominal": 2}})],
            "queues[0].quota.h100-80gb: 'h100-80gb' is the same flavor as 'H100'",
        ),
        (
            [_queue(cohort=None, quota={"T4": {"nominal": 2, "borrowing_limit": 1}})],
            "queues[0].quota.T4.borrowing_limit: 1 needs a cohort, and queue 'q' has none",
        ),
        (
            [_queue(quota={"T4": {"nominal": 2, "lending_limit": 3}})],
            "queues[0].quota.T4.lending_limit: 3 is more than the nominal quota 2",
        ),
        ([_queue(weight=float("inf"))], "queues[0].weight: inf is not a finite number"),
    ],
)
def test_queue_problems(queues: list[dict[str, Any]], expected: str) -> None:
    assert problems_of({"queues": queues}) == [expected]


KUBERNETES_PRIORITY = "is not a Kubernetes priority (a 32-bit integer, -2147483648 to 2147483647)"
PAST_ANY_CLUSTER = "more than any cluster holds (at most 1,000,000 GPUs, 7 MIG instances each)"
WEIGHTS = (
    "must be between 0.001 and 1,000: only weights' ratios matter, and shares divided "
    "by a weight past these lose their precision"
)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # Sizes past any cluster were taken: a priority of 10**30 turned a 1.3 % gap into
        # 88 % (the ILP's coefficients), a gang of 10**12 pods was "needs 4000000000000".
        (
            {"queues": [_queue(name="team-a")], "workloads": [job("w", {"gpus": 1},
             priority=2**31)]},
            [f"workloads[0].priority: 2147483648 {KUBERNETES_PRIORITY}"],
        ),
        (
            {"queues": [_queue(name="team-a")], "workloads": [job("w", {"gpus": 1},
             pods=10**6 + 1)]},
            ["workloads[0].pods: 1000001 pods are more than 1,000,000, more than any cluster "
             "has GPUs"],
        ),
        (
            {"queues": [_queue(max_priority=-(2**31) - 1, quota={"T4": {"nominal": 10**30}})]},
            [f"queues[0].quota.T4.nominal: {10**30} is more than 10,000,000, {PAST_ANY_CLUSTER}",
             f"queues[0].max_priority: -2147483649 {KUBERNETES_PRIORITY}"],
        ),
        ({"queues": [_queue(weight=1e308)]}, [f"queues[0].weight: 1e+308 {WEIGHTS}"]),
        ({"queues": [_queue(weight=1e-308)]}, [f"queues[0].weight: 1e-308 {WEIGHTS}"]),
    ],
)  # fmt: skip
def test_sizes_past_any_cluster_are_refused(data: dict[str, Any], expected: list[str]) -> None:
    assert problems_of(data) == expected


def test_mig_and_alias_quota_flavors_are_known() -> None:
    quota = {"mig-1g.10gb": {"nominal": 7}, "mig-1g.5gb+me": {}, "A100": {}, "NVIDIA-L4": {}}
    assert snapshot_from_data({"queues": [_queue(quota=quota)]}).queues[0].quota.keys() == {
        "mig-1g.10gb",
        "mig-1g.5gb+me",
        "A100",
        "NVIDIA-L4",
    }


@pytest.mark.parametrize(
    ("quota_key", "running_flavor"),
    [
        ("H100", "H100-80GB"),
        ("h100-80gb", "H100-80GB"),
        ("H100-80GB", "h100"),
        ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe"),
    ],
)
def test_any_name_of_a_model_is_one_quota(quota_key: str, running_flavor: str) -> None:
    # The running workload holds team-a's whole nominal quota, however either side names
    # the model: the pending one must wait (it once got the quota again, or none at all).
    data = cluster(
        workloads=[
            whole("r", "h100", 0, 1, 2, 3, flavor=running_flavor),
            job("w", {"gpus": 1, "models": ["H100-80GB"]}),
        ]
    )
    data["queues"] = [{"name": "team-a", "quota": {quota_key: {"nominal": 4}}}]
    data["nodes"][0]["gpus"].append({"index": 5, "model": "H100-80GB"})
    verdict = decide(snapshot_from_data(data), use_ilp=False).by_workload()["w"]
    assert verdict.outcome is Outcome.PENDING
    assert verdict.message == "queue team-a at nominal H100-80GB quota 4/4; needs 1"


@pytest.mark.parametrize(
    ("workloads", "expected"),
    [
        (
            [job("w", {"gpus": 1}), job("w", {"gpus": 2})],
            ["workloads[1].name: 'w' is already used by workloads[0]"],
        ),
        (
            [job("w", {"gpus": 1}, queue="team-z")],
            ["workloads[0].queue: 'team-z' is not a queue (queues: team-a, team-b)"],
        ),
        (
            [job("w", {"gpus": 1}, queue="team-b", priority=1000)],
            ["workloads[0].priority: 1000 is above the max_priority 100 of queue 'team-b'"],
        ),
        (
            [job("w", {"gpus": 1, "models": ["H100", "V100"]})],
            [f"workloads[0].demand.models[1]: 'V100' is not a known GPU model (known: {KNOWN})"],
        ),
        (
            [job("w", {"mig_profile": "1g.10g"})],
            [
                "workloads[0].demand.mig_profile: '1g.10g' is not a MIG profile of any known GPU "
                "model; did you mean '1g.10gb'?"
            ],
        ),
        (
            [job("w", {"gpus": 1}, throughput={"V100": 1.0, "T4": 0})],
            [
                f"workloads[0].throughput.V100: 'V100' is not a known GPU model (known: {KNOWN})",
                "workloads[0].throughput.T4: 0.0 must be a finite number greater than 0",
            ],
        ),
        # 10**12 GPUs in one pod once crashed the ILP (an IndexError in PuLP): a traceback.
        (
            [job("w", {"gpus": 10**12})],
            ["workloads[0].demand.gpus: 1000000000000 is more GPUs than a node can have (1024)"],
        ),
        (
            [job("w", {"gpus": 1}, throughput={"H100": 3.0, "NVIDIA-H100-80GB-HBM3": 1.0})],
            [
                "workloads[0].throughput.NVIDIA-H100-80GB-HBM3: 'NVIDIA-H100-80GB-HBM3' is the "
                "same "
                "model as 'H100'"
            ],
        ),
        (
            [job("w", {"gpus": 1}, flavor="V100")],
            [
                f"workloads[0].flavor: 'V100' is not a known flavor (a GPU model: {KNOWN}; "
                "or mig-<profile>)"
            ],
        ),
    ],
)
def test_workload_problems(workloads: list[dict[str, Any]], expected: list[str]) -> None:
    assert problems_of(cluster(workloads=workloads)) == expected


# --- running workloads: placements and overcommit ------------------------------------------


@pytest.mark.parametrize(
    ("workloads", "expected"),
    [
        (
            [{**whole("w", "h100", 0), "flavor": None}],
            ["workloads[0].flavor: is required on a running workload (placement is set)"],
        ),
        (
            [{**whole("w", "h100", 0), "pods": 2}],
            ["workloads[0].placement: 1 pod placements for 2 pods"],
        ),
        ([whole("w", "h200", 0)], ["workloads[0].placement[0].node: 'h200' is not a node"]),
        (
            [whole("w", "h100", 0, 9)],
            [
                "workloads[0].placement[0].gpus[1]: 9 is not a GPU index on node 'h100' "
                "(indices: 0, 1, 2, 3, 4)"
            ],
        ),
        (
            [whole("w", "h100", 1, 1)],
            [
                "workloads[0].placement[0].gpus: [1, 1] lists a GPU twice",
                "workloads[0].placement[0].gpus[1]: GPU 1 on node 'h100' is already used by "
                "workload 'w'",
            ],
        ),
        (
            [whole("a", "h100", 0, 1), whole("b", "h100", 1, 2)],
            [
                "workloads[1].placement[0].gpus[0]: GPU 1 on node 'h100' is already used by "
                "workload 'a'"
            ],
        ),
        (
            [whole("w", "h100", 4)],
            [
                "workloads[0].placement[0].gpus[0]: GPU 4 on node 'h100' is MIG-partitioned; it "
                "has "
                "no whole GPU to give"
            ],
        ),
        (
            [whole("w", "h100", 0, flavor="A100-80GB")],
            [
                "workloads[0].placement[0].gpus[0]: GPU 0 on node 'h100' is a H100-80GB, not the "
                "workload's flavor A100-80GB"
            ],
        ),
        (
            [{**whole("w", "h100", 0), "demand": {"gpus": 2}}],
            ["workloads[0].placement[0].gpus: 1 GPUs for a pod that needs 2"],
        ),
        (
            [{**whole("w", "h100", 0), "demand": {"gpus": 1, "models": ["A100-80GB"]}}],
            [
                "workloads[0].flavor: 'H100-80GB' is not one of the demand's models (A100-80GB)",
            ],
        ),
        (
            [mig("a", 4, 2, "2g.20gb"), mig("b", 4, 2, "2g.20gb")],
            [
                "workloads[1].placement[0].mig_start: slice 2g.20gb@2 on GPU 4 on node 'h100' is "
                "already used by workload 'a'"
            ],
        ),
        (
            [mig("w", 4, 3)],
            [
                "workloads[0].placement[0].mig_start: 3 is not the start of a MIG slice on GPU 4 "
                "on "
                "node 'h100' (slices: 1g.10gb@0, 1g.10gb@1, 2g.20gb@2, 3g.40gb@4)"
            ],
        ),
        (
            [mig("w", 4, 2)],
            [
                "workloads[0].placement[0].mig_start: the slice at 2 on GPU 4 on node 'h100' is "
                "2g.20gb, not the workload's flavor mig-1g.10gb"
            ],
        ),
        (
            [mig("w", 0, 0)],
            [
                "workloads[0].placement[0].mig_start: 0 is on GPU 0 on node 'h100', which is not "
                "MIG-partitioned"
            ],
        ),
        (
            [{**mig("w", 4, 0), "flavor": "mig-2g.20gb"}],
            [
                "workloads[0].flavor: 'mig-2g.20gb' does not match the demand's MIG profile "
                "('mig-1g.10gb')",
                "workloads[0].placement[0].mig_start: the slice at 0 on GPU 4 on node 'h100' is "
                "1g.10gb, not the workload's flavor mig-2g.20gb",
            ],
        ),
        (
            [{**whole("w", "h100", 4), "flavor": "mig-1g.10gb"}],
            [
                "workloads[0].flavor: 'mig-1g.10gb' is a MIG flavor, but the demand is not for a "
                "MIG profile or GPU memory",
                "workloads[0].placement[0].gpus[0]: GPU 4 on node 'h100' is MIG-partitioned; it "
                "has "
                "no whole GPU to give",
            ],
        ),
        (
            [{**mig("w", 4, 0), "demand": {"gpus": 1}, "flavor": "H100-80GB"}],
            [
                "workloads[0].placement[0]: a MIG-slice placement, but the demand needs a "
                "whole-GPU "
                "one"
            ],
        ),
        (
            [fraction("a", 600), fraction("b", 300), fraction("c", 200)],
            [
                "workloads[2].placement[0].milli: 200 takes GPU 0 on node 't4' to 1100 milli-GPU, "
                "more than 1000"
            ],
        ),
        (
            [{**fraction("w", 500, node="h100"), "flavor": "H100-80GB"}],
            [
                "workloads[0].placement[0].milli: 500 is on GPU 0 on node 'h100', which is not "
                "shared (time-sliced)"
            ],
        ),
        (
            [whole("a", "t4", 0, flavor="T4"), fraction("b", 100)],
            [
                "workloads[1].placement[0].milli: GPU 0 on node 't4' is already used whole by "
                "workload 'a'"
            ],
        ),
        (
            [fraction("a", 100), whole("b", "t4", 0, flavor="T4")],
            [
                "workloads[1].placement[0].gpus[0]: GPU 0 on node 't4' is already used by "
                "workload 'a'"
            ],
        ),
        (
            [{**fraction("w", 100), "placement": [{"node": "t4", "gpus": [0], "milli": 0}]}],
            ["workloads[0].placement[0].milli: 0 is not greater than or equal to 1"],
        ),
        (
            [
                {
                    **fraction("w", 100),
                    "placement": [{"node": "t4", "gpus": [0], "milli": 100, "mig_start": 0}],
                }
            ],
            ["workloads[0].placement[0]: a pod sits on a MIG slice or on a GPU share, not both"],
        ),
    ],
)
def test_running_workload_problems(workloads: list[dict[str, Any]], expected: list[str]) -> None:
    assert problems_of(cluster(workloads=workloads)) == expected


def test_consistent_running_workloads_pass() -> None:
    memory_on_mig = job(
        "nb",
        {"gpu_memory_mib": 9000},
        flavor="mig-3g.40gb",
        placement=[{"node": "h100", "gpus": [4], "mig_start": 4}],
    )
    memory_whole = job(
        "nb2", {"gpu_memory_mib": 30000}, flavor="H100", placement=[{"node": "h100", "gpus": [3]}]
    )
    gang = {
        **whole("g", "h100", 0),
        "pods": 2,
        "placement": [{"node": "h100", "gpus": [0]}, {"node": "h100", "gpus": [1]}],
    }
    workloads = [
        gang,
        mig("m", 4, 0),
        mig("m2", 4, 1),
        fraction("f1", 600),
        fraction("f2", 400),
        memory_on_mig,
        memory_whole,
    ]
    snapshot = snapshot_from_data(cluster(workloads=workloads))
    assert [w.running for w in snapshot.workloads] == [True] * 7


# --- SnapshotError and validate_snapshot ---------------------------------------------------


def test_snapshot_error_lists_every_problem_one_per_line() -> None:
    error = SnapshotError(["a: is bad", "b[1]: is worse"], "x.yaml")
    assert isinstance(error, ValueError)
    assert str(error) == "a: is bad\nb[1]: is worse"
    copy_ = pickle.loads(pickle.dumps(error))
    assert (copy_.problems, copy_.source, str(copy_)) == (error.problems, "x.yaml", str(error))


def test_validate_snapshot_on_a_snapshot_built_in_code() -> None:
    good = Snapshot(
        nodes=(Node(name="n", gpus=(Gpu(index=0, model="L4"),)),),
        queues=(Queue(name="q", quota={"L4": Quota(nominal=1)}),),
    )
    assert validate_snapshot(good) == []
    bad = good.model_copy(update={"queues": (Queue(name="q", quota={"L5": Quota()}),)})
    assert validate_snapshot(bad) == [
        f"queues[0].quota.L5: 'L5' is not a known flavor (a GPU model: {KNOWN}; or mig-<profile>)"
    ]


# --- fixture files -------------------------------------------------------------------------


def test_small_cluster_fixture() -> None:
    snapshot = load_snapshot_text((FIXTURES / "small-cluster.yaml").read_text(), "small")
    assert [n.name for n in snapshot.nodes] == ["gpu-a", "t4-000", "t4-001"]
    assert sum(len(n.gpus) for n in snapshot.nodes) == 16
    assert [w.name for w in snapshot.workloads if w.running] == [
        "train-1",
        "notebook-1",
        "infer-1",
        "infer-2",
    ]
    assert [w.name for w in snapshot.workloads if not w.running] == ["train-2", "notebook-2"]
    assert validate_snapshot(snapshot) == []
    assert snapshot.catalog()["H100"].price_per_hour == 4.5


def test_broken_fixture_reports_every_problem() -> None:
    with pytest.raises(SnapshotError) as info:
        load_snapshot_text((FIXTURES / "broken.yaml").read_text(), "broken.yaml")
    assert info.value.source == "broken.yaml"
    assert info.value.problems == [
        f"prices.H900: 'H900' is not a known GPU model (known: {KNOWN})",
        "nodes[2].name: node name 'gpu-a' is already used by nodes[0]",
        "nodes[0].gpus[1].index: 0 is already used by nodes[0].gpus[0]",
        "nodes[0].gpus[2].mig[1].start: 3 is not a valid start for 2g.20gb on A100-80GB "
        "(valid: 0, 2, 4)",
        "nodes[0].gpus[2].mig[2]: 4g.40gb@0 overlaps nodes[0].gpus[2].mig[0] (3g.40gb@0) in "
        "memory slices",
        f"nodes[1].gpus[0].model: 'H900' is not a known GPU model (known: {KNOWN})",
        "nodes[1].gpus[1].mig: T4 does not support MIG (MIG-capable: A30, A100-40GB, "
        "A100-80GB, H100-80GB, H100-NVL, H200, B200)",
        "queues[0].quota[\"mig-9g.90gb\"]: 'mig-9g.90gb' is not a known flavor: no GPU model "
        "has MIG profile '9g.90gb'; did you mean '4g.90gb'?",
        f"queues[1].quota.V100: 'V100' is not a known flavor (a GPU model: {KNOWN}; "
        "or mig-<profile>)",
        "queues[1].quota.A100-80GB.borrowing_limit: 2 needs a cohort, and queue 'team-b' has none",
        "workloads[2].name: 'w1' is already used by workloads[0]",
        "workloads[0].queue: 'team-z' is not a queue (queues: team-a, team-b)",
        f"workloads[0].demand.models[1]: 'H900' is not a known GPU model (known: {KNOWN})",
        "workloads[1].priority: 1000 is above the max_priority 100 of queue 'team-b'",
        "workloads[1].demand.mig_profile: '1g.7gb' is not a MIG profile of any known GPU "
        "model; did you mean '1g.6gb'?",
        "workloads[3].placement[0].gpus[0]: GPU 0 on node 'gpu-a' is already used by workload 'w1'",
        "workloads[4].flavor: is required on a running workload (placement is set)",
        "workloads[4].placement[0].node: 'gpu-c' is not a node",
    ]


def test_what_pods_outside_the_workloads_hold_is_not_a_running_workloads() -> None:
    data = cluster(workloads=[whole("w", "h100", 1), mig("m", 4, 4, "3g.40gb"), fraction("f", 300)])
    data["nodes"][0]["gpus"][1]["held"] = True
    data["nodes"][0]["gpus"][4]["mig"][3]["held"] = True
    data["nodes"][0]["gpus"].append(
        {"index": 5, "model": "H100-80GB", "mig": copy.deepcopy(BALANCED), "held": True}
    )
    data["nodes"][1]["gpus"][0]["held"] = True
    assert problems_of(data) == [
        "nodes[0].gpus[5].held: true conflicts with mig: a pod holds a MIG GPU's slices, so "
        "mark the slices it holds (mig[i].held)",
        "workloads[0].placement[0].gpus[0]: GPU 1 on node 'h100' is held by a pod outside the "
        "workloads",
        "workloads[1].placement[0].mig_start: slice 3g.40gb@4 on GPU 4 on node 'h100' is held "
        "by a pod outside the workloads",
        "workloads[2].placement[0].milli: GPU 0 on node 't4' is held whole by a pod outside "
        "the workloads",
    ]
