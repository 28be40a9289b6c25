"""Command line (contract 2 of ARCHITECTURE.md).

Exit codes: 0 success; 1 a check failed; 2 the environment or usage is wrong,
with one line naming the cause and the fix, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading

# re-exported: tests and scripts import them from here
from .errors import EXIT_CHECK, EXIT_ENV, EXIT_OK, UsageError  # noqa: F401
from .resolve import resolve_cgroup, resolve_netns


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 with usage: keep that, one line
        self.exit(EXIT_ENV, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m tracer", description="Zero-code eBPF tracer for HTTP/1.x and gRPC")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    pr = sub.add_parser("probe", help="show what this kernel allows and the fallbacks taken")
    pr.add_argument("--json", action="store_true", help="machine-readable output")
    pr.add_argument("-v", "--verbose", action="store_true")

    r = sub.add_parser("run", help="trace HTTP traffic and write spans")
    r.add_argument("--pid", type=int, action="append", default=[],
                   help="only this process and its children (repeatable)")
    r.add_argument("--netns", action="append", default=[], metavar="NAME|INODE",
                   help="only sockets in this network namespace (repeatable)")
    r.add_argument("--cgroup", action="append", default=[], metavar="PATH",
                   help="only processes in this cgroup v2 (repeatable)")
    r.add_argument("--port", type=int, action="append", default=[],
                   help="only connections with this local or remote TCP port (repeatable)")
    r.add_argument("--duration", type=float, default=None, metavar="S",
                   help="stop after S seconds (default: until SIGINT/SIGTERM)")
    r.add_argument("--output", default="-", metavar="FILE|-", help="span output (default stdout)")
    r.add_argument("--format", default="jsonl", choices=["jsonl"])
    r.add_argument("--export", action="append", default=[], metavar="URL",
                   help="otlp-grpc://host:4317, otlp-http://host:4318/v1/traces, over TLS "
                        "otlp-grpcs://host:443, otlp-https://host/v1/traces; jaeger-json:FILE "
                        "(default: OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, if set)")
    r.add_argument("--export-header", action="append", default=[], metavar="KEY=VALUE",
                   help="header sent with every OTLP export, e.g. authorization=Bearer... "
                        "(repeatable; replaces OTEL_EXPORTER_OTLP_[TRACES_]HEADERS; "
                        "never logged)")
    r.add_argument("--export-ca", default="", metavar="FILE",
                   help="PEM CA bundle that OTLP TLS receivers are checked against "
                        "(default: OTEL_EXPORTER_OTLP_CERTIFICATE, else the system's CAs)")
    r.add_argument("--export-client-cert", default="", metavar="FILE",
                   help="PEM client certificate for mutual TLS (with --export-client-key)")
    r.add_argument("--export-client-key", default="", metavar="FILE",
                   help="PEM key of --export-client-cert (unencrypted)")
    r.add_argument("--export-compression", default="", choices=["gzip", "none"],
                   help="OTLP compression (default: OTEL_EXPORTER_OTLP_COMPRESSION, else none)")
    r.add_argument("--metrics", default=None, metavar="HOST:PORT",
                   help="serve Prometheus /metrics (e.g. :9464)")
    r.add_argument("--service-name", action="append", default=[], metavar="COMM=NAME",
                   help="exported service.name for a process name or executable "
                        "(default: the process name; repeatable)")
    r.add_argument("--config", default=None, metavar="FILE",
                   help="TOML file: scope, filters, sampling (examples/tracer.toml); flags given "
                        "here replace its keys; SIGHUP reloads it")
    r.add_argument("--capture-bytes", type=int, default=512, metavar="N",
                   help="payload prefix copied per syscall (16..4096, default 512)")
    r.add_argument("--inject", action="store_true",
                   help="write a W3C traceparent into outgoing HTTP/1 requests (sockops + "
                        "sk_msg; modifies traffic, off by default)")
    r.add_argument("--inject-sample-rate", type=float, default=1.0, metavar="R",
                   help="with --inject: share of new traces flagged sampled (0..1, default 1)")
    r.add_argument("--span-stacks", action="store_true",
                   help="attach the user stack of the thread at request start to each span "
                        "(field 'stack'; frame pointers; off by default)")
    r.add_argument("--no-tls", action="store_true",
                   help="do not attach OpenSSL uprobes (TLS stays ciphertext; after start no "
                        "capability is kept for discovering libraries)")
    r.add_argument("--no-go", action="store_true",
                   help="do not follow goroutines in Go executables (their client calls then "
                        "take the thread links only)")
    r.add_argument("--asyncio", action="store_true",
                   help="follow Python asyncio tasks (CPython 3.11+ _asyncio uprobes) so that "
                        "an event-loop service's calls sit under their requests; opt-in: about "
                        "15 uprobe hits per request in every process using that interpreter "
                        "(docs/eventloop.md)")
    r.add_argument("--user", default=None, metavar="NAME|UID",
                   help="after attach, the agent (which parses traffic) runs as this user "
                        "(default: nobody when started as root, else the user it started as; "
                        "'root' keeps root)")
    r.add_argument("--no-drop-privileges", action="store_true",
                   help="keep every capability after attach (default: keep only what the "
                        "features in use need, set no_new_privs)")
    r.add_argument("-v", "--verbose", action="store_true", help="show libbpf and debug logs")

    from .funcs.cli import add_parser as add_funcs_parser

    add_funcs_parser(sub)
    return p


# ---- argument checks -------------------------------------------------------------

def _check_args(args) -> None:
    for port in args.port:
        if not 0 < port < 65536:
            raise UsageError(f"--port {port}: not a TCP port (1..65535)")
    for pid in args.pid:
        if pid <= 0:
            raise UsageError(f"--pid {pid}: not a process id")
        if not os.path.exists(f"/proc/{pid}"):  # else the run would trace nothing, silently
            raise UsageError(f"--pid {pid}: no such process")
    if args.duration is not None and args.duration <= 0:
        raise UsageError("--duration must be positive")
    if not 16 <= args.capture_bytes <= 4096:
        raise UsageError("--capture-bytes must be within 16..4096")
    if not 0.0 <= args.inject_sample_rate <= 1.0:
        raise UsageError("--inject-sample-rate must be within 0..1")
    if args.user is not None:
        from . import privileges

        if args.no_drop_privileges:
            raise UsageError("--user and --no-drop-privileges exclude each other")
        try:
            privileges.check_user(args.user)
        except ValueError as e:
            raise UsageError(str(e)) from None
    from .export import semconv, targets

    try:
        flags = targets.ExportFlags(args.export_header, args.export_ca, args.export_client_cert,
                                    args.export_client_key, args.export_compression)
        args.export_targets = targets.export_targets(args.export, flags, os.environ)
        args.metrics_addr = targets.parse_metrics(args.metrics) if args.metrics else None
        args.service_names = semconv.parse_service_names(args.service_name)
    except ValueError as e:
        raise UsageError(str(e)) from None
    from . import config

    try:
        args.cfg = config.merge(config.load(args.config) if args.config else None, args)
    except config.ConfigError as e:
        raise UsageError(str(e)) from None
    if not args.pid:  # the file's pids: checked once here, not on SIGHUP (processes come and go)
        for pid in args.cfg.scope.pids:
            if not os.path.exists(f"/proc/{pid}"):
                raise UsageError(f"config {args.config}: scope.pids {pid}: no such process")
    if args.user is not None:
        from . import privileges

        uid, gid, _ = privileges.user_ids(args.user)
        blocked = _unwritable_output(args, uid, gid)
        if blocked:
            raise UsageError(f"--user {args.user}: cannot write {blocked} (jaeger-json rewrites "
                             "its file there while tracing): choose a directory that user can "
                             "write, or another --user")


def _unwritable_output(args, uid: int, gid: int) -> str:
    """The first directory an output written by path after the drop is in
    (jaeger-json: FILE.tmp renamed over FILE) that uid cannot write, or ''.
    Files opened at start (--output, the summary) are written through their fds."""
    from . import privileges

    for t in args.export_targets:
        if t.kind == "jaeger-json":
            d = os.path.dirname(os.path.abspath(t.path))
            if not privileges.dir_writable_by(d, uid, gid):
                return d
    return ""


# ---- commands ----------------------------------------------------------------------

def cmd_probe(args) -> int:
    from . import probe

    try:
        probe.require_environment()
    except probe.EnvironmentProblem as e:
        raise UsageError(str(e)) from None
    res = probe.probe()
    if args.json:
        print(json.dumps(res.as_dict(), indent=2))
    else:
        print(probe.format_table(res))
    return EXIT_OK


def _summary_line(s: dict) -> str:
    return (f"tracer: events seen {s['events_seen']}, delivered {s['events_delivered']}, "
            f"dropped {s['events_dropped']}; decode errors {s['decode_errors']}; "
            f"unparsed {s['unparsed_bytes']} bytes, {s['unparsed_connections']} connections; "
            f"incomplete {s['incomplete_requests']}; spans {s['spans_emitted']} "
            f"in {s['duration_s']:.1f} s; {s.get('core', 'pure')} core")


def _open_exports(args, writer):
    """The exporters and the metrics endpoint; a file or port that cannot be
    opened is a usage error (exit 2), found before tracing starts."""
    from .export.sinks import Exports, pipeline_options, resource_options

    try:
        opts = pipeline_options(os.environ)
        resource = resource_options(os.environ)
    except ValueError as e:
        writer.close()
        raise UsageError(str(e)) from None
    try:
        return Exports(args.export_targets, args.metrics_addr, args.service_names,
                       pipeline_opts=opts, resource=resource)
    except ValueError as e:  # TLS files (targets.TargetError): one line naming the file
        writer.close()
        raise UsageError(str(e)) from None
    except OSError as e:
        writer.close()
        what = (f"--metrics {args.metrics}" if e.filename is None and args.metrics
                else f"--export jaeger-json:{e.filename}")
        raise UsageError(f"{what}: {e.strerror or e}: choose another file or port") from None
    except ImportError as e:
        writer.close()
        raise UsageError(f"--export needs {e.name}: install the 'export' extra "
                         "(pip install 'httptrace-ebpf[export]')") from None


def _check_lockdown() -> None:
    """Under lockdown=confidentiality the socket object cannot load (it reads
    kernel memory) and tracefs is locked: say so in one line (exit 2)."""
    from . import lockdown

    mode = lockdown.mode_here()
    if mode == "confidentiality":
        raise UsageError(lockdown.refusal(mode, lockdown.audit()))


def _drop_privileges(args, tracer, exports) -> tuple[list[str], dict]:
    """After attach: split into the privileged broker and the agent
    (tracer/broker.py). The broker keeps what attaching to processes started
    later needs; this process, the agent, keeps nothing else than what its
    own features read (tracer/privileges.py), sets no_new_privs and loads its
    seccomp filter (tracer/seccomp.py). Returns the lines to show once
    tracing is announced, and the summary entry."""
    args.summary_file = None
    args.broker = None
    if args.no_drop_privileges:
        return [], {"dropped": False}
    # loader.detach_all imports this at exit; an interpreter under /root (pyenv)
    # is unreadable to --user once CAP_DAC_READ_SEARCH is gone
    from concurrent.futures import ThreadPoolExecutor  # noqa: F401

    from . import broker, privileges, seccomp

    if args.output != "-":  # written at exit, when the directory may be out of reach
        args.summary_file = open(args.output + ".summary.json", "w")  # noqa: SIM115
    user, stay = args.user, ""
    if user is None:
        user = privileges.default_user()
        if user is not None:
            uid, gid, _ = privileges.user_ids(user)
            blocked = _unwritable_output(args, uid, gid)
            if blocked:
                user, stay = None, (f"the agent stays uid {os.getuid()}: {privileges.DEFAULT_USER} "
                                    f"cannot write {blocked} (--export jaeger-json): pass --user "
                                    "with a user who can, or choose another directory")
    counters = tracer.obj.map("counters")
    library = next(iter(tracer.tls.libraries.values()), None) if tracer.tls else None
    needs = privileges.probe_runtime_needs(lambda: counters.percpu_sum(0), library)
    go = tracer.addon("go")
    # the broker attaches to processes started later (TLS libraries, Go
    # executables) and reads /proc and files for exe names and span stacks
    follows = tracer.tls is not None or (go is not None and not go.unavailable)
    exe_names = bool(args.service_names or args.cfg.filter.executables)
    broker_keep = privileges.broker_caps(tls_discovery=follows, exe_names=exe_names,
                                         span_stacks=args.span_stacks, kernel=needs)
    keep = privileges.runtime_caps(tls_discovery=False, kernel=needs)
    try:
        client = broker.split(tracer, broker_keep, config=args.config)
    except OSError as e:
        raise UsageError(f"cannot start the privileged broker: {e.strerror or e}") from None
    args.broker = client
    res = privileges.drop(keep, user=user)
    if stay:
        res.warnings.insert(0, stay)
    _exe_names_through(client)
    if exports.metrics is not None:
        exports.metrics.respawn()  # its thread predates the drop
    privileges.check_threads(res)
    try:
        rules = seccomp.install()
    except OSError as e:  # never trace without it: the broker sees us go and detaches
        raise UsageError(f"seccomp filter not loaded ({e.strerror or e}); not tracing") from None
    tracer.separate(client)
    try:
        hello, _ = client.request("hello")
    except broker.BrokerGone as e:
        raise UsageError(f"the privileged broker did not start ({e})") from None
    lines, info = res.report()
    info["seccomp"] = rules
    info["broker"] = {"pid": client.pid, "kept": hello.get("kept"), "user": hello.get("user", ""),
                      "warnings": len(hello.get("warnings") or [])}
    kept = ", ".join(hello.get("kept") or []) or "nothing"
    lines.append(f"privileges: seccomp filter on every thread ({rules} rules); the broker "
                 f"(pid {client.pid}) keeps {kept}, has no network socket, reads no traffic")
    lines += [f"privileges: broker: {w}" for w in hello.get("warnings") or []]
    return lines, info


def _exe_names_through(client) -> None:
    """The agent may not read other users' /proc/<pid>/exe: executable names
    (--service-name EXE=NAME, filter.executables) come from the broker."""
    from .export import semconv

    def exe(pid: int) -> str:
        return os.path.basename(client.exe(pid))

    # semconv.Resources reads the module's exe_name; sinks.EnvResources its import of it
    for mod in (semconv, sys.modules.get("tracer.export.sinks")):
        if mod is not None and hasattr(mod, "exe_name"):
            mod.exe_name = exe
    _exe_reader[0] = client.exe


_exe_reader = [None]  # the broker's exe read once split (None: /proc here)


def _read_exe(pid: int) -> str:
    from .sampling import _read_exe as here

    return (_exe_reader[0] or here)(pid)


def _runtime(cfg, stats):
    """The filters, span policy and adaptive controller of a merged Config."""
    from .agent import Filters
    from .sampling import AdaptiveController, ProcInfo, SpanPolicy

    s = cfg.scope
    filters = Filters(pids=s.pids, netns=[resolve_netns(n) for n in s.netns],
                      cgroups=[resolve_cgroup(c) for c in s.cgroups], ports=s.ports,
                      comms=s.processes)
    # exe reads are looked up at each call: through the broker once split
    proc = ProcInfo(read_exe=_read_exe)
    policy = (SpanPolicy(cfg.filter, cfg.ratio, stats, proc=proc)
              if cfg.filter.active() or cfg.ratio is not None else None)
    adaptive = AdaptiveController(cfg.adaptive) if cfg.adaptive.enabled else None
    return filters, policy, adaptive


def _reload(args, tracer) -> str:
    """SIGHUP: re-read --config, merge the same command line, swap filters and
    sampling in place (maps updated, probes stay attached). A bad file keeps
    the old configuration."""
    from . import config

    if not args.config:
        return "tracer: SIGHUP ignored: there is no --config file to reload"
    try:
        cfg = config.merge(_load_config(args), args)
        if cfg.filter.executables and not args.cfg.filter.executables \
                and not args.service_names and not args.no_drop_privileges:
            raise UsageError(f"config {args.config}: filter.executables needs CAP_SYS_PTRACE "
                             "(/proc/PID/exe), dropped at start: restart the tracer with it")
        filters, policy, adaptive = _runtime(cfg, tracer.stats)
    except (config.ConfigError, UsageError) as e:
        tracer.stats.config_reload_errors += 1
        return f"tracer: reload failed, keeping the previous configuration: {e}"
    if policy is not None:
        policy.on_sampled_out = args.sampled_sink
    tracer.reconfigure(filters, policy, adaptive)
    tracer.stats.config_reloads += 1
    return f"tracer: config reloaded from {args.config} (reload {tracer.stats.config_reloads})"


def _load_config(args):
    """--config, opened by the broker once split (the agent's user may not
    read it), parsed here."""
    from . import config
    from .broker import MAX_CONFIG_BYTES

    client = getattr(args, "broker", None)
    if client is None or client.gone:
        return config.load(args.config)
    fd, why = client.open_file("config")
    if fd is None:
        raise config.ConfigError(f"config {args.config}: {why}: give a readable TOML file")
    with os.fdopen(fd, "rb") as f:
        raw = f.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise config.ConfigError(f"config {args.config}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return config.parse(raw.decode("utf-8"), args.config)
    except UnicodeDecodeError:
        raise config.ConfigError(f"config {args.config}: not UTF-8 text: save it as UTF-8") \
            from None


def _on_sampling(ctl) -> None:
    sys.stderr.write(f"tracer: adaptive sampling: keeping {ctl.keep:.2%} of new connections "
                     f"({ctl.last_reason})\n")
    sys.stderr.flush()


def cmd_run(args) -> int:
    from . import loader, probe
    from .agent import Tracer
    from .export.jsonl import JsonlWriter
    from .stats import Stats

    _check_args(args)
    try:
        probe.require_environment()
    except probe.EnvironmentProblem as e:
        raise UsageError(str(e)) from None
    _check_lockdown()
    stats = Stats()
    filters, policy, adaptive = _runtime(args.cfg, stats)
    try:
        writer = JsonlWriter(args.output)
    except OSError as e:
        raise UsageError(f"cannot write {args.output}: {e.strerror}") from None
    exports = _open_exports(args, writer)
    # head sampling drops traces, not requests: RED metrics see every span
    args.sampled_sink = exports.metrics.red if exports.metrics is not None else None
    if policy is not None:
        policy.on_sampled_out = args.sampled_sink

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    reload = threading.Event()  # SIGHUP: handled in the run loop, not in the handler
    signal.signal(signal.SIGHUP, lambda signum, frame: reload.set())

    tracer = Tracer(filters, sink=exports.sink(writer), capture_bytes=args.capture_bytes,
                    inject_headers=args.inject, inject_sample_rate=args.inject_sample_rate,
                    tls_plaintext=not args.no_tls, stats=stats, policy=policy,
                    adaptive=adaptive, on_sampling=_on_sampling,
                    span_stacks=args.span_stacks, go_runtime=not args.no_go,
                    asyncio_runtime=args.asyncio)
    try:
        tracer.start()
    except loader.LoaderError as e:
        exports.close(timeout=0)
        writer.close()
        if args.verbose and e.log:
            sys.stderr.write(e.log)
        raise UsageError(f"{e.stage} failed: {e}" + ("" if args.verbose or not e.log
                                                     else " (run with -v for the log)")) from None
    drop_lines, privileges_info = _drop_privileges(args, tracer, exports)  # before the ready line below
    # One line when tracing really starts: scripts and tests wait for it.
    sys.stderr.write(f"tracer: tracing ({len(tracer.attached)} programs attached"
                     f"{', ' + str(len(tracer.skipped)) + ' skipped' if tracer.skipped else ''})\n")
    if tracer.inject_unavailable:  # said once: the user asked to modify traffic
        sys.stderr.write(f"tracer: --inject unavailable ({tracer.inject_unavailable}); "
                         "correlating without injection\n")
    sys.stderr.flush()
    for line in drop_lines:
        sys.stderr.write(f"tracer: {line}\n")
    exports.start(tracer)  # after the drop: its threads inherit the reduced sets
    try:
        def on_tick():
            writer.flush()
            if reload.is_set():
                reload.clear()
                sys.stderr.write(_reload(args, tracer) + "\n")
                sys.stderr.flush()

        tracer.run(duration=args.duration, stop=stop, on_tick=on_tick)
    finally:
        exports.stop_metrics()  # scrapes read the BPF object that stop() closes
        summary = tracer.stop()
        writer.close()
        exports.close()  # sends what is queued (bounded wait), then counts the rest
    summary.update(exports.summary())
    if args.broker is not None:
        privileges_info["broker"].update(args.broker.final, gone=args.broker.gone)
    summary["privileges"] = privileges_info
    line = _summary_line(summary)
    if "spans_exported" in summary:
        line += (f"; exported {summary['spans_exported']}, export failed "
                 f"{summary['spans_export_failed']}, export dropped "
                 f"{summary['spans_export_dropped']}")
    if summary["spans_filtered"] or summary["spans_sampled_out"] or \
            summary["conns_sampled_out"] or summary["adaptive_sampling_engaged"]:
        line += (f"; filtered {summary['spans_filtered']}, sampled out "
                 f"{summary['spans_sampled_out']} spans (head), "
                 f"{summary['requests_sampled_out']} requests on "
                 f"{summary['conns_sampled_out']} connections (adaptive, engaged "
                 f"{summary['adaptive_sampling_engaged']}x)")
    sys.stderr.write(line + "\n")
    if args.output != "-":
        with args.summary_file or open(args.output + ".summary.json", "w") as f:
            json.dump(summary, f, indent=2, sort_keys=True)
    if args.broker is not None:
        args.broker.close()  # it closes what it holds and exits; reaped here
    # a receiver refused the credentials or the TLS handshake (said in one line
    # when it happened): the environment is wrong
    return EXIT_ENV if summary.get("export_batches_refused") else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(name)s: %(message)s")
    try:
        if args.cmd == "probe":
            return cmd_probe(args)
        if args.cmd == "run":
            return cmd_run(args)
        if args.cmd == "funcs":
            from .funcs.cli import cmd_funcs

            return cmd_funcs(args)
    except UsageError as e:
        sys.stderr.write(f"tracer: {e}\n")
        return EXIT_ENV
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:  # `... | head`: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    return EXIT_ENV
