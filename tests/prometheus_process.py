"""A real Prometheus server for tests and benchmarks: Debian's ``prometheus`` binary on a free
loopback port, a short scrape interval and a temporary storage directory.

``require_prometheus()`` finds the binary; without it a test is skipped with a clear message,
unless ``CI`` is set, where it fails (``.ci/run`` installs the package).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import pytest
from ports import free_port

__all__ = ["PrometheusProcess", "require_prometheus"]


def require_prometheus() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        message = (
            "the prometheus binary is not on PATH (Debian/Ubuntu: apt-get install prometheus); "
            "the real-Prometheus tests need it"
        )
        if os.environ.get("CI"):
            pytest.fail(message + " — CI is set, so this is a failure, not a skip")
        pytest.skip(message)
    return binary


class PrometheusProcess:
    """``prometheus`` scraping ``targets`` every ``scrape_interval``; stop() when done."""

    def __init__(
        self,
        binary: str,
        targets: list[str],
        workdir: Path,
        scrape_interval: str = "1s",
        scrape_timeout: str | None = None,
        recording_rules: Sequence[tuple[str, str]] = (),
        rule_interval: str | None = None,
    ) -> None:
        """``recording_rules``: (record, expr) pairs, evaluated every ``rule_interval``
        (default: the scrape interval)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        target_list = ", ".join(f"'{t}'" for t in targets)
        rule_files = ""
        if recording_rules:
            rules = workdir / "rules.yml"
            rules.write_text(
                json.dumps(
                    {
                        "groups": [
                            {
                                "name": "recorded",
                                "interval": rule_interval or scrape_interval,
                                "rules": [{"record": r, "expr": e} for r, e in recording_rules],
                            }
                        ]
                    }
                )
            )
            rule_files = f"rule_files: ['{rules}']\n"
        config.write_text(
            "global:\n"
            f"  scrape_interval: {scrape_interval}\n"
            f"  evaluation_interval: {scrape_interval}\n"
            f"{rule_files}"
            "scrape_configs:\n"
            "  - job_name: dcgm\n"
            f"    scrape_timeout: {scrape_timeout or scrape_interval}\n"
            f"    static_configs: [{{targets: [{target_list}]}}]\n"
        )
        self.log = workdir / "prometheus.log"
        self._log = self.log.open("wb")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready(30.0)

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with {self.process.returncode}: "
                    f"{self.log.read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {timeout_s:g} s: {self.log.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
