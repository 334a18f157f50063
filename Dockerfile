# The segbatch image: the command line, the Celery worker and the published model
# versions, without the training toolchain (no torch).
#
#   docker build -t segbatch:0.1.0 .
#   docker run --rm segbatch:0.1.0 --help
#
# CPU sizing: a worker runs SEGBATCH_WORKER_CONCURRENCY processes and each process
# holds one compiled OpenVINO model. Give a container about one core per process
# (4 processes -> 4 CPUs) and about 1 GiB of memory per process. The numeric
# libraries below are held to one thread each, so that decoding and NumPy work in
# one process does not compete with the model of another.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY segbatch/ segbatch/
COPY workers/ workers/
COPY producer/ producer/
COPY schema/ schema/
COPY models/ models/

RUN --mount=type=cache,target=/root/.cache/pip \
    pip install .


FROM ${PYTHON_IMAGE} AS runtime

RUN groupadd --system --gid 10001 segbatch \
    && useradd --system --uid 10001 --gid segbatch \
       --home-dir /home/segbatch --create-home --shell /usr/sbin/nologin segbatch

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMP_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    MKL_NUM_THREADS=1

USER 10001:10001
WORKDIR /home/segbatch

# The worker stops on SIGTERM with a warm shutdown: it takes no new batch and
# finishes the running ones, so give it longer than a batch may take to stop.
STOPSIGNAL SIGTERM
ENTRYPOINT ["segbatch"]
CMD ["worker"]
