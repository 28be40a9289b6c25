# Two commands on a fresh machine: `make test` and `make bench`.
# Each does its whole set-up itself, idempotently (apt packages, .venv, the
# project in editable mode, tox, the BPF objects).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
# systemd: systemd-analyze verifies deploy/systemd (tests/unit/test_deploy.py)
APT_PKGS := clang llvm libbpf-dev bpftool kmod iproute2 curl openssl systemd nginx-light wrk golang-go libseccomp2 debuginfod prometheus golang-google-grpc-dev python3.11-dbg
STAMP := $(VENV)/.installed

.PHONY: setup apt venv bpf core test unit kernel e2e bench bench-micro matrix matrix-deps peer-deps saturation lint fuzz clean

setup: apt venv bpf core

apt:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml build_bpf.py setup.py
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip setuptools wheel Cython==3.3.0
	HTTPTRACE_CORE_INPLACE=1 $(VPY) -m pip install -q --no-build-isolation -e '.[export,harness,test]' tox==4.67.15
	touch $@

venv: apt $(STAMP)

bpf: apt
	$(MAKE) -s -C tracer/bpf

# The compiled core (tracer/core.py HOT): Cython, in place. Rebuilds only what
# changed; a stale module is reported by `probe` and fails the tests.
# Then the bytecode of the rest, as a wheel install has it: an editable tree
# run with PYTHONDONTWRITEBYTECODE compiled every module at every start
# (about 60 ms of the tracer's start-up, docs/performance.md).
core: venv
	$(VPY) setup.py -q build_ext --inplace -j 2
	$(VPY) -m compileall -q tracer harness netns workloads >/dev/null

# matrix-deps too: tests/e2e/test_matrix_boot.py boots one Debian kernel under
# qemu (about 50 s), and tests must not skip on CI.
# TRACER_REQUIRE_COMPILED: tests/unit/test_core.py fails if the suite would
# run on the pure-Python path by accident.
test: setup matrix-deps peer-deps
	TRACER_REQUIRE_COMPILED=1 $(VENV)/bin/tox -e py311,lint

unit: setup
	$(VPY) -m pytest tests/unit -q

kernel: setup
	$(VPY) -m pytest tests/kernel -q

e2e: setup
	$(VPY) -m pytest tests/e2e -q

# The main job: the default benchmark scenario, short, report under reports/.
bench: setup peer-deps
	$(VPY) -m harness bench --out reports

# The bcc reference peer (harness/peers): Debian's bcc and the nearest kernel
# headers (6.1), installed by the setup module itself. Where it cannot be
# set up, the benches say why in one line and run without the peer.
peer-deps: venv
	@$(VPY) -c 'import sys; from harness.peers.setup import main; sys.exit(main())' || echo "bcc peer: unavailable (reason above); benches run without it"

# nginx at saturation: untraced, traced, and each peer (harness/saturation.py)
saturation: setup peer-deps
	$(VPY) -m harness.saturation --out reports/saturation

# Kernel matrix (issue 9): host + Debian 6.1 guests under virtme-ng/qemu (TCG).
# qemu and busybox (virtme-ng's initramfs) only for this target.
MATRIX_APT_PKGS := qemu-system-x86 busybox-static

matrix-deps:
	@$(MAKE) -s apt APT_PKGS="$(MATRIX_APT_PKGS)"

matrix: setup matrix-deps
	$(VPY) -m harness matrix --out reports

# Coverage-guided fuzzing (atheris) of the event decoder, HTTP/1, HTTP/2, HPACK
# and the connection table: FUZZ_SECONDS in all, shared by the targets.
FUZZ_SECONDS ?= 600
fuzz: setup
	$(VPY) -m tests.fuzz.run --seconds $(FUZZ_SECONDS)

# nginx, wrk: tests/bench/test_bench_nginx.py (the real CLI on nginx)
bench-micro: setup
	@$(MAKE) -s apt APT_PKGS="nginx-light wrk gcc valgrind"
	$(VENV)/bin/tox -e bench

lint: setup
	$(VENV)/bin/tox -e lint

clean:
	$(MAKE) -C tracer/bpf clean
	find tracer -name '*.so' -delete
	find tracer -name '*.c' -path '*tracer/*' ! -path '*/bpf/*' -delete
	rm -rf .tox build dist *.egg-info
