"""What differs between a router that applies weights and the ratio of replicas, as one protocol.

`machine.core` walks the steps, handles controls and decides when to promote or abort; how a
weight becomes real traffic, and how traffic leaves a canary, is a strategy's: `weighted`
(Gateway API, NGINX, Istio, SMI) or `ratio` (no router).
"""

from __future__ import annotations

from typing import Protocol

from coalmine.machine.builder import Builder


class Strategy(Protocol):
    restores_on_delete: bool
    """Whether deleting the rollout must first send every request back to the stable revision."""

    def route(self, b: Builder, weight: int) -> bool:
        """Ask for ``weight``; True once the observation confirms it."""

    def keep_stable_serving(self, b: Builder) -> None:
        """While a canary walks its steps: the stable revision keeps serving its share."""

    def weight_step(self, b: Builder, canary: str, weight: int) -> bool:
        """A setWeight step: True once ``weight`` is real and confirmed."""

    def hold(self, b: Builder, canary: str, weight: int) -> None:
        """A pause or analysis step: keep the canary at the weight reached so far."""

    def promote(self, b: Builder) -> None:
        """Move every request to the canary and make it the stable revision, stage by stage."""

    def retire(self, b: Builder, *, superseded: bool) -> bool:
        """Take every request off the canary; True once none goes to it any more."""
