# mdmbot image: `mdmbot serve` on Python 3.11, as a non-root user, data in the /data volume.
#
#   docker build -t mdmbot .
#   # Socket Mode (the default command; needs SLACK_APP_TOKEN):
#   docker run -d --name mdmbot --env-file .env -v mdmbot-data:/data mdmbot
#   # HTTP mode (Slack POSTs to https://<host>/slack/events; put TLS in front of it):
#   docker run -d --name mdmbot --env-file .env -v mdmbot-data:/data -p 3000:3000 \
#       mdmbot mdmbot serve --http
#
# HTTP mode runs one worker process per core (MDMBOT_WORKERS=auto; Socket Mode always runs one).
# /metrics listens on 127.0.0.1:9464 inside the container; to scrape it from outside set
# MDMBOT_METRICS_HOST=0.0.0.0 and publish it only where Prometheus can reach it, e.g.
# -p 127.0.0.1:9464:9464 (it names your servers: never expose it publicly).
#
# Health check: in HTTP mode and with --no-slack it GETs http://127.0.0.1:$PORT/healthz
# (database state; anything but 200 marks the container unhealthy) and prints one line, never a
# traceback. Socket Mode serves no HTTP, so there the check passes without probing. Which mode
# is running is read from PID 1's command line (`--http` or `--no-slack` present or not;
# `docker run --init` and compose `init: true` keep the command in it), or set MDMBOT_MODE=http
# or MDMBOT_MODE=socket to say it outright. Set PORT rather than `--port`, so that the server
# and the check agree.
#
# The command line runs in the container too, with files going in and out through a mounted
# directory (see docs/operations.md, "Docker"):
#   mkdir -p handoff && cp jamf.pem handoff/ && sudo chown 10001 handoff
#   docker run --rm -it --env-file .env -v mdmbot-data:/data -v "$PWD/handoff:/handoff" \
#       mdmbot mdmbot server add "Jamf Pro" --cert /handoff/jamf.pem --out /handoff/
#
# Reproducible build: every dependency, with the setuptools that builds mdmbot itself, is
# pinned with hashes in requirements.lock and installed from wheels only. Regenerate the lock
# after changing dependencies in pyproject.toml (pip-tools, Python 3.11, PyPI):
#   pip-compile --generate-hashes --allow-unsafe --strip-extras --all-build-deps \
#       --no-emit-index-url --no-emit-find-links --output-file=requirements.lock pyproject.toml
# For a fully pinned base too, replace the tag below with its digest (python:3.11…@sha256:…).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
RUN python -m venv /opt/mdmbot
WORKDIR /src
COPY requirements.lock ./
RUN /opt/mdmbot/bin/pip install --require-hashes --only-binary=:all: --no-deps \
        -r requirements.lock
COPY pyproject.toml README.md ./
COPY core ./core
COPY bot ./bot
RUN /opt/mdmbot/bin/pip install --no-deps --no-build-isolation . \
    && /opt/mdmbot/bin/pip check \
    && /opt/mdmbot/bin/pip uninstall --yes setuptools \
    && /opt/mdmbot/bin/python -m pip uninstall --yes pip

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="mdmbot" \
      org.opencontainers.image.description="Slack bot that links MDM servers in Apple School Manager and keeps their server tokens alive"
ENV PATH=/opt/mdmbot/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MDMBOT_DATA_DIR=/data \
    MDMBOT_WORKERS=auto \
    PORT=3000
# Nothing installs packages at run time: drop the base image's pip and setuptools (24 MB).
RUN rm -rf /usr/local/lib/python3.*/site-packages/pip /usr/local/lib/python3.*/site-packages/pip-* \
        /usr/local/lib/python3.*/site-packages/setuptools \
        /usr/local/lib/python3.*/site-packages/setuptools-* \
        /usr/local/lib/python3.*/site-packages/_distutils_hack \
        /usr/local/lib/python3.*/site-packages/distutils-precedence.pth \
        /usr/local/lib/python3.*/site-packages/wheel /usr/local/lib/python3.*/site-packages/wheel-* \
        /usr/local/bin/pip /usr/local/bin/pip3* /usr/local/bin/wheel \
    && groupadd --system --gid 10001 mdmbot \
    && useradd --system --uid 10001 --gid mdmbot --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin mdmbot \
    && mkdir -p /data \
    && chown mdmbot:mdmbot /data \
    && chmod 0700 /data
COPY --from=build /opt/mdmbot /opt/mdmbot
# The SQLite database (when MDMBOT_DATABASE_URL is unset) and the generated vault key
# (when MDMBOT_SECRET_KEY is unset) live here; a .env placed here is read too.
VOLUME ["/data"]
WORKDIR /data
USER 10001:10001
EXPOSE 3000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u\ncommand = open('/proc/1/cmdline', 'rb').read().split(b'\\0')\nmode = os.environ.get('MDMBOT_MODE') or ('http' if {b'--http', b'--no-slack'} & set(command) else 'socket')\nif mode != 'http':\n    print('socket mode: no HTTP to probe'); sys.exit(0)\nurl = 'http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3000')\ntry:\n    u.urlopen(url, timeout=4).read()\nexcept Exception as exc:\n    print('unhealthy: %s: %s' % (url, getattr(exc, 'reason', None) or exc)); sys.exit(1)\nprint('healthy: %s' % url)"]
CMD ["mdmbot", "serve"]
