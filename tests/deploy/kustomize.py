"""Kustomize-style assembly in Python, for the subset deploy/k8s uses: `resources` (files and
folders with their own kustomization.yaml), `images` (newName, newTag, digest) and `patches`
holding RFC 6902 JSON patches aimed at one resource. Anything else is refused, so a
kustomization that grows past this subset fails the tests instead of being half-read.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]
KUSTOMIZATION = "kustomization.yaml"
SUPPORTED_KEYS = {"apiVersion", "kind", "resources", "images", "patches"}


def build(directory: Path) -> list[Manifest]:
    """The manifests `kubectl kustomize directory` would print (order aside)."""
    spec = yaml.safe_load((directory / KUSTOMIZATION).read_text(encoding="utf-8"))
    unsupported = set(spec) - SUPPORTED_KEYS
    if unsupported:
        raise ValueError(f"{directory / KUSTOMIZATION}: unsupported keys {sorted(unsupported)}")
    manifests: list[Manifest] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            manifests += build(path)
        else:
            documents = yaml.safe_load_all(path.read_text(encoding="utf-8"))
            manifests += [document for document in documents if document]
    for patch in spec.get("patches", []):
        operations = yaml.safe_load((directory / patch["path"]).read_text(encoding="utf-8"))
        targets = [m for m in manifests if _matches(m, patch["target"])]
        if len(targets) != 1:
            raise ValueError(f"patch {patch['path']} matches {len(targets)} resources, not 1")
        for operation in operations:
            _apply(targets[0], operation)
    for image in spec.get("images", []):
        for container in _containers(manifests):
            name, _, _ = container["image"].partition(":")
            if name == image["name"]:
                new_name = image.get("newName", name)
                if "digest" in image:
                    container["image"] = f"{new_name}@{image['digest']}"
                else:
                    tag = image.get("newTag", container["image"].partition(":")[2] or "latest")
                    container["image"] = f"{new_name}:{tag}"
    return manifests


def _matches(manifest: Manifest, target: dict[str, str]) -> bool:
    group, _, version = manifest["apiVersion"].rpartition("/")
    wanted = {
        "group": group,
        "version": version,
        "kind": manifest["kind"],
        "name": manifest["metadata"]["name"],
    }
    return all(wanted[key] == value for key, value in target.items())


def _containers(manifests: list[Manifest]) -> list[dict[str, Any]]:
    found = []
    for manifest in manifests:
        pod = manifest.get("spec", {}).get("template", {}).get("spec", {})
        found += pod.get("containers", []) + pod.get("initContainers", [])
    return found


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ValueError(f"JSON pointer must start with '/': {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _apply(document: Manifest, operation: dict[str, Any]) -> None:
    """One RFC 6902 operation (add, replace, remove), in place."""
    *parents, last = _pointer(operation["path"])
    node: Any = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    op = operation["op"]
    if isinstance(node, list):
        index = len(node) if last == "-" else int(last)
        if op == "add":
            node.insert(index, copy.deepcopy(operation["value"]))
        elif op == "replace":
            node[index] = copy.deepcopy(operation["value"])
        elif op == "remove":
            del node[index]
        else:
            raise ValueError(f"unsupported op {op!r}")
        return
    if op in ("replace", "remove") and last not in node:
        raise KeyError(f"{operation['path']} does not exist ({op})")
    if op in ("add", "replace"):
        node[last] = copy.deepcopy(operation["value"])
    elif op == "remove":
        del node[last]
    else:
        raise ValueError(f"unsupported op {op!r}")
