# The coalmine operator image: `make image` (docker or podman; docs/install.md).
#
# Two stages: the first builds a wheel of the package and installs it, with its runtime
# dependencies at the versions requirements.lock pins, into a virtual environment; the second is
# the same slim base with that environment copied in, a non-root user, and nothing else (no
# compiler, no pip cache, no sources).
#
# The base is named in full (registry, path, tag), so podman needs no short-name alias, and
# pinned to an exact Python release. Any Debian-based Python 3.11+ image with pip and venv fits:
# `make image-base` makes one from Debian's packages where no registry is reachable, and
# `make image BASE_IMAGE=...` builds on it. To make builds reproducible to the byte, pin the
# digest as well: `docker buildx imagetools inspect docker.io/library/python:3.11.14-slim-bookworm`
# prints it ("Digest: sha256:..."); build with
#   --build-arg PYTHON_IMAGE=docker.io/library/python:3.11.14-slim-bookworm@sha256:<digest>
# or write it into the default below, and let a bot (Renovate, Dependabot) move both on.
ARG PYTHON_IMAGE=docker.io/library/python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src

# The runtime dependencies of the package: what pyproject.toml requires, and what those require.
# requirements.lock pins them together with the developer tools (pytest, mypy, ruff...), which
# stay out of the image, so only these names are taken from it. A dependency added to
# pyproject.toml but not here fails the build at `pip check` below; one missing from the lock
# fails it here.
ARG RUNTIME_PACKAGES="\
    aiohappyeyeballs aiohttp aiohttp-retry aiosignal annotated-types attrs cel-python certifi \
    charset-normalizer click dateparser durationpy frozenlist google-re2 idna iso8601 jmespath \
    jsonpatch jsonpointer kopf kubernetes lark multidict oauthlib pendulum prometheus-api-client \
    prometheus_client propcache pydantic pydantic-settings pydantic_core python-dateutil \
    python-dotenv python-json-logger pytz PyYAML regex requests requests-oauthlib \
    typing-inspection typing_extensions tzdata tzlocal urllib3 websocket-client yarl"
COPY requirements.lock ./
RUN for name in $RUNTIME_PACKAGES; do \
        grep -i -E "^${name}==" requirements.lock \
            || { echo "${name} is not pinned in requirements.lock" >&2; exit 1; }; \
    done > runtime.txt

# The environment has no pip of its own: the base image's pip installs into it (--python), so
# the final image carries one pip, not two. Wheels only: the slim base has no compiler, and a
# package that needs one should fail here rather than be built from source by surprise.
RUN python -m venv --without-pip /opt/coalmine \
    && pip --python /opt/coalmine/bin/python install --no-deps --only-binary=:all: \
        --requirement runtime.txt

COPY pyproject.toml README.md ./
COPY operator/ operator/
# The kubernetes client (37.x) ships, beside its generated API, an asyncio copy of all of it
# (kubernetes/aio, 68 MB: a third of the image) that neither coalmine nor kopf imports: it is
# left out. The import check below is what proves the operator does not need it.
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && pip --python /opt/coalmine/bin/python install --no-deps /wheels/coalmine-*.whl \
    && pip --python /opt/coalmine/bin/python check \
    && rm -rf /opt/coalmine/lib/python3.*/site-packages/kubernetes/aio \
    && /opt/coalmine/bin/python -c "import coalmine.main, coalmine.cli.commands" \
    && /opt/coalmine/bin/python -m coalmine --help >/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="coalmine" \
      org.opencontainers.image.description="Kubernetes operator for canary rollouts" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed uid/gid (65532, the conventional "nonroot"), so the Deployment's runAsUser matches and
# runAsNonRoot can verify it; the passwd entry lets getpass and friends name the user.
RUN groupadd --gid 65532 coalmine \
    && useradd --uid 65532 --gid 65532 --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin coalmine

COPY --from=build /opt/coalmine /opt/coalmine

# The root filesystem is read-only in the cluster, so bytecode is never written at run time
# (PYTHONDONTWRITEBYTECODE): the installed packages were compiled by pip above, and the official
# base ships its standard library without .pyc files, so it is compiled here, once, instead of at
# every start (wherever the base keeps it: /usr/local/lib for python:*, /usr/lib for Debian's).
RUN python -m compileall -q -j 0 "$(python -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')"

# HOME=/tmp: /tmp is the one writable place (an emptyDir in deploy/operator/deployment.yaml).
ENV PATH=/opt/coalmine/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
USER 65532:65532
WORKDIR /tmp
# 8080: kopf's liveness endpoint (/healthz); 9100: Prometheus metrics (/metrics).
EXPOSE 8080 9100

# Exec form: the interpreter is PID 1 and receives SIGTERM itself; kopf handles it (daemons
# stopped, peering withdrawn) and exits. The operator starts no child processes to reap.
# Arguments go to the operator: `docker run IMAGE --help` lists its settings.
ENTRYPOINT ["python", "-m", "coalmine"]
