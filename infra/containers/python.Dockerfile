# The local stand-in for the public python:3.11-slim image (infra/Dockerfile's default
# BASE): Debian's Python 3.11 on a locally bootstrapped bookworm, with `python` on the PATH.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/python3 /usr/local/bin/python
CMD ["python3"]
