"""``apportion serve`` and ``apportion queue``: the webhook's entry points.

The only webhook module that reads flags and the environment; every setting becomes a
field of ``ServeSettings`` here and is passed down.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from scheduler.cli import CommandError
from scheduler.loading import SnapshotError
from scheduler.names import namespace_name, service_account_name
from scheduler.telemetry import TelemetrySettings
from scheduler.textfile import given_path
from webhook.dcgm import PrometheusSettings, telemetry_from_env
from webhook.queuefile import QueueFileError, load_queue_file
from webhook.settings import (
    MAX_API_CONCURRENCY,
    AdmissionSettings,
    ControllerSettings,
    ServerSettings,
    ServeSettings,
)

__all__ = ["queue_command", "serve_command"]

Subparsers = Any
T = TypeVar("T")

MODES = ("enforce", "shadow")
ON_ALLOCATOR_FAILURE = ("gate", "allow")
LOG_LEVELS = ("debug", "info", "warning", "error")

X509_V_ERR_HOSTNAME_MISMATCH = 62
X509_V_ERR_IP_ADDRESS_MISMATCH = 64
"""OpenSSL's verify codes for a certificate valid, but for other names than the URL's."""


def _env(name: str, default: str | None = None) -> str | None:
    """An environment setting; empty counts as unset (Deployments often template '')."""
    return os.environ.get(name) or default


def serve_command(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "serve",
        help="run the admission webhook (and the controller) over HTTPS",
        description=(
            "Serve /mutate and /validate (AdmissionReview v1) over TLS, with /healthz and "
            "/readyz; /metrics and /queues on the plain-HTTP probe port (on the HTTPS one "
            "when the probe port is 0). With a kubeconfig (or in a pod) it watches the "
            "cluster and runs the controller; with --cluster FILE, or with neither, it runs "
            "standalone on a file or the embedded default cluster. Every flag can be set by "
            "the environment variable shown."
        ),
    )
    add = parser.add_argument
    add(
        "--cert-file",
        type=given_path(),
        default=_env("APPORTION_CERT_FILE"),
        help="TLS certificate (PEM), reloaded when it changes [APPORTION_CERT_FILE]",
    )
    add(
        "--key-file",
        type=given_path(),
        default=_env("APPORTION_KEY_FILE"),
        help="TLS private key (PEM) [APPORTION_KEY_FILE]",
    )
    # The numbers have no default here: a string default is parsed as if its flag had been
    # given, so a bad APPORTION_PORT was refused as "argument --port", a flag the Deployment
    # never set. _settings reads their variables (_flag_or_env) and names them.
    add(
        "--port",
        type=_port,
        help="HTTPS port (default 8443) [APPORTION_PORT]",
    )
    add(
        "--probe-port",
        type=_probe_port,
        help="plain-HTTP port for /healthz /readyz /metrics, 0 = off (default 8080) "
        "[APPORTION_PROBE_PORT]",
    )
    add(
        "--host",
        default=_env("APPORTION_HOST", "0.0.0.0"),
        help="listen address (default 0.0.0.0) [APPORTION_HOST]",
    )
    add(
        "--cluster",
        type=given_path(),
        default=_env("APPORTION_CLUSTER"),
        help="standalone: cluster file (snapshot + namespaces); a KUBECONFIG in the "
        "environment is then not used [APPORTION_CLUSTER]",
    )
    # Read from KUBECONFIG in _settings, not here: only the flag conflicts with a cluster file.
    add(
        "--kubeconfig",
        type=given_path(),
        help="kubeconfig; in a pod the in-cluster config is used [KUBECONFIG]",
    )
    add(
        "--queues",
        type=given_path(),
        default=_env("APPORTION_QUEUES"),
        help="queues YAML (a list, or {queues: [...]}) when not from a cluster file "
        "[APPORTION_QUEUES]",
    )
    add(
        "--mode",
        choices=MODES,
        default=_env("APPORTION_MODE", "enforce"),
        help="shadow: only annotate what Apportion would do [APPORTION_MODE]",
    )
    add(
        "--on-allocator-failure",
        choices=ON_ALLOCATOR_FAILURE,
        default=_env("APPORTION_ON_ALLOCATOR_FAILURE", "gate"),
        help="when the allocator cannot answer (default gate) [APPORTION_ON_ALLOCATOR_FAILURE]",
    )
    add(
        "--all-namespaces",
        action="store_true",
        default=None,  # not given: the variable decides (_switch_env)
        help="standalone: manage every namespace but system ones [APPORTION_ALL_NAMESPACES]",
    )
    add(
        "--prometheus-url",
        default=_env("APPORTION_PROMETHEUS_URL"),
        help="Prometheus with dcgm-exporter series: GPU health and idleness in decisions "
        "(also APPORTION_PROMETHEUS_TOKEN_FILE, _CA_FILE, _TIMEOUT_S, _REFRESH_S, _RETRIES, "
        "_PARALLEL_QUERIES, _INFORMATIONAL_EVERY, _RECORDING_RULES; how to judge them: "
        "APPORTION_DCGM_FATAL_XIDS, _QUIET_PERIOD_S, _IDLE_THRESHOLD_PCT, _IDLE_WINDOW_S, "
        "_STALENESS_S, _SERIES_SELECTOR, _LABELS) [APPORTION_PROMETHEUS_URL]",
    )
    add(
        "--stuck-after-s",
        type=_seconds,
        help="replace an admitted pod the kube-scheduler cannot place after this many "
        "seconds, 0 = never (default 300) [APPORTION_STUCK_AFTER_S]",
    )
    add(
        "--api-timeout-s",
        type=_positive_seconds,
        help="give up an API call (patch, eviction, Event, Lease) that got no answer after "
        "this many seconds (default 5) [APPORTION_API_TIMEOUT_S]",
    )
    add(
        "--api-concurrency",
        type=_api_concurrency,
        help="how many workloads' API calls a controller cycle makes at once, 1 = one at a "
        "time (default 16) [APPORTION_API_CONCURRENCY]",
    )
    add(
        "--log-level",
        type=str.lower,
        choices=LOG_LEVELS,
        default=_env("APPORTION_LOG_LEVEL", "info"),
        help="debug, info, warning or error (default info) [APPORTION_LOG_LEVEL]",
    )
    parser.set_defaults(run=_run_serve)


def _check_choice(env: str, value: str, choices: tuple[str, ...]) -> None:
    """A flag's choices, checked on a value its variable gave: argparse checks those of a
    flag given, never of a default, so APPORTION_MODE=Shadow ran in enforce mode unsaid and
    APPORTION_LOG_LEVEL=verbose was a traceback."""
    if value not in choices:
        raise CommandError(f"{env}: {_env(env)!r} is not {' or '.join(choices)}")


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None


def _switch_env(name: str) -> bool:
    """An on/off variable read as the Prometheus ones are (true/1/yes/on, false/0/no/off):
    only "true" counted before, and "True" was off without a word."""
    value = (_env(name) or "false").strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise CommandError(f"{name}: {_env(name)!r} is not true or false")


def _flag_or_env(given: T | None, name: str, default: str, parse: Callable[[str], T]) -> T:
    """A flag's value, else its variable's parsed the same way, a bad one named by the
    variable (exit code 2). Parsed when ``serve`` runs, not when the parser is built, so a
    bad APPORTION_PORT is no traceback for every other command."""
    if given is not None:
        return given
    text = _env(name, default) or default
    try:
        return parse(text)
    except argparse.ArgumentTypeError as error:
        raise CommandError(f"{name}: {error}") from None


def _port(text: str) -> int:
    """A TCP port."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: a port is between 1 and 65535")
    return value


