"""Budgets: load the versioned TOML file and judge per-scenario figures.

A figure with a noise floor (`noise = true`) is judged only when that floor
is at most RESOLUTION of its limit (a third) and smaller than the value's
distance to the limit: then PASS or FAIL by value; otherwise INCONCLUSIVE,
whatever the value, naming the figure. A verdict with an inconclusive gated
figure and no failure exits 3."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.fmt import optional

DEFAULT_BUDGETS = Path(__file__).with_name("budgets.toml")

PASS, FAIL, INCONCLUSIVE, MISSING = "pass", "fail", "inconclusive", "missing"
RESOLUTION = 1 / 3  # the largest noise floor, as a share of the limit, that is judged
EXIT = {PASS: 0, FAIL: 1, INCONCLUSIVE: 3}


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
        noise = "" if self.noise_floor is None else f", noise floor {self.noise_floor:.4g}"
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

    @property
    def exit_code(self) -> int:
        """0 pass, 1 a gated budget failed or is missing, 3 inconclusive."""
        return EXIT[self.overall]

    @property
    def inconclusive(self) -> list[Result]:
        return [r for r in self.results if r.gate and r.status == INCONCLUSIVE]

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


def resolution(budget: Budget) -> float:
    """The noise floor a figure needs for a verdict on `budget`."""
    return abs(budget.limit) * RESOLUTION


def judge(budget: Budget, scenario: str, value, noise_floor=None) -> Result:
    value = optional(value)
    noise = optional(noise_floor) if budget.noise else None
    r = Result(budget.name, scenario, budget.metric, value, budget.limit, budget.kind,
               budget.unit, PASS, None, noise, budget.gate)
    if value is None:
        r.status, r.note = MISSING, "no measurement"
        return r
    r.margin = budget.limit - value if budget.kind == "max" else value - budget.limit
    if budget.noise:
        need = resolution(budget)
        if noise is None:
            r.status = INCONCLUSIVE
            r.note = f"{budget.metric}: no noise floor (needs at least 2 runs)"
            return r
        if noise > need:
            # Whatever the value, the data cannot resolve the budget.
            r.status = INCONCLUSIVE
            r.note = (f"{budget.metric}: noise floor {noise:.3g} > {need:.3g} "
                      f"(a third of the budget); value not judged")
            return r
        if abs(r.margin) < noise:
            # Resolved, but the value's interval holds the limit: too close to tell.
            r.status = INCONCLUSIVE
            r.note = (f"{budget.metric}: {abs(r.margin):.3g} from the limit, inside its "
                      f"noise floor {noise:.3g}")
            return r
    if r.margin < 0:
        r.status = FAIL
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
