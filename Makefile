# aftercall: `make test` and `make demo` set up everything they need on a fresh Debian machine
# (as root: apt packages for the lab, a virtualenv with the project), then run.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# systemd: systemd-analyze, which checks deploy/systemd/aftercall.service in the tests.
# Docker itself (docker.io) is installed by docker/engine.py only when no engine answers.
# rabbitmq-server, redis-server: Jasmin's brokers for tests/gateways/test_jasmin.py (private
# instances on free ports; Jasmin itself, from PyPI, gets its own cached virtualenv there).
APT_PACKAGES := debootstrap sip-tester docker-compose chromium postgresql kannel openssl systemd \
                rabbitmq-server redis-server
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup apt venv lab lab-down test test-unit test-compose images-base demo bench check clean

setup: apt venv

apt:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade "pip>=23"
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

lab: setup
	$(VENV)/bin/aftercall lab up

lab-down:
	-$(VENV)/bin/aftercall lab down

test: setup
	$(PY) -m pytest -ra $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest -ra -m "not lab" $(PYTEST_ARGS)

# The compose stack alone (tests/compose/): hold the lab lock, it uses the lab's ports.
test-compose: setup
	$(PY) -m pytest -ra -m compose $(PYTEST_ARGS)

# Debian base images for docker/ made with debootstrap (cached in /var/cache/aftercall) and
# imported into the running engine, or a private one (docker/engine.py); prints the variables
# that point docker/compose.yaml at them.
images-base: apt
	$(PYTHON) docker/engine.py images-base

demo: setup
	$(PY) -m devkit.demo

bench: setup
	$(PY) bench/ingest.py
	$(PY) bench/smpp.py
	$(PY) bench/latency.py

check: venv
	$(VENV)/bin/aftercall check rules.yaml

clean: lab-down
	rm -rf $(VENV) .pytest_cache artifacts
