"""The figures and tables `hitl calibrate`, `hitl eval` and the benchmarks print, and the reliability
diagram. Plain text in, plain text out: the CLI decides where it goes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.learning import metrics
from gateway.learning.metrics import Threshold

REVIEW_RATES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class Figures:
    count: int
    positives: int
    auroc: float
    ece: float
    brier: float
    prr: float

    @property
    def negatives(self) -> int:
        return self.count - self.positives


def figures(scores: Sequence[float], labels: Sequence[int], weights: Sequence[float] | None = None) -> Figures:
    return Figures(
        count=len(labels),
        positives=int(sum(labels)),
        auroc=metrics.auroc(scores, labels, weights),
        ece=metrics.ece(scores, labels, weights),
        brier=metrics.brier(scores, labels, weights),
        prr=metrics.prediction_rejection_ratio(scores, labels),
    )


def _number(value: float) -> str:
    return "  n/a" if math.isnan(value) else f"{value:.3f}"


def figures_table(rows: dict[str, Figures]) -> str:
    width = max(len(name) for name in rows)
    lines = [f"{'':{width}}  AUROC  ECE    Brier  PRR"]
    for name, found in rows.items():
        cells = "  ".join(_number(value) for value in (found.auroc, found.ece, found.brier, found.prr))
        lines.append(f"{name:{width}}  {cells}")
    return "\n".join(lines)


def tradeoff(
    scores: Sequence[float],
    labels: Sequence[int],
    weights: Sequence[float] | None = None,
    review_rates: Sequence[float] = REVIEW_RATES,
) -> list[Threshold]:
    """For each target review rate, the threshold that comes closest and the escaped-error rate it gives
    (once per threshold: with few distinct scores, several targets land on the same one)."""
    found = [metrics.threshold_for_review_rate(scores, labels, rate, weights) for rate in review_rates]
    return list({row.threshold: row for row in found}.values())


def tradeoff_table(rows: Sequence[Threshold]) -> str:
    lines = ["threshold  review rate  escaped-error rate"]
    lines += [f"{row.threshold:9.4f}  {row.review_rate:11.1%}  {row.escaped_error_rate:18.1%}" for row in rows]
    return "\n".join(lines)


def reliability_diagram(
    path: Path, curves: dict[str, tuple[Sequence[float], Sequence[int]]], title: str, bins: int = 10
) -> None:
    """Mean confidence against the share labelled 1, per bin, one line per curve; written as an image."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no screen: draw to a file
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("the reliability diagram needs matplotlib: pip install 'hitl-gateway[eval]'") from None
    figure, axes = plt.subplots(figsize=(5.5, 5.5), dpi=100)
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    for name, (scores, labels) in curves.items():
        points = metrics.reliability(scores, labels, bins)
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="share labelled correct", title=title)
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
