"""Run plans: what runs a scenario is made of. A leaf module (scenarios,
overload and the runner import it; it imports nothing from the harness).

A scenario's RunPlan gives its defaults (rate, duration, repetitions, A/A
pair, BPF statistics, load generator, time bound for extra pairs); the
command line may override rate, duration and repetitions. A RunSpec is one
run; its optional overrides let a custom plan (overload's calibration) run
at another rate or tracer configuration without touching runner settings.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

LOCUST, PACED = "locust", "paced"
BPF_OFF, BPF_PASS, BPF_RUNS = "off", "pass", "runs"


@dataclass(frozen=True)
class RunSpec:
    label: str  # "aa" | "pair" | "bpf" | custom labels ("calib", "soak", ...)
    variant: str  # "baseline" | "traced"
    pair: int
    position: int  # order inside the pair (0 first)
    rps: float | None = None  # None: the plan's rate
    duration: float | None = None  # None: the plan's duration
    tracer_config: str | None = None  # None: the scenario's own
    extra: bool = False  # a pair added to resolve a noisy figure


@dataclass(frozen=True)
class RunPlan:
    rps: float
    duration: float
    repeat: int  # (baseline, traced) pairs, order alternating
    aa: bool = True  # an A/A pair (two baselines) first
    # "off"; "pass": one more traced run with kernel.bpf_stats_enabled;
    # "runs": statistics on for every run of the scenario (BPF time per run)
    bpf: str = BPF_OFF
    loadgen: str = LOCUST  # "locust" (harness/load.py) | "paced" (harness/paced.py)
    # Seconds the harness may spend on extra pairs when a gated figure's
    # noise floor is above a third of its budget (0: none).
    extra_s: float = 0.0
    requests: int = 0  # exact requests per run (0: by duration)
    custom: str = ""  # "": A/A + pairs; else the scenario's own plan (overload, soak)
    warmup_rps: float = 0.0  # 0: rps

    def with_overrides(self, *, rps: float | None = None, duration: float | None = None,
                       repeat: int | None = None, aa: bool = True, bpf: bool = True,
                       requests: int = 0) -> RunPlan:
        """The plan with command-line overrides; aa/bpf can only switch off."""
        return replace(self, rps=rps or self.rps, duration=duration or self.duration,
                       repeat=self.repeat if repeat is None else repeat,
                       aa=self.aa and aa, bpf=self.bpf if bpf else BPF_OFF,
                       requests=requests or self.requests)

    def specs(self) -> list[RunSpec]:
        """A/A pair, then `repeat` pairs alternating which variant goes first
        (drift such as warming caches then favours neither), then the BPF pass."""
        runs = []
        if self.aa:
            runs += [RunSpec("aa", "baseline", 0, 0), RunSpec("aa", "baseline", 0, 1)]
        for i in range(self.repeat):
            runs += pair(i)
        if self.bpf == BPF_PASS:
            runs.append(RunSpec("bpf", "traced", 0, 0))
        return runs



def pair(i: int, extra: bool = False) -> list[RunSpec]:
    order = ("baseline", "traced") if i % 2 == 0 else ("traced", "baseline")
    return [RunSpec("pair", v, i, pos, extra=extra) for pos, v in enumerate(order)]
