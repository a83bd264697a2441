"""The layering contract (design.md §1, style.md "What that means here" 1), read from source.

- ``scheduler`` is the pure decision core: it never imports the I/O frameworks (aiohttp,
  kubernetes, prometheus_api_client) nor the drivers (``webhook``, ``sim``).
- Only ``scheduler/allocator.py`` talks to PuLP.
- ``webhook`` and ``sim`` both import ``scheduler``, never each other.
- ``scheduler`` does no I/O, reads no clock and draws no hidden randomness, except the
  command-line shell (``cli.py``, ``commands.py``, and ``textfile.py``, which reads the
  users' files for every command); its own data it reads through ``importlib.resources``;
  ``defaults.py`` may use ``random`` because it builds demo data from a seed it is given.

The checks parse every module with ``ast`` instead of importing it, so a module that does
not import cleanly is still checked, and an import inside a function or under
``TYPE_CHECKING`` counts like any other. Relative imports are resolved, and
``importlib.import_module("x")`` / ``__import__("x")`` with a literal name count as imports.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("scheduler", "webhook", "sim")

IO_FRAMEWORKS = ("aiohttp", "kubernetes", "prometheus_api_client")
DRIVERS = ("webhook", "sim")
PULP_MODULE = "scheduler/allocator.py"
SHELL_MODULES = frozenset(
    {"scheduler/cli.py", "scheduler/commands.py", "scheduler/__main__.py", "scheduler/textfile.py"}
)
SEEDED_RANDOM_MODULES = frozenset({"scheduler/defaults.py"})
# The allocator's solver budget is wall-clock time by nature; it may import ``time`` for a
# default clock (callers can inject another). No other core module may.
BUDGET_CLOCK_MODULES = frozenset({"scheduler/allocator.py"})

IO_CALLS = frozenset({"open", "print", "input", "breakpoint"})
FILE_WRITES = frozenset({"write_text", "write_bytes"})
FILE_READS = frozenset({"read_text", "read_bytes"})
PACKAGE_DATA = "resources.files("
"""Reads of the package's own data (``importlib.resources.files(...)...read_text()``)."""
CLOCK_CALLS = frozenset({"now", "utcnow", "today"})
IO_MODULES = (
    "os",
    "sys",
    "subprocess",
    "socket",
    "time",
    "shutil",
    "tempfile",
    "urllib",
    "http",
    "requests",
    "httpx",
)
RANDOM_MODULES = ("random", "secrets")
# numpy.random names that only build or type an injected generator; the rest use the
# hidden global state (np.random.rand, np.random.seed, ...).
NUMPY_RANDOM_ALLOWED = frozenset({"Generator", "default_rng", "SeedSequence", "PCG64"})


@dataclass(frozen=True, slots=True)
class Import:
    file: str
    """Repo-relative path, e.g. ``scheduler/greedy.py``."""
    line: int
    module: str
    """Absolute dotted name, relative imports resolved."""
    text: str
    """The import as written, shortened, for messages."""

    def where(self) -> str:
        return f"{self.file} line {self.line}: `{self.text}`"


def within(module: str, *roots: str) -> bool:
    """True when ``module`` is one of ``roots`` or a submodule of one."""
    return any(module == r or module.startswith(r + ".") for r in roots)


def _package_of(rel_path: str) -> list[str]:
    parts = rel_path.removesuffix(".py").split("/")
    return parts[:-1]  # for pkg/__init__.py and pkg/mod.py alike, the package is pkg


def imports_of(rel_path: str, source: str) -> list[Import]:
    """Every import in a module, including dynamic ones with a literal module name."""
    tree = ast.parse(source, filename=rel_path)
    package = _package_of(rel_path)
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(rel_path, node.lineno, alias.name, f"import {alias.name}"))
        elif isinstance(node, ast.ImportFrom):
            names = ", ".join(a.name for a in node.names)
            written = f"from {'.' * node.level}{node.module or ''} import {names}"
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                if node.module:
                    found.append(
                        Import(rel_path, node.lineno, ".".join([*base, node.module]), written)
                    )
                else:  # from . import x: each x may be a submodule
                    for alias in node.names:
                        found.append(
                            Import(rel_path, node.lineno, ".".join([*base, alias.name]), written)
                        )
            elif node.module:
                found.append(Import(rel_path, node.lineno, node.module, written))
                # from numpy import random: the name may itself be a module
                for alias in node.names:
                    found.append(
                        Import(rel_path, node.lineno, f"{node.module}.{alias.name}", written)
                    )
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func):
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                written = f"{ast.unparse(node.func)}({arg.value!r})"
                found.append(Import(rel_path, node.lineno, arg.value, written))
    return found


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def _dotted(expr: ast.expr) -> str:
    """``a.b.c`` for a chain of names and attributes, else ''."""
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        inner = _dotted(expr.value)
        return f"{inner}.{expr.attr}" if inner else ""
    return ""


