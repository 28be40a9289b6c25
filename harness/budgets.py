"""Budgets: load the versioned TOML file and judge per-scenario figures."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_BUDGETS = Path(__file__).with_name("budgets.toml")

PASS, FAIL, INCONCLUSIVE, MISSING = "pass", "fail", "inconclusive", "missing"


class BudgetFileError(ValueError):
    pass


@dataclass(frozen=True)
class Budget:
    name: str
    metric: str
    limit: float
    kind: str  # "max" or "min"
    unit: str = ""
    description: str = ""
    scenarios: tuple[str, ...] = ("*",)
    noise: bool = False
    gate: bool = True

    def applies_to(self, scenario: str) -> bool:
        return "*" in self.scenarios or scenario in self.scenarios


@dataclass
class Result:
    budget: str
    scenario: str
    metric: str
    value: float | None
    limit: float
    kind: str
    unit: str
    status: str
    margin: float | None  # positive = headroom, negative = over the limit
    noise_floor: float | None = None
    gate: bool = True
    note: str = ""

    def line(self) -> str:
        rel = "<=" if self.kind == "max" else ">="
        val = "n/a" if self.value is None else f"{self.value:.4g}"
        margin = "" if self.margin is None else f", margin {self.margin:+.4g} {self.unit}"
        noise = "" if self.noise_floor is None else f", A/A noise {self.noise_floor:.4g}"
        gate = "" if self.gate else " (not gated)"
        return (f"{self.status.upper():12s} {self.budget} [{self.scenario}]: {self.metric} = "
                f"{val} (budget {rel} {self.limit:g} {self.unit}{margin}{noise}){gate}"
                f"{' - ' + self.note if self.note else ''}")


@dataclass
class Verdict:
    version: int
    results: list[Result] = field(default_factory=list)

    @property
    def overall(self) -> str:
        gated = [r.status for r in self.results if r.gate]
        if FAIL in gated or MISSING in gated:
            return FAIL
        if INCONCLUSIVE in gated:
            return INCONCLUSIVE
        return PASS

    @property
    def ok(self) -> bool:
        return self.overall == PASS

    def to_dict(self) -> dict:
        return {"budgets_version": self.version, "overall": self.overall,
                "results": [asdict(r) for r in self.results]}


def load_budgets(path: str | Path = DEFAULT_BUDGETS) -> tuple[int, list[Budget]]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as e:
        raise BudgetFileError(f"budgets file not found: {path}") from e
    except tomllib.TOMLDecodeError as e:
        raise BudgetFileError(f"budgets file {path} is not valid TOML: {e}") from e
    budgets = []
    for i, b in enumerate(data.get("budget", [])):
        if ("max" in b) == ("min" in b):
            raise BudgetFileError(f"{path}: budget #{i + 1} needs exactly one of max/min")
        try:
            kind = "max" if "max" in b else "min"
            budgets.append(Budget(
                name=str(b["name"]), metric=str(b["metric"]), limit=float(b[kind]), kind=kind,
                unit=str(b.get("unit", "")), description=str(b.get("description", "")),
                scenarios=tuple(b.get("scenarios", ["*"])), noise=bool(b.get("noise", False)),
                gate=bool(b.get("gate", True))))
        except (KeyError, TypeError, ValueError) as e:
            raise BudgetFileError(f"{path}: budget #{i + 1} is malformed: {e}") from e
    return int(data.get("version", 0)), budgets


def _num(x) -> float | None:
    if x is None:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def judge(budget: Budget, scenario: str, value, noise_floor=None) -> Result:
    value = _num(value)
    noise = _num(noise_floor) if budget.noise else None
    r = Result(budget.name, scenario, budget.metric, value, budget.limit, budget.kind,
               budget.unit, PASS, None, noise, budget.gate)
    if value is None:
        r.status, r.note = MISSING, "no measurement"
        return r
    r.margin = budget.limit - value if budget.kind == "max" else value - budget.limit
    if r.margin >= 0:
        if noise is not None and noise > r.margin:
            r.note = "A/A noise floor exceeds the margin: the pass is not resolved"
        return r
    r.status = FAIL
    # Over the limit, but by no more than the A/A difference: the data cannot
    # tell this apart from noise. It is not a pass either.
    if noise is not None and -r.margin <= noise:
        r.status = INCONCLUSIVE
        r.note = "over budget by less than the A/A noise floor; rerun with more --repeat"
    return r


def evaluate(version: int, budgets: list[Budget],
             figures: Mapping[str, Mapping[str, float]],
             noise: Mapping[str, Mapping[str, float]] | None = None) -> Verdict:
    """``figures[scenario][metric]`` -> value; ``noise[scenario][metric]`` -> A/A floor."""
    verdict = Verdict(version)
    noise = noise or {}
    for scenario, values in figures.items():
        for b in budgets:
            if b.applies_to(scenario):
                verdict.results.append(judge(b, scenario, values.get(b.metric),
                                             noise.get(scenario, {}).get(b.metric)))
    return verdict
