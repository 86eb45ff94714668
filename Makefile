# coalmine developer commands. `make help` lists them; `make test` is what CI runs.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The network namespace of the local cluster: COALMINE_NETNS, as devenv reads it.
NETNS := $(or $(COALMINE_NETNS),coalmine)
export PYTHONPATH := $(CURDIR)/operator:$(CURDIR)/tools

.PHONY: demo demo-down help venv tools crds argocd cluster cluster-down cluster-status shell kubectl lint fmt unit integration test chaos bench bench-cluster bench-rollouts bench-scale bench-analysis bench-traffic bench-adopted-cache traefik traefik-down image image-base test-image dist kind-up kind-deploy lock clean

demo: venv tools ## the whole thing on this machine: cluster, Traefik, operator, v2 promoted, v3 aborted, live
	$(PY) -m devenv.demo

demo-down: venv ## stop the demo: operator, Traefik, cluster
	$(PY) -m devenv.demo down

help: ## list the commands
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "coalmine needs Python >= 3.11 (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

venv: $(VENV)/.installed ## create the virtual environment with every Python dependency

tools: ## build the pinned Kubernetes, etcd, KWOK and Prometheus binaries into .tools/ (no-op when current)
	tools/build-tools.sh

cluster: venv tools ## start the local cluster (or reuse a healthy one) and print how to use it
	$(PY) -m devenv.cluster up

cluster-down: venv ## stop the local cluster: no process, mount or namespace left behind
	$(PY) -m devenv.cluster down

cluster-status: venv ## say whether the local cluster is healthy
	$(PY) -m devenv.cluster status

traefik: venv tools ## start Traefik (Gateway API provider) in the cluster's namespace, or reuse it
	$(PY) -m devenv.traefik up

traefik-down: venv ## stop Traefik
	$(PY) -m devenv.traefik down

shell: ## a shell inside the cluster's network namespace, with KUBECONFIG and PATH set
	ip netns exec $(NETNS) bash --rcfile <(echo 'source ~/.bashrc 2>/dev/null; source $(CURDIR)/.cluster/env; PS1="(coalmine) $$PS1"')

kubectl: ## run kubectl against the local cluster: make kubectl ARGS="get pods -A"
	ip netns exec $(NETNS) .tools/bin/kubectl --kubeconfig .cluster/kubeconfig $(ARGS)

lint: venv ## ruff, formatting, mypy --strict, the import-linter contracts, crds/ and deploy/argocd/ up to date
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) -m coalmine.crdgen --check
	$(PY) -m devenv.argocdgen --check

crds: venv ## regenerate crds/ from the pydantic models
	$(PY) -m coalmine.crdgen

argocd: venv ## regenerate deploy/argocd/: the action scripts and the argocd-cm patch
	$(PY) -m devenv.argocdgen

fmt: venv ## format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

unit: venv ## unit tests only (no cluster)
	$(VENV)/bin/pytest tests/unit

integration: venv tools test-image ## integration tests against the local cluster (started when absent)
	$(VENV)/bin/pytest tests/integration

test: venv tools lint test-image dist ## everything CI checks: lint, unit and integration tests against the real cluster
	$(VENV)/bin/pytest tests

chaos: venv tools ## fault injection in full: a crash after every write of each scenario, more hostile rollouts
	COALMINE_CRASH_POINTS=all COALMINE_HOSTILE_EXAMPLES=$(or $(COALMINE_HOSTILE_EXAMPLES),300) \
		$(VENV)/bin/pytest tests/integration/test_crash_points.py tests/integration/test_hostile.py

bench: bench-cluster bench-rollouts bench-analysis bench-traffic bench-adopted-cache ## every benchmark; JSON lands in bench/results/

bench-cluster: venv tools ## cluster figures: tool build time, warm start time, control plane memory (COLD=1 rebuilds the tools cold)
	$(PY) -m bench.cluster $(if $(COLD),--cold-build,)

bench-rollouts: venv tools ## 50 rollouts in flight: promote-to-confirmed weight latency (p50, p99), API writes per step
	$(PY) -m bench.rollouts

bench-scale: venv tools ## one replica against 100, 500, 1000 and 2000 rollouts: JSON and PNG curves (SIZES=100,500 to choose)
	$(PY) -m bench.scale $(if $(SIZES),--sizes $(SIZES),)

