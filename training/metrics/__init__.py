"""Evaluation metric families of trained models, by name.

    from training.metrics import FAMILIES, EvalInputs
    results = FAMILIES["core"].run(inputs, {"folds": 3})   # params: overrides of the defaults
    print(FAMILIES["core"].format_table(results))

Families (protocols: BioCLIP 2 sections 4-5 and appendix H; the BioCLIP-HC-Hyperbolic card):

- core: zero-shot species top-1 (class text = caption templates averaged), 1/5-shot SimpleShot
  over folds, per-rank zero-shot top-1;
- hierarchical: per-rank top-1, top-down constrained prediction, depth of the first
  misclassification, normalised lowest-common-ancestor distance (nLCA);
- emergent: explained-variance ratio rho, Fisher discriminant ratio, alignment and
  differentiation of intra-species variants (needs a variant column);
- probes: an SVM per binary task column and a logistic-regression probe per trait column.

Every parameter, with its meaning and the original protocol's value, is in
training/metrics/defaults.toml; `run` merges the given params over it (unknown keys, wrong
types and values outside the documented range are errors). Results are JSON-able dicts; a part
that cannot run on the given set (no variant column, too few images) is reported in the result
as {"skipped": "<why>"}, never left out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from training.metrics.params import default_params, merged_params
from training.metrics.types import RANKS, EvalInputs

__all__ = ["FAMILIES", "RANKS", "EvalInputs", "Family", "default_params"]


@dataclass(frozen=True)
class Family:
    """One family of metrics: `run(inputs, params) -> results` (a JSON-able dict) and
    `format_table(results) -> str` (a readable table of the same results)."""

    name: str
    description: str
    compute: Callable[[EvalInputs, dict[str, Any]], dict[str, Any]]
    table: Callable[[dict[str, Any]], str]

    def run(self, inputs: EvalInputs, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.compute(inputs, merged_params(self.name, params or {}))

    def format_table(self, results: dict[str, Any]) -> str:
        return self.table(results)

    @property
    def defaults(self) -> dict[str, Any]:
        return default_params(self.name)


def _family(name: str, description: str, module: str) -> Family:
    import importlib

    def compute(inputs: EvalInputs, params: dict[str, Any]) -> dict[str, Any]:
        return importlib.import_module(module).run(inputs, params)

    def table(results: dict[str, Any]) -> str:
        return importlib.import_module(module).format_table(results)

    return Family(name, description, compute, table)


FAMILIES: dict[str, Family] = {
    "core": _family("core", "zero-shot species top-1, SimpleShot 1/5-shot, per-rank zero-shot top-1",
                    "training.metrics.core"),
    "hierarchical": _family("hierarchical", "per-rank and top-down top-1, first-error depth, nLCA",
                            "training.metrics.hierarchical"),
    "emergent": _family("emergent", "rho, Fisher discriminant ratio, variant alignment and differentiation",
                        "training.metrics.emergent"),
    "probes": _family("probes", "SVM per binary task column, logistic-regression probe per trait column",
                      "training.metrics.probes"),
}  # fmt: skip
