# syntax=docker/dockerfile:1
#
# One image for all six Vigil services. Pick the service with the command:
#   docker run --rm -p 8101:8101 -e VIGIL_HTTP_HOST=0.0.0.0 -e VIGIL_HTTP_PORT=8101 vigil:local python -m vigil.registry
# docker-compose.yml and infra/k8s/ do exactly that for registry, scheduler, trainer, deployer, monitor, auditor.
# See docs/deploy.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------------------------------
# build: a virtualenv with the project installed (non-editable) and its dependencies
# ---------------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/vigil/venv
ENV PATH=/opt/vigil/venv/bin:$PATH

WORKDIR /src

# Dependencies first, from pyproject.toml alone, so a source change does not reinstall numpy/numba/scipy.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --upgrade pip \
    && pip install -r /tmp/requirements.txt

# Then the project itself. Non-editable: the wheel carries libs/vigil, services/vigil and schemas/ (as vigil/_schemas).
COPY README.md ./
COPY schemas ./schemas
COPY libs ./libs
COPY services ./services
RUN pip install . && pip check

# ---------------------------------------------------------------------------------------------------------------------
# runtime
# ---------------------------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG VIGIL_UID=10001
ARG VIGIL_GID=10001

LABEL org.opencontainers.image.title="vigil" \
      org.opencontainers.image.description="Vigil MLOps control plane: registry, scheduler, trainer, deployer, monitor, auditor" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/vigil/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    NUMBA_CACHE_DIR=/opt/vigil/numba-cache \
    VIGIL_HOME=/var/lib/vigil \
    VIGIL_HTTP_HOST=0.0.0.0

RUN groupadd --system --gid ${VIGIL_GID} vigil \
    && useradd --system --uid ${VIGIL_UID} --gid ${VIGIL_GID} --home-dir /var/lib/vigil --shell /usr/sbin/nologin vigil \
    && mkdir -p /var/lib/vigil/artifacts /opt/vigil/numba-cache \
    && chown -R vigil:vigil /var/lib/vigil /opt/vigil/numba-cache

COPY --from=build /opt/vigil/venv /opt/vigil/venv
COPY infra/docker/warm_numba.py /opt/vigil/warm_numba.py

USER ${VIGIL_UID}:${VIGIL_GID}
WORKDIR /var/lib/vigil

# Compile the numba kernels once at build time into NUMBA_CACHE_DIR, so no container pays the JIT cost on its first
# request. The cache is keyed by CPU: on a host with a different CPU numba recompiles once and writes the new entry
# beside the old one, which is why the directory stays writable by the service user.
RUN python /opt/vigil/warm_numba.py

# Ports of the six services (DESIGN §8); each container listens on the one in VIGIL_HTTP_PORT.
EXPOSE 8101 8102 8103 8104 8105 8106

# Overridden per service: python -m vigil.<registry|scheduler|trainer|deployer|monitor|auditor>
CMD ["vigil", "--help"]
