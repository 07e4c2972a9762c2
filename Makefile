# The two commands of the README contract:
#   make demo   set up everything and run the main job
#   make test   set up everything and run every check (lint, types, all test tiers)
# Both bootstrap what they need: Debian packages (when root), a venv, pip packages.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Debian packages the project uses: python3-venv builds the venv, iproute2
# runs the namespace tier, nftables counts per-flow charging (FM:2) on Linux,
# iperf3 measures bench/dataplane.py, kea-dhcp6-server is the real PD server the
# DHCPv6 client is tested against, bird2 runs the routers of the BGP anchor switch
# (draft 4.2) that the BGP speaker is tested against, tshark reads captures with
# the project's Wireshark dissector (contrib/wireshark), chromium (headless)
# checks that a run's report.html renders, etcd-server is the shared binding
# store of several LMs (the tests start their own on loopback).
DEB_PACKAGES := python3-venv iproute2 nftables iptables iperf3 kea-dhcp6-server bird2 tshark \
	chromium etcd-server

.PHONY: demo test deps venv lint typecheck pytest bench stress clean

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  elif [ "$$CI" = true ]; then \
	    echo "CI=true: missing Debian packages:$$missing and cannot install them (not root or no apt-get)"; \
	    exit 1; \
	  else \
	    echo "note: missing Debian packages:$$missing (run as root to install them)"; \
	  fi; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,fast,plots,bench,sweep]'
	touch $(STAMP)

venv: deps $(STAMP)

lint: venv
	$(VENV)/bin/ruff check src tests bench

typecheck: venv
	$(VENV)/bin/mypy --strict src tests bench

pytest: venv
	$(VENV)/bin/pytest -q

test: lint typecheck pytest

# The flaky-test hunt (not part of `make test`): the namespace tier RUNS
# times, with HOGS busy-looping processes beside it; per-test pass counts.
RUNS ?= 5
HOGS ?= 0
stress: venv
	$(PY) tests/stress.py --runs $(RUNS) --hogs $(HOGS)

demo: venv
	$(VENV)/bin/dmanchor demo

bench: venv
	$(PY) bench/codec.py
	$(PY) bench/lm.py
	$(PY) bench/netlink.py
	$(PY) bench/dataplane.py
	$(PY) bench/anchor_switch.py
	$(PY) bench/pd_move.py
	$(PY) bench/signing.py
	$(PY) bench/handover.py
	$(PY) bench/sim.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
