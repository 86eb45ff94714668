"""The CanaryRollout resource: its identity, its metadata, and parsing a raw object."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)
from pydantic.alias_generators import to_camel

from coalmine.api.errors import Problem, SpecError, problems_from
from coalmine.api.limits import ROLLOUT_NAME_MAX_LENGTH
from coalmine.api.spec import CanaryRolloutSpec
from coalmine.api.status import CanaryRolloutStatus
from coalmine.api.types import JsonObject, plain_json

# --- identity of the resource -------------------------------------------------------------

GROUP = "coalmine.dev"
VERSION = "v1alpha1"
API_VERSION: Final = "coalmine.dev/v1alpha1"
KIND: Final = "CanaryRollout"
PLURAL = "canaryrollouts"
# `canary` is Flagger's and `ro` is Argo Rollouts'; both may be installed beside coalmine.
SHORT_NAMES = ("crol",)
CATEGORIES = ("coalmine",)


# --- the resource -------------------------------------------------------------------------


class ObjectMeta(BaseModel):
    """The metadata fields the operator reads; the rest is kept as it came."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=True
    )

    name: str = Field(max_length=ROLLOUT_NAME_MAX_LENGTH)
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    creation_timestamp: AwareDatetime | None = None
    deletion_timestamp: AwareDatetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    finalizers: tuple[str, ...] = ()


class CanaryRollout(BaseModel):
    """A CanaryRollout: rolls out each new pod template as a canary, step by step."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    api_version: Literal["coalmine.dev/v1alpha1"] = API_VERSION
    kind: Literal["CanaryRollout"] = KIND
    metadata: ObjectMeta
    spec: CanaryRolloutSpec
    status: CanaryRolloutStatus = Field(default_factory=CanaryRolloutStatus)

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> CanaryRollout:
        """Parse a CanaryRollout as the API server (or kopf) hands it over.

        Raises SpecError naming the first invalid field, metadata and spec before status.
        """
        plain = plain_json(obj)
        if not isinstance(plain, dict):
            raise SpecError((Problem("", "a CanaryRollout must be a JSON object"),))
        status = plain.pop("status", None) or {}
        try:
            rollout = cls.model_validate(plain)
        except ValidationError as error:
            raise SpecError(problems_from(error)) from None
        rollout.status = CanaryRolloutStatus.from_object({"status": status})
        return rollout

    def to_object(self) -> JsonObject:
        """The JSON form, as the API server stores it."""
        obj = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        # Metadata goes back exactly as it came: no empty labels or finalizers made up.
        obj["metadata"] = self.metadata.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return obj