# --- the rules, as functions of one module's path and source ---------------------------


def layering_violations(rel_path: str, source: str) -> list[str]:
    package = rel_path.split("/", 1)[0]
    problems: list[str] = []
    for imp in imports_of(rel_path, source):
        if package == "scheduler" and within(imp.module, *IO_FRAMEWORKS):
            problems.append(f"{imp.where()}: scheduler is pure and never imports I/O frameworks")
        if package == "scheduler" and within(imp.module, *DRIVERS):
            problems.append(f"{imp.where()}: scheduler never imports its drivers (webhook, sim)")
        if within(imp.module, "pulp") and rel_path != PULP_MODULE:
            problems.append(f"{imp.where()}: only {PULP_MODULE} may import pulp")
        if package == "webhook" and within(imp.module, "sim"):
            problems.append(f"{imp.where()}: webhook must not import sim")
        if package == "sim" and within(imp.module, "webhook"):
            problems.append(f"{imp.where()}: sim must not import webhook")
    return list(dict.fromkeys(problems))  # `from os import environ` is two imports


def _hidden_random(module: str) -> bool:
    """A random module, or a numpy.random name other than an injectable generator's."""
    if within(module, *RANDOM_MODULES):
        return True
    return (
        within(module, "numpy.random")
        and module != "numpy.random"
        and module.rsplit(".", 1)[-1] not in NUMPY_RANDOM_ALLOWED
    )


