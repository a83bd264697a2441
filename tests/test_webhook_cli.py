"""``apportion serve`` and ``apportion queue`` as a user runs them: real processes, real TLS."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import jsonpatch
import pytest
import trustme
from ports import free_port, refused_port
from webhook_support import CLUSTER_FILE, review, vary

from scheduler.cli import CommandError
from webhook.settings import ControllerSettings, ServeSettings

APPORTION = [sys.executable, "-m", "scheduler"]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*APPORTION, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_serve_refuses_to_start_without_certificates() -> None:
    env = {"APPORTION_CERT_FILE": "", "APPORTION_KEY_FILE": ""}
    result = _run("serve", "--cluster", str(CLUSTER_FILE), env=env)
    assert result.returncode == 2
    assert "--cert-file and --key-file are required" in result.stderr
    assert "Traceback" not in result.stderr


def _serve_with_a_certificate(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``apportion serve`` with a fresh certificate for localhost in ``tmp_path``."""
    leaf = trustme.CA().issue_cert("localhost")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return _run("serve", "--cert-file", str(cert), "--key-file", str(key), *args, env=env)


def test_serve_names_the_bad_field_of_a_cluster_file(tmp_path: Path) -> None:
    bad = tmp_path / "cluster.yaml"
    bad.write_text("queues:\n  - name: a\n    quota: {H100: {nominal: -1}}\nnamespaces: [oops]\n")
    result = _serve_with_a_certificate(tmp_path, "--cluster", str(bad))
    assert result.returncode == 2
    # Every problem, each with its path, as a snapshot's: the namespaces were checked first
    # and alone, so the quota's problem went unsaid.
    assert "queues[0].quota.H100.nominal: -1 is negative" in result.stderr
    assert "namespaces: a list is not a mapping" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_names_a_listen_address_that_does_not_resolve(tmp_path: Path) -> None:
    # Was "cannot serve: [Errno -2] Name or service not known", naming nothing.
    result = _serve_with_a_certificate(
        tmp_path, "--cluster", str(CLUSTER_FILE), "--host", "no-such-host.invalid",
        "--port", str(free_port()), "--probe-port", "0",
    )  # fmt: skip
    assert result.returncode == 2
    assert "cannot serve: " in result.stderr
    assert "listen address 'no-such-host.invalid': " in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_cluster_file_and_a_kubeconfig_together(tmp_path: Path) -> None:
    """Was: the cluster file won and the kubeconfig given with it was silently not used. A
    KUBECONFIG left in the environment still yields to a cluster file (README)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("{}\n")
    said = (
        "apportion serve: a cluster file (--cluster, APPORTION_CLUSTER) serves standalone and "
        "--kubeconfig a live cluster: give one of them\n"
    )
    for args, env in (
        (["--cluster", str(CLUSTER_FILE), "--kubeconfig", str(kubeconfig)], {}),
        (["--kubeconfig", str(kubeconfig)], {"APPORTION_CLUSTER": str(CLUSTER_FILE)}),
    ):
        result = _serve_with_a_certificate(tmp_path, *args, env=env)
        assert (result.returncode, result.stderr) == (2, said), args


def test_serve_names_the_certificate_file_it_cannot_use(tmp_path: Path) -> None:
    """Was 'cannot serve: [SSL] PEM lib (_ssl.c:3926)': which file, and what is wrong?"""
    leaf, other = trustme.CA().issue_cert("localhost"), trustme.CA().issue_cert("localhost")
    cert, key, other_key = tmp_path / "tls.crt", tmp_path / "tls.key", tmp_path / "other.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    other.private_key_pem.write_to_path(str(other_key))
    for cert_file, key_file, message in (
        (key, key, f"--cert-file {key}: no PEM certificate in it"),
        (cert, cert, f"--key-file {cert}: no PEM private key in it (an encrypted key "
                     "cannot be used)"),
        (cert, other_key, f"--key-file {other_key} is not the private key of the "
                          f"certificate in --cert-file {cert}"),
    ):  # fmt: skip
        result = _run(
            "serve", "--cert-file", str(cert_file), "--key-file", str(key_file),
            "--cluster", str(CLUSTER_FILE), "--port", str(free_port()), "--probe-port", "0",
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines()[-1] == f"apportion serve: {message}"


def test_standalone_serve_refuses_a_queue_file_that_is_not_there(tmp_path: Path) -> None:
    """Standalone there are no Queue objects: a --queues path with a typo served with no
    queue at all ("queues reloaded from ...: 0 queues"), refusing every GPU pod."""
    missing = tmp_path / "queus.yaml"
    result = _serve_with_a_certificate(
        tmp_path, "--cluster", str(CLUSTER_FILE), "--queues", str(missing),
        "--port", str(free_port()), "--probe-port", "0",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"apportion serve: --queues: {missing}: no such file (standalone, the queues come "
        "only from it)"
    )


def test_serve_help_names_the_variable_of_every_flag_that_has_one() -> None:
    import re

    source = (Path(__file__).parents[1] / "webhook" / "commands.py").read_text()
    variables = set(re.findall(r'_env\("((?:APPORTION_|KUBECONFIG)[A-Z_]*)"', source))
    variables -= {"APPORTION_SERVICE_ACCOUNT", "APPORTION_URL"}  # not serve flags
    result = _run("serve", "--help")
    assert result.returncode == 0
    help_text = " ".join(result.stdout.split())
    assert variables and not {v for v in variables if f"[{v}]" not in help_text}


def test_serve_help_names_every_prometheus_and_dcgm_variable_it_reads() -> None:
    # Was: the help named four of the nine APPORTION_PROMETHEUS_* variables from_env reads.
    import re

    source = (Path(__file__).parents[1] / "webhook" / "dcgm.py").read_text()
    variables = set(re.findall(r'"APPORTION_(?:PROMETHEUS|DCGM)_([A-Z_]+)"', source)) - {"URL"}
    result = _run("serve", "--help")
    help_text = " ".join(result.stdout.split())
    assert len(variables) == 15
    assert {v for v in variables if f"_{v}" not in help_text} == set()


def test_serve_refuses_a_gpu_metrics_setting_it_cannot_use(tmp_path: Path) -> None:
    result = _run(
        "serve", *_certs(tmp_path), "--cluster", str(CLUSTER_FILE),
        "--prometheus-url", "http://127.0.0.1:9090", env={"APPORTION_DCGM_LABELS": "nod=node"},
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "apportion serve: GPU metrics settings: APPORTION_DCGM_LABELS: 'nod' is not one of "
        "node, gpu, uuid, gi_id, gi_profile, namespace, pod, container; did you mean 'node'?"
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        ("clusters: [\n", "kubeconfig"),
        ("{}\n", "kubeconfig"),
        # Was Python's "'utf-8' codec can't decode byte 0xb3 in position 0".
        (b"\xb3\x00", "not a usable kubeconfig: not UTF-8 text (byte 0xb3 at offset 0)"),
    ],
)
def test_serve_names_a_kubeconfig_it_cannot_use(
    tmp_path: Path, content: str | bytes | None, expected: str
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    if isinstance(content, bytes):
        kubeconfig.write_bytes(content)
    elif content is not None:
        kubeconfig.write_text(content)
    result = _serve_with_a_certificate(
        tmp_path, "--kubeconfig", str(kubeconfig), "--port", str(free_port()), "--probe-port", "0"
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"apportion serve: --kubeconfig {kubeconfig}: ")
    assert expected in result.stderr


def test_serve_says_which_cluster_a_kubeconfig_names(tmp_path: Path) -> None:
    # Was: nothing said it; with KUBECONFIG left set in the shell, the README's standalone
    # try-out ran the controller on that cluster, seen only in its errors.
    refused = free_port()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{refused}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    leaf = trustme.CA().issue_cert("localhost")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "tls.crt"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "APPORTION_CERT_FILE": str(tmp_path / "tls.crt"),
        "APPORTION_KEY_FILE": str(tmp_path / "tls.key"),
        "APPORTION_PORT": str(free_port()),
        "APPORTION_PROBE_PORT": "0",
    }
    env.pop("APPORTION_CLUSTER", None)
    process = subprocess.Popen(
        [*APPORTION, "serve"], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stderr is not None
        messages = []
        for line in process.stderr:
            messages.append(json.loads(line)["msg"])
            if messages[-1].startswith("serving https"):
                break
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
    said = f"cluster https://127.0.0.1:{refused} (kubeconfig {kubeconfig}): the controller runs"
    assert said in messages, messages


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[int, int, Path, subprocess.Popen[str]]]:
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "tls.crt"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "tls.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    port, probe = free_port(), free_port()
    env = {
        **os.environ,
        "APPORTION_CERT_FILE": str(tmp_path / "tls.crt"),
        "APPORTION_KEY_FILE": str(tmp_path / "tls.key"),
        "APPORTION_PORT": str(port),
        "APPORTION_PROBE_PORT": str(probe),
        "APPORTION_CLUSTER": str(CLUSTER_FILE),
        "APPORTION_HOST": "127.0.0.1",
    }
    process = subprocess.Popen(
        [*APPORTION, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{probe}/readyz", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(process.communicate()[1]) from None
            time.sleep(0.1)
    yield port, probe, tmp_path / "ca.crt", process
    if process.poll() is None:
        process.kill()
        process.communicate()


def test_queue_lists_what_waits_and_serve_stops_cleanly(
    served: tuple[int, int, Path, subprocess.Popen[str]],
) -> None:
    port, probe, ca_file, process = served
    context = ssl.create_default_context(cafile=str(ca_file))
    for index in range(3):  # the third 8-GPU pod exceeds the cohort's quota: it waits
        body = vary(review("create-pod-gpu-8.mutate-create"), name=f"big-{index}")
        request = urllib.request.Request(
            f"https://localhost:{port}/mutate",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            assert json.load(response)["response"]["allowed"] is True
    # Standalone mode learns of pods from the validating call, as a cluster would send it.
    body = vary(review("create-pod-gpu-8.mutate-create"), name="waiting")
    request = urllib.request.Request(
        f"https://localhost:{port}/mutate",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        patch = json.loads(base64.b64decode(json.load(response)["response"]["patch"]))
    body["request"]["object"] = jsonpatch.apply_patch(body["request"]["object"], patch)
    request = urllib.request.Request(
        f"https://localhost:{port}/validate",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, context=context, timeout=10).close()

    url = ["--url", f"http://127.0.0.1:{probe}"]
    result = _run("queue", "team-a", *url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "team-a: 1 waiting"
    assert "gpu-team-a/waiting" in lines[1] and "pods 1/1" in lines[1]
    # A queue with nothing waiting, and a name no queue has (it said "team-z: 0 waiting").
    result = _run("queue", "team-b", *url)
    assert (result.returncode, result.stdout) == (0, "team-b: 0 waiting\n"), result.stderr
    result = _run("queue", "team-z", *url)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert result.stderr == "apportion queue: no queue 'team-z' (queues: team-a, team-b)\n"
    # A name as given, spaces and '&' too (a traceback: "URL can't contain control characters").
    result = _run("queue", "team a&b", *url)
    assert result.stderr == "apportion queue: no queue 'team a&b' (queues: team-a, team-b)\n"
    result = _run("queue", *url, "--json")
    assert json.loads(result.stdout)["queues"]["team-a"][0]["workload"] == "gpu-team-a/waiting"
    # The HTTPS port, which every pod may reach, does not serve it (it did).
    https = ["--url", f"https://localhost:{port}"]
    result = _run("queue", *https, "--ca-file", str(ca_file))
    assert result.returncode == 2 and "HTTP Error 404" in result.stderr
    assert "nothing serves /queues there" in result.stderr
    # An unverifiable server is an error with a message, not a traceback.
    result = _run("queue", *https)
    assert result.returncode == 2 and "CERTIFICATE_VERIFY_FAILED" in result.stderr
    assert "pass --ca-file with the CA that signed it" in result.stderr

    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 0
    logs = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any(entry["msg"] == "stopping" for entry in logs)
    decided = [e for e in logs if e["logger"] == "apportion.server"]
    assert decided and all("uid" in e for e in decided)


def _serve_settings(argv: list[str], monkeypatch: pytest.MonkeyPatch, **env: str) -> ServeSettings:
    """``apportion serve``'s settings as parsed in-process (the parser reads the environment
    when it is built, as in the console script)."""
    import argparse

    from webhook.commands import _settings, serve_command

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser(prog="apportion")
    serve_command(parser.add_subparsers())
    return _settings(parser.parse_args(["serve", *argv]))


def _certs(tmp_path: Path) -> list[str]:
    """``--cert-file`` and ``--key-file`` arguments: the settings only check they exist."""
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).write_text("unused: the settings only check the files exist\n")
    return ["--cert-file", str(tmp_path / "tls.crt"), "--key-file", str(tmp_path / "tls.key")]


@pytest.mark.parametrize(
    ("flag", "env", "field", "default", "good", "bad"),
    [
        ("--stuck-after-s", "APPORTION_STUCK_AFTER_S", "stuck_after_s", 300,
         {"env": "0", "flag": "90"}, ("-5", "soon", "nan")),
        ("--api-timeout-s", "APPORTION_API_TIMEOUT_S", "api_timeout_s", 5,
         {"env": "2.5"}, ("0", "-1", "soon", "inf")),
        ("--api-concurrency", "APPORTION_API_CONCURRENCY", "api_concurrency", 16,
         {"env": "1", "flag": "64"}, ("0", "-3", "2.5", "many", "129")),
    ],
)  # fmt: skip
def test_a_controller_setting_comes_from_its_flag_or_the_environment(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    env: str,
    field: str,
    default: float,
    good: dict[str, str],
    bad: tuple[str, ...],
) -> None:
    certs = _certs(tmp_path)
    monkeypatch.delenv(env, raising=False)
    assert getattr(_serve_settings(certs, monkeypatch).controller, field) == default
    if "env" in good:
        parsed = _serve_settings(certs, monkeypatch, **{env: good["env"]})
        assert getattr(parsed.controller, field) == float(good["env"])
    if "flag" in good:
        parsed = _serve_settings([*certs, flag, good["flag"]], monkeypatch)
        assert getattr(parsed.controller, field) == float(good["flag"])
    for value in bad:
        for by_flag in (True, False):
            _assert_refused(certs, monkeypatch, capsys, flag, env, value, by_flag=by_flag)


@pytest.mark.parametrize(
    ("flag", "env", "field", "default", "off"),
    [("--port", "APPORTION_PORT", "port", 8443, None),
     ("--probe-port", "APPORTION_PROBE_PORT", "probe_port", 8080, "0")],
)  # fmt: skip
def test_a_port_comes_from_its_flag_or_the_environment_and_a_bad_one_is_named(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    env: str,
    field: str,
    default: int,
    off: str | None,
) -> None:
    # Was: int() of the variable while the parser was built, so APPORTION_PORT=84a3 was a
    # traceback for every command (even `apportion catalog`), and --port 99999 was
    # accepted and logged as "serving https on 0.0.0.0:99999".
    certs = _certs(tmp_path)
    monkeypatch.delenv(env, raising=False)
    assert getattr(_serve_settings(certs, monkeypatch).server, field) == default
    assert getattr(_serve_settings(certs, monkeypatch, **{env: "9443"}).server, field) == 9443
    assert getattr(_serve_settings([*certs, flag, "9444"], monkeypatch).server, field) == 9444
    if off is not None:
        assert getattr(_serve_settings([*certs, flag, off], monkeypatch).server, field) is None
    for value, by_flag in (("84a3", False), ("99999", True), ("-1", False), ("x", True)):
        _assert_refused(certs, monkeypatch, capsys, flag, env, value, by_flag=by_flag)


def _assert_refused(
    certs: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    flag: str,
    env: str,
    value: str,
    *,
    by_flag: bool,
) -> None:
    """A bad value is refused (exit code 2) naming where it came from: the flag given, or
    the variable (it was "argument --port: '84a3'" for APPORTION_PORT=84a3, and a
    Deployment that sets only the variable has no --port to look for)."""
    if by_flag:
        with pytest.raises(SystemExit) as exit_info:
            _serve_settings([*certs, flag, value], monkeypatch)
        assert exit_info.value.code == 2
        assert f"argument {flag}: {value!r}" in capsys.readouterr().err
        return
    with pytest.raises(CommandError) as refused:
        _serve_settings(certs, monkeypatch, **{env: value})
    assert str(refused.value).startswith(f"{env}: {value!r}"), refused.value
    assert flag not in str(refused.value)


def test_a_bad_port_variable_does_not_break_other_commands() -> None:
    result = _run("catalog", env={"APPORTION_PORT": "84a3", "APPORTION_PROBE_PORT": "x"})
    assert result.returncode == 0, result.stderr
    assert "H100-80GB" in result.stdout


def test_all_namespaces_reads_the_variable_as_the_other_switches_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the exact text "true" counted: APPORTION_ALL_NAMESPACES=True, 1 or yes was off
    # without a word (the Prometheus switches take all of them).
    certs = _certs(tmp_path)
    monkeypatch.delenv("APPORTION_ALL_NAMESPACES", raising=False)
    assert _serve_settings(certs, monkeypatch).all_namespaces is False
    assert _serve_settings([*certs, "--all-namespaces"], monkeypatch).all_namespaces is True
    for value, expected in (("True", True), ("1", True), ("yes", True), ("false", False)):
        settings = _serve_settings(certs, monkeypatch, APPORTION_ALL_NAMESPACES=value)
        assert settings.all_namespaces is expected, value
    with pytest.raises(CommandError, match="APPORTION_ALL_NAMESPACES: 'maybe' is not true or"):
        _serve_settings(certs, monkeypatch, APPORTION_ALL_NAMESPACES="maybe")


@pytest.mark.parametrize(
    ("env", "field", "good", "bad"),
    [("APPORTION_MODE", "mode", "shadow", "Shadow"),
     ("APPORTION_ON_ALLOCATOR_FAILURE", "on_allocator_failure", "allow", "alow")],
)  # fmt: skip
def test_a_choice_from_the_environment_is_checked_as_its_flag_is(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: str,
    field: str,
    good: str,
    bad: str,
) -> None:
    # Was: argparse checks the choices of a flag given, not of its default, so
    # APPORTION_MODE=Shadow in a Deployment ran Apportion in enforce mode without a word.
    certs = _certs(tmp_path)
    assert getattr(_serve_settings(certs, monkeypatch, **{env: good}).admission, field) == good
    with pytest.raises(CommandError, match=f"^{env}: '{bad}' is not "):
        _serve_settings(certs, monkeypatch, **{env: bad})


def test_a_log_level_is_named_when_it_is_none_of_the_levels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Was: a traceback (ValueError: Unknown level: 'VERBOSE') once the settings were read.
    result = _serve_with_a_certificate(tmp_path, "--log-level", "verbose")
    assert result.returncode == 2
    assert "argument --log-level: invalid choice: 'verbose'" in result.stderr
    assert "Traceback" not in result.stderr
    certs = _certs(tmp_path)
    _serve_settings([*certs, "--log-level", "DEBUG"], monkeypatch)  # any case, as before
    with pytest.raises(CommandError, match=r"^APPORTION_LOG_LEVEL: 'loud' is not debug or info"):
        _serve_settings(certs, monkeypatch, APPORTION_LOG_LEVEL="loud")


def test_the_namespace_and_service_account_are_names_a_cluster_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Were taken: the trusted user system:serviceaccount:apportion-system:apportion\x20 was
    # no one, so the validating webhook refused Apportion's own changes; a namespace no
    # cluster has was the Lease's, refused at every renewal.
    certs = _certs(tmp_path)
    settings = _serve_settings(certs, monkeypatch, POD_NAMESPACE="gpu-ops")
    assert settings.admission.trusted_users == {"system:serviceaccount:gpu-ops:apportion"}
    with pytest.raises(CommandError) as refused:
        _serve_settings(certs, monkeypatch, APPORTION_SERVICE_ACCOUNT="apportion ")
    assert str(refused.value).startswith(
        "APPORTION_SERVICE_ACCOUNT: 'apportion ' is not a service account name (a DNS-1123 "
        "subdomain:"
    )
    with pytest.raises(CommandError, match=r"^POD_NAMESPACE: 'Apportion' is not a namespace name"):
        _serve_settings(certs, monkeypatch, POD_NAMESPACE="Apportion")


def test_the_api_timeout_must_be_shorter_than_the_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The leader stops acting this long before its Lease (15 s) could be taken over.
    with pytest.raises(CommandError, match="--api-timeout-s: the API timeout"):
        _serve_settings([*_certs(tmp_path), "--api-timeout-s", "15"], monkeypatch)
    # Set by its variable, the variable is named (it named the flag nobody gave).
    monkeypatch.setenv("APPORTION_API_TIMEOUT_S", "20")
    with pytest.raises(CommandError, match=r"^APPORTION_API_TIMEOUT_S: the API timeout"):
        _serve_settings(_certs(tmp_path), monkeypatch)


@pytest.mark.parametrize("bad", [0, -1, 129, 2.5, "16", True])
def test_the_api_concurrency_is_a_whole_number_of_calls_up_to_the_limit(bad: object) -> None:
    # Built in code (tests, benchmarks), not from a flag: the settings say what is wrong.
    with pytest.raises(ValueError, match=r"the API concurrency \(.*\) must be"):
        ControllerSettings(api_concurrency=bad)  # type: ignore[arg-type]
    assert ControllerSettings(api_concurrency=128).api_concurrency == 128


def _queue(argv: list[str]) -> int:
    """``apportion queue`` run in-process, as the console script parses it."""
    import argparse

    from webhook.commands import _run_queue, queue_command

    parser = argparse.ArgumentParser(prog="apportion")
    queue_command(parser.add_subparsers())
    return _run_queue(parser.parse_args(["queue", *argv]))


def test_queue_names_a_ca_file_it_cannot_use(tmp_path: Path) -> None:
    # Was: a traceback (FileNotFoundError, ssl.SSLError) from building the TLS context.
    missing = tmp_path / "ca.crt"
    with pytest.raises(CommandError, match=f"--ca-file {missing}: does not exist or is not a"):
        _queue(["--ca-file", str(missing)])
    not_pem = tmp_path / "tls.key"
    not_pem.write_text("not a certificate\n")
    with pytest.raises(CommandError, match=f"--ca-file {not_pem}: no PEM certificate in it"):
        _queue(["--ca-file", str(not_pem)])


def test_queue_says_what_to_check_when_nothing_answers() -> None:
    with refused_port() as port, pytest.raises(CommandError) as raised:
        url = f"https://localhost:{port}"
        _queue(["--url", url])
    assert str(raised.value).startswith(f"cannot read {url}/queues: ")
    assert "is `apportion serve` running there? (--url or APPORTION_URL)" in str(raised.value)


def test_queue_says_when_the_certificate_names_another_host(tmp_path: Path) -> None:
    # Was: "not signed by a CA this machine trusts: pass --ca-file", with the CA passed.
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("apportion-webhook.apportion-system.svc").configure_cert(context)
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def handshake() -> None:
            connection, _ = listener.accept()
            with contextlib.suppress(ssl.SSLError, OSError):
                context.wrap_socket(connection, server_side=True)
            connection.close()

        server = threading.Thread(target=handshake, daemon=True)
        server.start()
        url = f"https://127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(CommandError) as raised:
            _queue(["--url", url, "--ca-file", str(tmp_path / "ca.crt")])
        server.join(timeout=10)
    assert "certificate is not valid for '127.0.0.1'" in str(raised.value)
    assert "does not name the host in --url" in str(raised.value)
    assert "--ca-file" not in str(raised.value)


def test_queue_says_when_the_url_serves_no_queues() -> None:
    # Was "HTTP Error 404: Not Found" alone, for --url https://localhost:8443 (the webhook's).
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    with http.server.HTTPServer(("127.0.0.1", 0), NotFound) as probes:
        threading.Thread(target=probes.handle_request, daemon=True).start()
        url = f"http://127.0.0.1:{probes.server_address[1]}"
        with pytest.raises(CommandError) as raised:
            _queue(["--url", url])
    assert str(raised.value) == (
        f"cannot read {url}/queues: HTTP Error 404: Not Found; nothing serves /queues there: "
        "--url is `apportion serve`'s plain-HTTP probe port (8080 unless APPORTION_PROBE_PORT "
        "says otherwise; its HTTPS port only when that is 0), not the port the API server calls"
    )


def test_queue_names_a_url_that_is_not_one() -> None:
    # Was: "cannot read localhost:8443/queues: <urlopen error unknown url type: localhost>".
    with pytest.raises(CommandError, match=r"^--url 'localhost:8443': not a server URL; give"):
        _queue(["--url", "localhost:8443"])


def test_queue_prints_the_repartitions_that_would_admit_waiting_pods() -> None:
    from webhook.commands import _queue_table

    message = (
        "node h0 GPU 3 is idle; repartition no MIG → 3g.40gb@4 admits ns/w (1 pod, 3/7 of a GPU)"
    )
    data = {
        "queues": {"team-a": []},
        "repartitions": [{"node": "h0", "gpu": 3, "admits": ["ns/w"], "message": message}],
    }
    assert _queue_table(data).splitlines()[-2:] == [
        "MIG repartition proposals (not applied):",
        f"  - {message}",
    ]


def _kubeconfig(tmp_path: Path, server: str) -> Path:
    """A kubeconfig naming ``server``, with a token."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return kubeconfig


