"""The pod template: its revision name, its images, and the checks made on its containers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

from coalmine.api.errors import field_problem
from coalmine.api.limits import CONTAINER_NAME_MAX_LENGTH, IMAGE_MAX_LENGTH, MAX_CONTAINERS


def short_hash(value: object) -> str:
    canonical = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def revision_hash(template: Mapping[str, Any]) -> str:
    """The revision name of a pod template: 10 lowercase hex characters, DNS-label safe.

    It hashes the canonical JSON of the whole template (keys sorted, nothing left out), so the
    same template always names the same revision, across restarts and key order, and any change
    at all, even to a label, makes a new revision: revisions are immutable.
    """
    return short_hash(template)


def check_containers(containers: object, subpath: str) -> None:
    if not isinstance(containers, list):
        raise field_problem(subpath, "must be a list of containers")
    if len(containers) > MAX_CONTAINERS:
        raise field_problem(subpath, f"must have at most {MAX_CONTAINERS} items")
    for index, container in enumerate(containers):
        where = f"{subpath}[{index}]"
        if not isinstance(container, Mapping):
            raise field_problem(where, "must be an object")
        name = container.get("name")
        if not isinstance(name, str) or not name:
            raise field_problem(f"{where}.name", "Required value: every container needs a name")
        if len(name) > CONTAINER_NAME_MAX_LENGTH:
            raise field_problem(
                f"{where}.name", f"must be at most {CONTAINER_NAME_MAX_LENGTH} characters"
            )
        image = container.get("image")
        if not isinstance(image, str) or not image:
            raise field_problem(f"{where}.image", "Required value: every container needs an image")
        if len(image) > IMAGE_MAX_LENGTH:
            raise field_problem(f"{where}.image", f"must be at most {IMAGE_MAX_LENGTH} characters")


def images_of(template: Mapping[str, Any]) -> list[str]:
    """The container images of a pod template, init containers first, in template order."""
    return [image for _, image in image_fields(template)]


def image_fields(template: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    pod = template.get("spec")
    if not isinstance(pod, Mapping):
        return
    for key in ("initContainers", "containers"):
        containers = pod.get(key)
        if isinstance(containers, list):
            for index, container in enumerate(containers):
                if isinstance(container, Mapping) and isinstance(container.get("image"), str):
                    yield f".template.spec.{key}[{index}].image", container["image"]
