"""Queues from a mounted file: loading, clear errors, reload on change, keep the last good."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from webhook.cluster import LiveCluster
from webhook.queuefile import QueueFileError, load_queue_file, watch_queue_file

GOOD = """
queues:
  - name: team-a
    cohort: lab
    quota: {H100-80GB: {nominal: 8}}
"""


def test_a_list_or_a_mapping_loads(tmp_path: Path) -> None:
    path = tmp_path / "queues.yaml"
    path.write_text(GOOD)
    assert [q.name for q in load_queue_file(path)] == ["team-a"]
    path.write_text("- {name: a}\n- {name: b, weight: 2}\n")
    assert [(q.name, q.weight) for q in load_queue_file(path)] == [("a", 1.0), ("b", 2.0)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- {name: a, quota: {H100: {nominal: -1}}}\n", "queues[0].quota.H100.nominal: -1 is"),
        ("- {name: a, shade: blue}\n", "queues[0].shade: unknown field (Queue fields: name,"),
        ("queues: [\n", "line 2 column 1"),
        # Was "Extra inputs are not permitted", where a snapshot's queue says what it meant.
        ("- {name: a, quota: {H100: {nominl: 2}}}\n", "nominl: unknown field; did you mean 'n"),
        # Was no queues, without a word: a mistyped key was looked past.
        ("queue:\n  - {name: a}\n", "queue: unknown field; did you mean 'queues'?"),
        # Was both kept, the second replacing the first where queues are looked up by name.
        ("- {name: a}\n- {name: a, weight: 2}\n", "queues[1].name: 'a' is already used by"),
        ("just text\n", "'just text' is not a list of queues or a mapping"),
        # Were 90 and 8 (YAML 1.1's base 60 and octal), without a word.
        (
            "- {name: a, quota: {H100: {nominal: 1:30}}}\n",
            "line 1 column 37: [0].quota.H100.nominal: 1:30 is 90 in YAML 1.1 (base 60) but "
            "text in YAML 1.2",
        ),
        ("- {name: a, weight: 010}\n", "[0].weight: 010 is 8 in YAML 1.1 (octal) but 10"),
        # Were a weight of 1 and a nominal quota of 4, as a snapshot's queue refuses them.
        (
            "- {name: a, weight: on}\n",
            "queues[0].weight: true is a boolean, not a number (YAML reads yes, no, on and off",
        ),
        # Names Kubernetes refuses: a namespace no cluster has, a queue no pod's label names.
        ("- {name: a, namespaces: [Team-A]}\n", "queues[0].namespaces[0]: 'Team-A' is not a n"),
        ("- {name: team a}\n", "queues[0].name: 'team a' is not a queue name (pods name"),
        (
            "- {name: a, quota: {H100: {nominal: '4'}}}\n",
            "queues[0].quota.H100.nominal: '4' is text, not a number (write it without quotes)",
        ),
    ],
)
def test_bad_files_say_where(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "queues.yaml"
    path.write_text(text)
    with pytest.raises(QueueFileError) as error:
        load_queue_file(path)
    assert message in str(error.value)


def test_a_file_that_is_not_text_says_so(tmp_path: Path) -> None:
    path = tmp_path / "queues.yaml"
    path.write_bytes(GOOD.replace("team-a", "équipe-a").encode("latin-1"))
    with pytest.raises(QueueFileError) as error:
        load_queue_file(path)
    assert str(error.value) == f"cannot read {path}: not UTF-8 text (byte 0xe9 at offset 19)"


def test_changes_are_picked_up_and_bad_edits_ignored(tmp_path: Path) -> None:
    path = tmp_path / "queues.yaml"
    path.write_text(GOOD)
    cluster = LiveCluster(clock=time.time)
    cluster.replace_queues(load_queue_file(path))

    async def scenario() -> None:
        task = asyncio.create_task(watch_queue_file(path, cluster, 0.02))
        path.write_text(GOOD.replace("nominal: 8", "nominal: 16"))
        await asyncio.sleep(0.2)
        assert cluster.queues["team-a"].quota["H100-80GB"].nominal == 16
        path.write_text("queues: [{name: broken, weight: -1}]\n")
        await asyncio.sleep(0.2)
        assert list(cluster.queues) == ["team-a"]
        task.cancel()

    asyncio.run(scenario())


def _served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str, times: int = 1
) -> LiveCluster:
    """A live cluster given the queues of a file holding ``text``, ``times`` over, with the
    warnings logged meanwhile in ``caplog``."""
    path = tmp_path / "queues.yaml"
    path.write_text(text)
    cluster = LiveCluster(clock=time.time)
    with caplog.at_level("WARNING", logger="apportion.cluster"):
        for _ in range(times):
            cluster.replace_queues(load_queue_file(path))
    return cluster


def test_quota_keys_are_flavors_and_typos_are_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A quota named by an alias ("H100") was kept as written: metrics and Queue status
    # showed an "H100" series at 0/8 beside the real "H100-80GB" one; a typo said nothing.
    text = "- {name: a, quota: {H100: {nominal: 8}, mig-1g.10gb: {nominal: 7}, H10O: {nominal: 2}}}"
    cluster = _served(tmp_path, caplog, text + "\n")
    assert list(cluster.queues["a"].quota) == ["H100-80GB", "mig-1g.10gb", "H10O"]
    assert caplog.messages == [
        "queue a: quota 'H10O' names no GPU model or MIG profile this cluster knows"
    ]


def test_limits_that_cannot_take_effect_are_warned_once_and_the_queue_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Was silent: a snapshot refuses these, but a served queue took them without a word
    # (refusing it would drop a queue from a running cluster on an upgrade).
    cluster = _served(
        tmp_path,
        caplog,
        "- {name: a, quota: {H100: {nominal: 8, borrowing_limit: 4}}}\n"
        "- {name: b, cohort: lab, quota: {T4: {nominal: 2, lending_limit: 3}}}\n",
        times=2,  # the same again: no new warnings
    )
    assert sorted(cluster.queues) == ["a", "b"]
    assert caplog.messages == [
        "queue a: quota.H100.borrowing_limit: 4 needs a cohort, and queue 'a' has none; "
        "the limit has no effect",
        "queue b: quota.T4.lending_limit: 3 is more than the nominal quota 2; "
        "the limit has no effect",
    ]