def test_a_call_to_a_silent_api_server_gives_up_after_one_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Was: the client kept urllib3's default retries, so a GET (the Lease read) that got
    # no answer was tried four times, each with the whole timeout, and any call was
    # reconnected three times: answers could come long after the leader's deadline.
    import socket
    import time

    from urllib3.exceptions import HTTPError

    from webhook.runtime import _kube_api

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    kubeconfig = _kubeconfig(tmp_path, f"http://127.0.0.1:{silent.getsockname()[1]}")
    certs = _certs(tmp_path)
    argv = [*certs, "--kubeconfig", str(kubeconfig), "--api-timeout-s", "0.5"]
    settings = _serve_settings(argv, monkeypatch)
    api = _kube_api(settings)
    assert api is not None
    started = time.monotonic()
    with pytest.raises(HTTPError):
        api.read_lease("apportion-system", "apportion-controller")
    assert time.monotonic() - started < 1.5  # one attempt; with retries, four (2 s)
    silent.close()


def test_the_api_client_keeps_a_connection_for_each_thread_that_may_call_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client's default pool keeps 5 connections per CPU (10 on 2 cores): the
    # controller's workers beyond that would open and close a connection per call.
    from webhook.controller import OWN_CONNECTIONS
    from webhook.runtime import _kube_api

    kubeconfig = _kubeconfig(tmp_path, "http://127.0.0.1:9")
    argv = [*_certs(tmp_path), "--kubeconfig", str(kubeconfig), "--api-concurrency", "40"]
    api = _kube_api(_serve_settings(argv, monkeypatch))
    assert api is not None
    pools = api.api_client.rest_client.pool_manager
    assert pools.connection_pool_kw["maxsize"] == 40 + OWN_CONNECTIONS
