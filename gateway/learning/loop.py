"""One turn of the learning loop (`hitl learn`): refit the calibrators on every label, find each calibration
group's release threshold, and say whether the result may route.

A group's threshold is found on its labels ordered by the uncalibrated confidence (isotonic: the calibrator
keeps that order) or by held-out predictions (logistic: each label scored by a fit that did not see it):
the lowest whose escaped-error rate (the share of released answers an agent would have changed), with audit
labels weighted by 1 / their sampling rate, stays within the operator's target at the upper end of its
confidence interval, tested as a fixed sequence from the highest threshold down, stopping at the first
failure (`metrics.threshold_within_bound`), so that trying many thresholds does not buy a lucky one. A
proposal may route only when every group has such a threshold: otherwise no threshold is known to keep the
target, and the policy in force stays.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from gateway.learning.fitting import Fits, Fitted
from gateway.learning.metrics import Bound, threshold_within_bound

POOLED = "pooled"


@dataclass(frozen=True)
class Target:
    escaped_error: float  # the share of released answers an agent would have changed, at most
    confidence: float  # of the interval whose upper end must stay within `escaped_error`


@dataclass(frozen=True)
class GroupProposal:
    name: str  # POOLED, or the calibration group
    fitted: Fitted
    bound: Bound | None  # None: no threshold keeps the escaped-error bound within the target

    def said(self, target: Target) -> str:
        labels = len(self.fitted.labels)
        if self.bound is None:
            return (
                f"{self.name}: {labels} labels; no release threshold keeps the escaped-error rate's"
                f" {target.confidence:.0%} upper bound within {target.escaped_error:.1%}"
            )
        bound = self.bound
        return (
            f"{self.name}: {labels} labels; release at >= {bound.threshold:.4f}: escaped-error rate"
            f" {bound.escaped_error_rate:.1%} (held out; {target.confidence:.0%} upper bound {bound.upper:.1%}),"
            f" review rate {bound.review_rate:.1%}"
        )


@dataclass(frozen=True)
class Proposal:
    groups: list[GroupProposal]  # the pooled fit first
    pooled_only: dict[str, str]  # groups scored by the pooled calibrator, and why
    target: Target

    @property
    def acceptable(self) -> bool:
        return all(group.bound is not None for group in self.groups)

    @property
    def labels(self) -> int:
        return len(self.groups[0].fitted.labels)

    def reason(self) -> str:
        if self.acceptable:
            worst = max(group.bound.upper for group in self.groups if group.bound is not None)
            return (
                f"refitted on {self.labels} labels; every group's escaped-error rate stays within"
                f" {self.target.escaped_error:.1%} at the {self.target.confidence:.0%} upper bound"
                f" (at most {worst:.1%})"
            )
        failing = ", ".join(group.name for group in self.groups if group.bound is None)
        return (
            f"refitted on {self.labels} labels; not applied: for {failing} no release threshold keeps the"
            f" escaped-error rate within {self.target.escaped_error:.1%} at the {self.target.confidence:.0%}"
            " upper bound"
        )

    def figures(self) -> dict[str, Any]:
        return {
            "target": asdict(self.target),
            "groups": {
                group.name: {
                    "labels": len(group.fitted.labels),
                    "bound": None if group.bound is None else asdict(group.bound),
                    "after_cross_validated": asdict(group.fitted.after),
                }
                for group in self.groups
            },
            "pooled_only": self.pooled_only,
        }


def propose(fits: Fits, target: Target) -> Proposal:
    named = [(POOLED, fits.pooled), *fits.groups.items()]
    return Proposal(
        [GroupProposal(name, fitted, bound(fitted, target)) for name, fitted in named], fits.pooled_only, target
    )


def bound(fitted: Fitted, target: Target) -> Bound | None:
    """The group's release threshold and its bound, on the calibrator's scale. An isotonic calibrator keeps the
    order of the uncalibrated confidence, so the labels are ordered by that, which no fit touched, and the
    threshold found there is carried through the final calibrator: exactly the answers it would release. A
    logistic one is judged on its held-out predictions."""
    labels, weights = fitted.labels.labels, fitted.labels.weights
    if fitted.calibrator.method != "isotonic":
        return threshold_within_bound(fitted.held_out, labels, target.escaped_error, weights, target.confidence)
    raw = [float(value) for value in fitted.labels.raw if value is not None]
    found = threshold_within_bound(raw, labels, target.escaped_error, weights, target.confidence)
    if found is None:
        return None
    return replace(found, threshold=float(fitted.calibrator.predict([found.threshold])[0]))
