"""Smoke mode of the fuzz targets, so they cannot rot: every seed, then a few
hundred deterministic mutations of the seeds, in-process; and one short
atheris run to keep tests/fuzz/run.py working. The long runs are `make fuzz`."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from tests.fuzz import run
from tests.fuzz.targets import TARGETS

MUTATIONS = 300


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(4)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:  # flip a byte
            b[min(i, len(b) - 1)] = rng.randrange(256)
        elif op == 1:  # insert random bytes
            b[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 2 and b:  # delete a run
            del b[i:i + rng.randint(1, 32)]
        else:  # duplicate a run
            j = rng.randrange(len(b) + 1)
            b[i:i] = b[j:j + rng.randint(1, 64)]
    return bytes(b)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_survives_seeds_and_mutations(name):
    fn, seeds = TARGETS[name]
    corpus = seeds()
    assert corpus
    for s in corpus:
        fn(s)
    rng = random.Random(name)
    for _ in range(MUTATIONS):
        fn(mutate(rng, rng.choice(corpus)))


def test_atheris_runner(tmp_path):
    """The libFuzzer driver runs a target and reports executions and coverage."""
    out = subprocess.run([sys.executable, "-m", "tests.fuzz.run", "hpack", "--runs", "300",
                          "--nice", "0", "--workdir", str(tmp_path)], cwd=run.ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    # libFuzzer counts the seed replays in its units: 300 mutations and more
    assert res["target"] == "hpack" and res["executions"] >= 300
    assert res["crashes"] == [] and res["cov"] > 0
    assert (tmp_path / "hpack" / "corpus").is_dir()
    # then every corpus input once through the compiled core
    assert res["replayed_compiled"] >= res["corpus"] > 0  # libFuzzer adds an empty input