def _probe_port(text: str) -> int:
    """The probe port, or 0: no probe server."""
    return 0 if text.strip() == "0" else _port(text)


def _seconds(text: str) -> float:
    """A non-negative number of seconds (argparse turns the error into exit code 2)."""
    value = _number(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: must be 0 (off) or a positive number")
    return value


def _positive_seconds(text: str) -> float:
    """A timeout: 0 would give up every call at once."""
    value = _number(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive number of seconds")
    return value


def _api_concurrency(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_API_CONCURRENCY:
        raise argparse.ArgumentTypeError(
            f"{text!r}: must be between 1 and {MAX_API_CONCURRENCY} calls at once"
        )
    return value


def queue_command(sub: Subparsers) -> None:
    parser = sub.add_parser(
        "queue",
        help="list waiting workloads with position, reason and estimated wait",
        description=(
            "Ask a running `apportion serve` for its waiting workloads (/queues, on its "
            "plain-HTTP probe port: from outside the cluster, `kubectl -n apportion-system "
            "port-forward svc/apportion-webhook 8080`)."
        ),
    )
    parser.add_argument("queue", nargs="?", help="only this queue")
    parser.add_argument(
        "--url",
        default=_env("APPORTION_URL", "http://localhost:8080"),
        help="the server's probe port (default http://localhost:8080) [APPORTION_URL]",
    )
    parser.add_argument(
        "--ca-file",
        type=given_path(),
        help="CA that signed the server certificate (an https:// URL: a server without a "
        "probe port serves /queues on its HTTPS port)",
    )
    parser.add_argument(
        "--insecure", action="store_true", help="do not verify an https:// URL's certificate"
    )
    parser.add_argument("--json", action="store_true", help="print the JSON as served")
    parser.set_defaults(run=_run_queue)


def _settings(args: argparse.Namespace) -> ServeSettings:
    if args.cert_file is None or args.key_file is None:
        raise CommandError(
            "--cert-file and --key-file are required (the API server only calls webhooks "
            "over HTTPS); set APPORTION_CERT_FILE / APPORTION_KEY_FILE in a Deployment"
        )
    _check_choice("APPORTION_MODE", args.mode, MODES)
    _check_choice("APPORTION_ON_ALLOCATOR_FAILURE", args.on_allocator_failure, ON_ALLOCATOR_FAILURE)
    _check_choice("APPORTION_LOG_LEVEL", args.log_level, LOG_LEVELS)
    for flag, path in (("--cert-file", args.cert_file), ("--key-file", args.key_file)):
        if not path.is_file():
            raise CommandError(f"{flag}: {path} does not exist or is not a file")
    kubeconfig = _kubeconfig(args)
    if kubeconfig is not None:
        # KUBECONFIG may list several files, as kubectl reads it; one must exist.
        paths = [Path(p).expanduser() for p in str(kubeconfig).split(os.pathsep) if p]
        if not any(path.is_file() for path in paths):
            raise CommandError(f"--kubeconfig {kubeconfig}: does not exist or is not a file")
    trusted = set()
    namespace = _env("POD_NAMESPACE", "apportion-system") or "apportion-system"
    account = _env("APPORTION_SERVICE_ACCOUNT", "apportion") or "apportion"
    # A name no cluster has (a typo, 'apportion ' from a quoted value) trusted no one: the
    # validating webhook refused Apportion's own changes, and the Lease was never taken.
    for variable, name, why in (
        ("POD_NAMESPACE", namespace, namespace_name(namespace)),
        ("APPORTION_SERVICE_ACCOUNT", account, service_account_name(account)),
    ):
        if why is not None:
            raise CommandError(f"{variable}: {name!r} {why}")
    trusted.add(f"system:serviceaccount:{namespace}:{account}")
    try:
        controller = ControllerSettings(
            evict=args.mode != "shadow",
            lease_namespace=namespace,
            identity=_env("POD_NAME", f"apportion-{os.getpid()}") or "apportion",
            stuck_after_s=_flag_or_env(
                args.stuck_after_s, "APPORTION_STUCK_AFTER_S", "300", _seconds
            ),
            api_timeout_s=_flag_or_env(
                args.api_timeout_s, "APPORTION_API_TIMEOUT_S", "5", _positive_seconds
            ),
            api_concurrency=_flag_or_env(
                args.api_concurrency, "APPORTION_API_CONCURRENCY", "16", _api_concurrency
            ),
        )
    except ValueError as error:
        source = "--api-timeout-s" if args.api_timeout_s is not None else "APPORTION_API_TIMEOUT_S"
        raise CommandError(f"{source}: {error}") from None
    return ServeSettings(
        server=ServerSettings(
            cert_file=args.cert_file,
            key_file=args.key_file,
            host=args.host,
            port=_flag_or_env(args.port, "APPORTION_PORT", "8443", _port),
            probe_port=_flag_or_env(args.probe_port, "APPORTION_PROBE_PORT", "8080", _probe_port)
            or None,
        ),
        admission=AdmissionSettings(
            mode=args.mode,
            on_allocator_failure=args.on_allocator_failure,
            trusted_users=frozenset(trusted),
        ),
        controller=controller,
        cluster_file=args.cluster,
        queues_file=args.queues,
        kubeconfig=kubeconfig,
        all_namespaces=args.all_namespaces or _switch_env("APPORTION_ALL_NAMESPACES"),
        prometheus=_prometheus(args.prometheus_url),
        telemetry=_telemetry() if args.prometheus_url else None,
    )


def _kubeconfig(args: argparse.Namespace) -> Path | None:
    """The kubeconfig to watch a live cluster with; None with a cluster file (standalone).
    --kubeconfig and a cluster file together are refused, as one of them would be ignored;
    KUBECONFIG yields to a cluster file, as it is often only left set in a shell for kubectl
    (README: the standalone try-out with a kubeconfig in the environment)."""
    given: Path | None = args.kubeconfig
    if args.cluster is not None and given is not None:
        raise CommandError(
            "a cluster file (--cluster, APPORTION_CLUSTER) serves standalone and "
            "--kubeconfig a live cluster: give one of them"
        )
    if args.cluster is not None or given is not None:
        return given
    kubeconfig = _env("KUBECONFIG")
    return Path(kubeconfig) if kubeconfig else None


def _prometheus(url: str | None) -> PrometheusSettings | None:
    if not url:
        return None
    try:
        return replace(PrometheusSettings.from_env(), url=url)
    except ValueError as error:
        raise CommandError(f"Prometheus settings: {error}") from None


def _telemetry() -> TelemetrySettings:
    try:
        return telemetry_from_env()
    except ValueError as error:
        raise CommandError(f"GPU metrics settings: {error}") from None


def _run_serve(args: argparse.Namespace) -> int:
    from webhook.logs import configure_logging
    from webhook.runtime import KubeconfigError, run_server
    from webhook.server import CertificateError

    settings = _settings(args)
    configure_logging(args.log_level)
    try:
        queues = load_queue_file(settings.queues_file) if settings.queues_file else None
    except QueueFileError as error:
        raise CommandError(f"--queues: {error}") from None
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # uvloop is optional on platforms without it
        pass
    try:
        asyncio.run(run_server(settings, queues, stop_signals=(signal.SIGTERM, signal.SIGINT)))
    except SnapshotError as error:
        raise CommandError(str(error)) from None
    except KubeconfigError as error:
        raise CommandError(f"--kubeconfig {settings.kubeconfig}: {error}") from None
    except CertificateError as error:
        raise CommandError(str(error)) from None
    except QueueFileError as error:
        raise CommandError(f"--queues: {error}") from None
    except OSError as error:
        raise CommandError(f"cannot serve: {error}") from None
    return 0


def _run_queue(args: argparse.Namespace) -> int:
    if urllib.parse.urlsplit(args.url).scheme not in ("https", "http"):
        # Else urllib's "unknown url type: localhost" for --url localhost:8080.
        raise CommandError(
            f"--url {args.url!r}: not a server URL; give http://HOST:PORT "
            "(default http://localhost:8080; also APPORTION_URL)"
        )
    context = _client_context(args.ca_file)
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    query = "?" + urllib.parse.urlencode({"queue": args.queue}) if args.queue else ""
    url = args.url.rstrip("/") + "/queues" + query
    try:
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            data = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise CommandError(f"cannot read {url}: {error}{_queue_hint(error)}") from None
    if "unknown_queue" in data:
        raise CommandError(data["unknown_queue"])
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(_queue_table(data))
    return 0


def _client_context(ca_file: Path | None) -> ssl.SSLContext:
    """The TLS context ``apportion queue`` verifies the server with: the system's CAs, or
    the one ``--ca-file`` names (a file that is missing or holds no certificate is named)."""
    if ca_file is None:
        return ssl.create_default_context()
    if not ca_file.is_file():
        raise CommandError(f"--ca-file {ca_file}: does not exist or is not a file")
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (ssl.SSLError, ValueError):
        raise CommandError(
            f"--ca-file {ca_file}: no PEM certificate in it (expected the CA certificate "
            "that signed the server's, e.g. the ca.crt of its TLS Secret)"
        ) from None


def _queue_hint(error: Exception) -> str:
    """What to check after a failed ``/queues`` call, for the failures a user can fix."""
    if isinstance(error, urllib.error.HTTPError) and error.code == 404:
        # The HTTPS port answers (the API server's), not /queues: everyone may reach it.
        return (
            "; nothing serves /queues there: --url is `apportion serve`'s plain-HTTP probe "
            "port (8080 unless APPORTION_PROBE_PORT says otherwise; its HTTPS port only when "
            "that is 0), not the port the API server calls"
        )
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, ssl.SSLCertVerificationError) and reason.verify_code in (
        X509_V_ERR_HOSTNAME_MISMATCH,
        X509_V_ERR_IP_ADDRESS_MISMATCH,
    ):
        # Signed by the CA given, but for other names: not a matter of --ca-file.
        return (
            "; the server's certificate does not name the host in --url: call the server by "
            "a name its certificate holds (or --insecure to skip the check)"
        )
    if isinstance(reason, ssl.SSLCertVerificationError):
        return (
            "; the server's certificate is not signed by a CA this machine trusts: pass "
            "--ca-file with the CA that signed it (or --insecure to skip the check)"
        )
    if isinstance(reason, ConnectionRefusedError | TimeoutError | ssl.SSLError):
        return "; is `apportion serve` running there? (--url or APPORTION_URL)"
    return ""


def _duration(seconds: object) -> str:
    if not isinstance(seconds, int | float):
        return "unknown"
    minutes = int(seconds) // 60
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


def _queue_table(data: dict[str, Any]) -> str:
    lines = []
    for queue, items in sorted(data.get("queues", {}).items()):
        lines.append(f"{queue}: {len(items)} waiting")
        for item in items:
            lines.append(
                f"  {item['position']:>3}. {item['workload']:<40} pods {item['pods_present']}/"
                f"{item['pods']}  waiting {_duration(item['waiting_s'])}  "
                f"est. {_duration(item.get('estimated_wait_s'))}"
            )
            lines.append(f"       {item['reason']}: {item['message']}")
    plans = data.get("repartitions") or []
    if plans:
        lines.append("MIG repartition proposals (not applied):")
        lines.extend(f"  - {plan['message']}" for plan in plans)
    return "\n".join(lines) if lines else "no workloads are waiting"
