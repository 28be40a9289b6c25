"""The --config file: parsing, precedence over the command line, one-line
errors naming the key and the fix. No root needed."""

import argparse
from pathlib import Path

import pytest

from tracer import cli, config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tracer.toml"


def args(*argv):
    return cli.build_parser().parse_args(["run", *argv])


def test_example_file_parses_with_few_parameters():
    cfg = config.load(str(EXAMPLE))
    assert cfg.scope.ports == [8080, 443]
    assert cfg.filter.exclude_paths == ["/healthz", "/metrics", "/static/*"]
    assert cfg.ratio == 0.25
    assert cfg.adaptive.enabled and cfg.adaptive.ring_fill == 0.5
    assert cfg.adaptive.cpu_budget == 0.25
    # "fewer than 10 parameters for the common case": the uncommented keys
    keys = [line for line in EXAMPLE.read_text().splitlines()
            if "=" in line and not line.lstrip().startswith("#")]
    assert len(keys) < 10


def test_empty_file_is_the_defaults():
    cfg = config.parse("")
    assert cfg.scope == config.Scope()
    assert not cfg.filter.active()
    assert cfg.ratio is None
    assert not cfg.adaptive.enabled


def test_every_key_parses():
    cfg = config.parse("""
[scope]
ports = [80]
pids = [1]
netns = ["blue", 4026531840]
cgroups = ["/sys/fs/cgroup/a"]
processes = ["nginx", "python3.11"]
[filter]
include_paths = ["/api/*"]
exclude_paths = ["/healthz"]
methods = ["GET"]
processes = ["nginx"]
executables = ["/usr/sbin/*"]
cgroups = ["/system.slice/*", 1234]
[sampling]
ratio = 1
[adaptive]
enabled = true
ring_fill = 0.75
cpu_budget = 2
min_keep = 0
relax_after = 10
""")
    assert cfg.scope.netns == ["blue", "4026531840"]
    assert cfg.scope.processes == ["nginx", "python3.11"]
    assert cfg.filter.cgroups == ["/system.slice/*", 1234]
    assert cfg.ratio == 1.0 and isinstance(cfg.ratio, float)
    assert cfg.adaptive == config.AdaptiveSpec(True, 0.75, 2.0, 0.0, 10)


def test_command_line_flags_replace_file_keys():
    cfg = config.parse("[scope]\nports = [80, 443]\npids = [7]\n")
    merged = config.merge(cfg, args("--port", "8080"))
    assert merged.scope.ports == [8080]  # the flag wins
    assert merged.scope.pids == [7]  # not given on the command line: the file's
    merged = config.merge(None, args("--pid", "5", "--netns", "blue", "--cgroup", "/x"))
    assert (merged.scope.pids, merged.scope.netns, merged.scope.cgroups) == ([5], ["blue"], ["/x"])


@pytest.mark.parametrize("text, message", [
    ("[filter]\nexclude_path = ['/x']\n",
     "unknown key filter.exclude_path: did you mean exclude_paths? known keys in [filter]"),
    ("[sampling]\nratio = 1.5\n", "sampling.ratio = 1.5: must be a number within 0..1"),
    ("[sampling]\nratio = 'half'\n", 'sampling.ratio = "half": must be a number within 0..1'),
    ("[sampling]\nratio = nan\n", "sampling.ratio = nan: must be"),
    ("[scope]\nports = [0]\n", "scope.ports = [0]: must be a list of TCP ports"),
    ("[scope]\nports = 80\n", "scope.ports = 80: must be a list of TCP ports"),
    ("[filter]\nmethods = ['GET /']\n", "filter.methods"),
    ("[scope]\nprocesses = ['py*']\n", "(globs go in filter.processes)"),
    ("[scope]\nprocesses = ['a-very-long-process-name']\n", "at most 15 bytes"),
    ("[adaptive]\nenabled = 'yes'\n", 'adaptive.enabled = "yes": must be true or false'),
    ("[adaptive]\ncpu_budget = 0\n", "adaptive.cpu_budget = 0: must be a positive share"),
    ("[filters]\n", "unknown section [filters]: use one of [scope], [filter], [sampling]"),
    ("ratio = 0.5\n", "key ratio outside a section: put it under [sampling]"),
    ("[scope]\nports = [80]\n[[scope]]\n", "not valid TOML"),
    ("[sampling\n", "not valid TOML"),
])
def test_bad_files_one_line_naming_key_and_fix(text, message):
    with pytest.raises(config.ConfigError) as e:
        config.parse(text, "t.toml")
    assert str(e.value).startswith("config t.toml: ")
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_unreadable_and_binary_files(tmp_path):
    with pytest.raises(config.ConfigError, match="No such file or directory: give a readable"):
        config.load(str(tmp_path / "none.toml"))
    p = tmp_path / "bin.toml"
    p.write_bytes(b"\xff\xfe")
    with pytest.raises(config.ConfigError, match="not UTF-8"):
        config.load(str(p))


def test_cli_exits_2_with_one_line(tmp_path, capsys):
    p = tmp_path / "bad.toml"
    p.write_text("[sampling]\nratio = 3\n")
    assert cli.main(["run", "--config", str(p)]) == cli.EXIT_ENV
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"tracer: config {p}: sampling.ratio = 3: must be")


def test_runtime_objects_from_config():
    from tracer.stats import Stats

    cfg = config.merge(config.parse("[filter]\nmethods = ['GET']\n[adaptive]\nenabled = true\n"),
                       argparse.Namespace(port=[9], pid=[], netns=[], cgroup=[]))
    filters, policy, adaptive = cli._runtime(cfg, Stats())
    assert filters.ports == [9] and filters.comms == []
    assert policy is not None and policy.ratio is None
    assert adaptive is not None and adaptive.keep == 1.0
    _, policy, adaptive = cli._runtime(config.Config(), Stats())
    assert policy is None and adaptive is None  # nothing configured: no per-span cost
