"""The pod template: its revision name, its images, and the checks made on its containers."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic_core import PydanticCustomError

from coalmine.api.errors import Problem, field_problem
from coalmine.api.limits import (
    CONTAINER_NAME_MAX_LENGTH,
    DNS1123_SUBDOMAIN_PATTERN,
    IMAGE_DIGEST_PATTERN,
    IMAGE_MAX_LENGTH,
    LABEL_MAX_LENGTH,
    MAX_CONTAINERS,
    MAX_PORT,
    NAME_MAX_LENGTH,
    QUALIFIED_NAME_PATTERN,
    TEMPLATE_MAX_BYTES,
)


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


def check_template(template: Mapping[str, Any], *, require_digest: bool = False) -> None:
    """What a pod template must be to make a revision's Deployment (paths relative to it).

    Raises the first problem with `field_problem`: a spec's template fails validation naming
    ``spec.template<path>``; see `template_problem` for templates from elsewhere.
    """
    check_metadata(template.get("metadata"), ".metadata")
    check_size(template, "")
    pod = template.get("spec")
    if pod is None:
        raise field_problem(".spec", "Required value: the pod template needs a spec")
    if not isinstance(pod, Mapping):
        raise field_problem(".spec", "must be an object")
    containers = pod.get("containers")
    if not containers:
        raise field_problem(
            ".spec.containers", "Required value: the pod needs at least one container"
        )
    check_containers(containers, ".spec.containers")
    if pod.get("initContainers") is not None:
        check_containers(pod["initContainers"], ".spec.initContainers")
    if require_digest:
        check_digests(template)


def check_digests(template: Mapping[str, Any], prefix: str = "") -> None:
    """imagePolicy RequireDigest: every image pinned by digest (paths are ``prefix`` and the
    field's, relative to the template)."""
    for where, image in image_fields(template):
        if not re.search(IMAGE_DIGEST_PATTERN, image):
            raise field_problem(
                f"{prefix}{where}",
                "imagePolicy RequireDigest: the image must end in @sha256:<digest>",
            )


def template_problem(template: object, *, require_digest: bool = False) -> Problem | None:
    """The first reason a pod template cannot make a revision, its field relative to the
    template (`.spec.containers[0].image`); None when it can. For a template that does not come
    from the spec (an adopted Deployment's), which no validator has looked at."""
    if not isinstance(template, Mapping):
        return Problem("", "must be an object")
    try:
        check_template(template, require_digest=require_digest)
    except PydanticCustomError as error:
        return Problem(str((error.context or {}).get("subpath", "")), error.message())
    return None


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
        _check_ports(container.get("ports"), f"{where}.ports")


def _check_ports(ports: object, subpath: str) -> None:
    # The Deployment would be refused for these; said here, the error names the field.
    if ports is None:
        return
    if not isinstance(ports, list):
        raise field_problem(subpath, "must be a list of ports")
    for index, port in enumerate(ports):
        number = port.get("containerPort") if isinstance(port, Mapping) else None
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_PORT:
            raise field_problem(
                f"{subpath}[{index}].containerPort",
                f"must be a port number (1-{MAX_PORT}), not {number!r}; a port's name goes in "
                "its name field",
            )


def check_metadata(metadata: object, subpath: str) -> None:
    """The template's labels and annotations: maps of strings, the labels valid label values."""
    if metadata is None:
        return
    if not isinstance(metadata, Mapping):
        raise field_problem(subpath, "must be an object")
    for key in ("labels", "annotations"):
        entries = metadata.get(key)
        if entries is None:
            continue
        where = f"{subpath}.{key}"
        if not isinstance(entries, Mapping):
            raise field_problem(where, "must be a map of strings to strings")
        for name, value in entries.items():
            if not isinstance(value, str):
                raise field_problem(f"{where}[{name}]", "must be a string")
            if key == "labels":
                _check_label(str(name), value, f"{where}[{name}]")


def _check_label(name: str, value: str, where: str) -> None:
    prefix, _, short = name.rpartition("/")
    if not re.fullmatch(QUALIFIED_NAME_PATTERN, short) or len(short) > LABEL_MAX_LENGTH:
        raise field_problem(where, "a label key is at most 63 letters, digits, '-', '_', '.'")
    if prefix and (
        len(prefix) > NAME_MAX_LENGTH or not re.fullmatch(DNS1123_SUBDOMAIN_PATTERN, prefix)
    ):
        raise field_problem(where, "a label key's prefix must be a DNS subdomain")
    if value and (len(value) > LABEL_MAX_LENGTH or not re.fullmatch(QUALIFIED_NAME_PATTERN, value)):
        raise field_problem(
            where,
            f"{value!r} is not a valid label value (at most 63 letters, digits, '-', '_' and "
            "'.', starting and ending with a letter or digit)",
        )


def check_size(template: Mapping[str, Any], subpath: str) -> None:
    """A revision's Deployment keeps its template in an annotation: it must fit."""
    size = len(json.dumps(template, sort_keys=True))
    if size > TEMPLATE_MAX_BYTES:
        raise field_problem(
            subpath,
            f"is {size} bytes as JSON; at most {TEMPLATE_MAX_BYTES} (each revision's Deployment "
            "keeps a copy in an annotation, and annotations are limited to 256 KiB)",
        )


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
                    yield f".spec.{key}[{index}].image", container["image"]