def io_violations(rel_path: str, source: str) -> list[str]:
    """I/O, clock and hidden randomness in a core module (the caller picks which files)."""
    random_ok = rel_path in SEEDED_RANDOM_MODULES
    problems: list[str] = []
    for imp in imports_of(rel_path, source):
        if rel_path in BUDGET_CLOCK_MODULES and imp.module == "time":
            continue
        if within(imp.module, *IO_MODULES):
            problems.append(f"{imp.where()}: the decision core does no I/O and reads no clock")
        elif not random_ok and _hidden_random(imp.module):
            problems.append(f"{imp.where()}: randomness must be injected (a seeded generator)")
    for node in ast.walk(ast.parse(source, filename=rel_path)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        where = f"{rel_path} line {node.lineno}: `{ast.unparse(func)}(...)`"
        if isinstance(func, ast.Name) and func.id in IO_CALLS:
            problems.append(f"{where}: the decision core does no I/O")
        elif isinstance(func, ast.Attribute):
            owner = _dotted(func.value)
            if func.attr in FILE_WRITES:
                problems.append(f"{where}: the decision core writes no files")
            elif func.attr in FILE_READS and PACKAGE_DATA not in ast.unparse(func.value):
                problems.append(f"{where}: the decision core reads no files; the caller does")
            elif func.attr in CLOCK_CALLS and owner.rsplit(".", 1)[-1] in ("datetime", "date"):
                problems.append(f"{where}: the clock is a parameter (Snapshot.now), never read")
            elif (
                not random_ok
                and owner in ("np.random", "numpy.random")
                and func.attr not in NUMPY_RANDOM_ALLOWED
            ):
                problems.append(f"{where}: numpy's global random state; inject a Generator")
    return list(dict.fromkeys(problems))


# --- the scan ----------------------------------------------------------------------------


@cache
def sources() -> dict[str, str]:
    """Repo-relative path → source of every module in the three packages."""
    found: dict[str, str] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[path.relative_to(ROOT).as_posix()] = path.read_text(encoding="utf-8")
    return found


def _report(problems: Iterable[str]) -> str:
    listed = list(problems)
    return f"{len(listed)} layering problem(s):\n  " + "\n  ".join(listed)


def test_the_scan_finds_the_packages() -> None:
    found = sources()
    for known in ("scheduler/model.py", "scheduler/catalog.py", "sim/openb.py"):
        assert known in found, f"{known} not scanned; the layering tests would pass vacuously"
    assert sum(p.startswith("scheduler/") for p in found) >= 3
    assert all(imports_of(p, s) is not None for p, s in found.items())  # all parse


def test_layering() -> None:
    problems = [p for path, src in sources().items() for p in layering_violations(path, src)]
    assert not problems, _report(problems)


def test_scheduler_does_no_io() -> None:
    core = {p: s for p, s in sources().items() if p.startswith("scheduler/")}
    assert "scheduler/model.py" in core
    problems = [
        p
        for path, src in core.items()
        if path not in SHELL_MODULES
        for p in io_violations(path, src)
    ]
    assert not problems, _report(problems)


# --- the checkers themselves: each rule must catch what it claims to ---------------------


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        ("scheduler/x.py", "import aiohttp.web", "`import aiohttp.web`"),
        ("scheduler/x.py", "from kubernetes import client", "`from kubernetes import client`"),
        ("scheduler/x.py", "import prometheus_api_client", "I/O frameworks"),
        ("scheduler/x.py", "from webhook.server import app", "drivers"),
        ("scheduler/x.py", "def f():\n    import sim.openb", "scheduler/x.py line 2"),
        ("scheduler/sub/x.py", "from ...sim import openb", "drivers"),
        ("scheduler/x.py", "import importlib\nimportlib.import_module('webhook')", "drivers"),
        ("scheduler/greedy.py", "import pulp", "only scheduler/allocator.py may import pulp"),
        ("sim/engine.py", "from pulp import LpProblem", "only scheduler/allocator.py"),
        ("webhook/app.py", "from sim import openb", "webhook must not import sim"),
        ("sim/run.py", "from webhook.app import build", "sim must not import webhook"),
    ],
)
def test_layering_rules_catch(path: str, source: str, expected: str) -> None:
    problems = layering_violations(path, source)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("scheduler/allocator.py", "import pulp"),
        ("scheduler/x.py", "from scheduler.model import Node\nfrom . import catalog"),
        ("scheduler/x.py", "import simplejson  # not sim"),
        ("webhook/app.py", "import aiohttp\nimport kubernetes\nfrom scheduler import model"),
        ("sim/run.py", "from scheduler.model import Snapshot"),
    ],
)
def test_layering_rules_allow(path: str, source: str) -> None:
    assert layering_violations(path, source) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("open('f')", "`open(...)`"),
        ("print(x)", "`print(...)`"),
        ("input()", "`input(...)`"),
        ("import os", "`import os`"),
        ("from os import environ", "`from os import environ`"),
        ("import sys", "`import sys`"),
        ("import subprocess", "`import subprocess`"),
        ("import socket", "`import socket`"),
        ("from time import monotonic", "`from time import monotonic`"),
        ("import random", "randomness must be injected"),
        ("from datetime import datetime\nt = datetime.now()", "`datetime.now(...)`"),
        ("import datetime\nt = datetime.datetime.utcnow()", "Snapshot.now"),
        ("from datetime import date\nd = date.today()", "`date.today(...)`"),
        ("import numpy as np\nnp.random.shuffle(x)", "inject a Generator"),
        ("from numpy.random import randint", "randomness must be injected"),
        ("p.write_text('x')", "writes no files"),
        ("text = path.read_text(encoding='utf-8')", "reads no files"),
        ("data = Path(name).read_bytes()", "reads no files"),
    ],
)
def test_io_rules_catch(source: str, expected: str) -> None:
    problems = io_violations("scheduler/x.py", source)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("scheduler/x.py", "from datetime import datetime\nd = datetime.fromtimestamp(0)"),
        ("scheduler/x.py", "import numpy as np\nrng = np.random.default_rng(seed)"),
        ("scheduler/x.py", "from numpy.random import Generator"),
        ("scheduler/x.py", "from importlib import resources\nresources.files('scheduler')"),
        (
            "scheduler/x.py",
            "from importlib import resources\nresources.files('s').joinpath('d').read_text()",
        ),
        ("scheduler/x.py", "log.print_summary()\nself.open_slots()"),
        ("scheduler/defaults.py", "import random\nrng = random.Random(seed)"),
    ],
)
def test_io_rules_allow(path: str, source: str) -> None:
    assert io_violations(path, source) == []
