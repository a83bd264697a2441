"""Renders the kustomizations under deploy/ in Python, so the tests need no kubectl.

Only what deploy/ uses is implemented — resources (files and directories), strategic-merge
patches from files, ``images``, a ``configMapGenerator`` without name hashes, and
``components`` that set ``images`` — and anything else is an error rather than silently
ignored. A file that does not exist, or a
patch that matches no object, is a ``KustomizeError`` naming the kustomization and entry.
Where kubectl is installed, tests/test_deploy_manifests.py checks that ``kubectl kustomize``
renders the same objects.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

__all__ = ["KustomizeError", "is_component", "load_documents", "render", "strategic_merge"]

Obj = dict[str, Any]

_KNOWN_FIELDS = frozenset(
    {"apiVersion", "kind", "resources", "patches", "images", "configMapGenerator", "components"}
)
_COMPONENT_FIELDS = frozenset({"apiVersion", "kind", "images"})


class KustomizeError(Exception):
    """A kustomization that would not render: missing files, unmatched patches."""


def load_documents(path: Path) -> list[Obj]:
    """Every non-empty YAML document of a file."""
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def render(directory: Path) -> list[Obj]:
    """The objects ``kubectl kustomize directory`` would print (in no particular order)."""
    file = directory / "kustomization.yaml"
    if not file.is_file():
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    spec = yaml.safe_load(file.read_text(encoding="utf-8"))
    if spec.get("kind") == "Component":
        raise KustomizeError(f"{file}: a Component is rendered only within a kustomization")
    unknown = set(spec) - _KNOWN_FIELDS
    if unknown:
        raise KustomizeError(f"{file}: fields this renderer does not implement: {sorted(unknown)}")
    objects: list[Obj] = []
    for entry in spec.get("resources", []):
        target = directory / entry
        if target.is_dir():
            objects += render(target)
        elif target.is_file():
            objects += load_documents(target)
        else:
            raise KustomizeError(f"{file}: resources entry {entry!r} does not exist")
    for generator in spec.get("configMapGenerator", []):
        objects.append(_config_map(directory, file, generator))
    for entry in spec.get("components", []):
        _apply_component(directory / entry, file, entry, objects)
    for patch in spec.get("patches", []):
        _apply_patch(directory, file, patch, objects)
    for image in spec.get("images", []):
        _set_image(objects, image)
    return objects


def is_component(directory: Path) -> bool:
    """Whether ``directory`` holds a kustomize Component (applied by the kustomizations
    that list it, never rendered alone)."""
    file = directory / "kustomization.yaml"
    return (
        file.is_file()
        and yaml.safe_load(file.read_text(encoding="utf-8")).get("kind") == "Component"
    )


def _apply_component(directory: Path, file: Path, entry: str, objects: list[Obj]) -> None:
    """A Component's transformers on what the kustomization has gathered so far (kustomize
    applies components after the resources, before the kustomization's own patches)."""
    if not is_component(directory):
        raise KustomizeError(f"{file}: components entry {entry!r} is not a Component")
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(spec) - _COMPONENT_FIELDS
    if unknown:
        raise KustomizeError(
            f"{directory / 'kustomization.yaml'}: component fields this renderer does not "
            f"implement: {sorted(unknown)}"
        )
    for image in spec.get("images", []):
        _set_image(objects, image)


def _config_map(directory: Path, file: Path, generator: Obj) -> Obj:
    options = generator.get("options", {})
    if not options.get("disableNameSuffixHash"):
        raise KustomizeError(
            f"{file}: name-suffix hashes are not supported by this renderer "
            "(set disableNameSuffixHash, or use kubectl kustomize)"
        )
    data = {}
    for name in generator.get("files", []):
        source = directory / name
        if not source.is_file():
            raise KustomizeError(f"{file}: configMapGenerator file {name!r} does not exist")
        data[Path(name).name] = source.read_text(encoding="utf-8")
    metadata: Obj = {"name": generator["name"]}
    if "namespace" in generator:
        metadata["namespace"] = generator["namespace"]
    if options.get("labels"):
        metadata["labels"] = dict(options["labels"])
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def _apply_patch(directory: Path, file: Path, patch: Obj, objects: list[Obj]) -> None:
    if set(patch) != {"path"}:
        raise KustomizeError(f"{file}: only `patches: - path: FILE` is implemented: {patch}")
    source = directory / patch["path"]
    if not source.is_file():
        raise KustomizeError(f"{file}: patch {patch['path']!r} does not exist")
    for doc in load_documents(source):
        key = _identity(doc)
        matches = [i for i, obj in enumerate(objects) if _identity(obj) == key]
        if len(matches) != 1:
            raise KustomizeError(
                f"{file}: patch {patch['path']!r} ({key}) matches {len(matches)} objects, not one"
            )
        objects[matches[0]] = strategic_merge(objects[matches[0]], doc)


def _identity(obj: Obj) -> tuple[str, str, str, str]:
    group = obj.get("apiVersion", "").rpartition("/")[0]
    meta = obj.get("metadata", {})
    return (group, obj.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))


def strategic_merge(base: Any, patch: Any) -> Any:
    """Maps merge key by key; lists of named maps merge by name; other values are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = strategic_merge(base[key], value) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        patches = {item["name"]: item for item in patch}
        merged_list = [
            strategic_merge(item, patches[item["name"]]) if item["name"] in patches else item
            for item in base
        ]
        known = {item["name"] for item in base}
        return merged_list + [item for item in patch if item["name"] not in known]
    return copy.deepcopy(patch)


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and "name" in i for i in items)


def _set_image(objects: list[Obj], image: Obj) -> None:
    for obj in objects:
        for container in _containers(obj):
            name, _, tag = container.get("image", "").partition(":")
            if name != image["name"]:
                continue
            name = image.get("newName", name)
            tag = image.get("newTag", tag)
            container["image"] = f"{name}:{tag}" if tag else name


def _containers(obj: Obj) -> list[Obj]:
    spec = obj.get("spec", {})
    template = spec.get("template", spec.get("jobTemplate", {}).get("spec", {}).get("template"))
    pod = (template or {}).get("spec", {})
    return [*pod.get("initContainers", []), *pod.get("containers", [])]