IMAGE ?= coalmine:dev
KIND_CLUSTER ?= coalmine
# docker or podman: the first whose engine answers (a docker client without a daemon does not).
CONTAINER_ENGINE ?= $(shell tools/image/engine.sh)
# The Dockerfile's base, named in full so that podman needs no short-name alias.
BASE_IMAGE ?= docker.io/library/python:3.11.14-slim-bookworm
# What `make image-base` makes from Debian's packages where no registry is reachable.
LOCAL_BASE_IMAGE ?= localhost/coalmine/python-base:3.11-bookworm
# podman's settings for machines like CI's (runc, ulimits): tools/image/containers.conf.
CONTAINERS_CONF ?= $(CURDIR)/tools/image/containers.conf
# The host's CA bundle replaces the image's in podman's build steps, so that pip trusts a proxy
# that intercepts TLS (as CI's does). Set HOST_CA_BUNDLE= to build with the image's own.
HOST_CA_BUNDLE ?= $(wildcard /etc/ssl/certs/ca-certificates.crt)
image image-base test-image: export CONTAINERS_CONF := $(CONTAINERS_CONF)

image: ## build the operator image with docker or podman (CONTAINER_ENGINE, BASE_IMAGE, IMAGE)
	@[[ -n "$(CONTAINER_ENGINE)" ]] || { echo "image: no working docker or podman engine (apt-get install podman)"; exit 1; }
	$(CONTAINER_ENGINE) build --build-arg PYTHON_IMAGE=$(BASE_IMAGE) \
		$(if $(and $(HOST_CA_BUNDLE),$(filter podman,$(CONTAINER_ENGINE))),--volume $(HOST_CA_BUNDLE):/etc/ssl/certs/ca-certificates.crt:ro,) \
		-t $(IMAGE) .
	@$(CONTAINER_ENGINE) image inspect --format 'image: $(IMAGE) is {{.Size}} bytes' $(IMAGE)

image-base: ## a Python base from Debian's packages, offline (mmdebstrap): then make image BASE_IMAGE=localhost/coalmine/python-base:3.11-bookworm
	CONTAINER_ENGINE=$(CONTAINER_ENGINE) tools/image/base.sh $(LOCAL_BASE_IMAGE)

# The install tests (tests/integration/test_install.py) run IMAGE in podman; without podman
# they are skipped, saying how to install it.
test-image: ## the operator image for the install tests, on the offline base (needs podman)
	@if command -v podman >/dev/null; then \
		$(MAKE) --no-print-directory image-base image CONTAINER_ENGINE=podman BASE_IMAGE=$(LOCAL_BASE_IMAGE); \
	else echo "test-image: no podman: the install tests will be skipped (apt-get install podman runc mmdebstrap)"; fi

dist: venv ## python -m build: wheel and sdist in dist/, the wheels they need in dist/wheelhouse/, the krew archive
	rm -rf dist
	$(PY) -m build --outdir dist .
	$(PY) -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
		--dest dist/wheelhouse --constraint requirements.lock dist/coalmine-*.whl
	$(PY) -m devenv.krew

kind-up: ## create a kind cluster (needs Docker and kind)
	kind get clusters | grep -qx $(KIND_CLUSTER) || kind create cluster --name $(KIND_CLUSTER)

kind-deploy: image ## load the image into kind and install coalmine with kubectl apply -k deploy/
	kind load docker-image $(IMAGE) --name $(KIND_CLUSTER)
	kubectl --context kind-$(KIND_CLUSTER) apply -k deploy/
	kubectl --context kind-$(KIND_CLUSTER) -n coalmine-system rollout status deployment/coalmine

bench-analysis: venv tools ## detection latency: a bad canary's errors visible in Prometheus -> weight 0 confirmed
	$(PY) -m bench.analysis

bench-adopted-cache: venv tools ## the heap of the cache of adopted Deployments, against caching every Deployment
	$(PY) -m bench.adopted_cache

bench-traffic: venv tools ## through Traefik: split error per step, failed requests, abort to 0% canary traffic
	$(PY) -m bench.traffic

lock: ## re-pin requirements.lock from pyproject.toml
	rm -rf /tmp/coalmine-lock && $(PYTHON) -m venv /tmp/coalmine-lock
	/tmp/coalmine-lock/bin/pip install --quiet -e '.[dev]'
	{ echo "# Pinned versions of every Python dependency, for reproducible installs (make lock rewrites it)."; \
	  /tmp/coalmine-lock/bin/pip freeze --exclude-editable | grep -v '^-e'; } > requirements.lock

clean: cluster-down ## stop the cluster and remove build output (keeps Go and pip caches)
	rm -rf $(VENV) .tools .mypy_cache .ruff_cache .pytest_cache dist build
