"""The deployment files agree with segbatch: Compose, the Dockerfile, Kubernetes.

No container engine or cluster is needed: the files are parsed and held against
what segbatch itself reads (its command line, settings and defaults), and the
worker health check is run against a real Celery worker on the local Redis.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from sqlalchemy.engine import make_url

from segbatch import defaults
from segbatch.config import _ENV_FIELDS, load_settings
from segbatch.uris import parse_s3_uri

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
K8S_DIR = REPO / "deploy" / "kubernetes"
SECRET_EXAMPLE = K8S_DIR / "secret.example.yaml"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
PACKAGE_DIRS = set(PYPROJECT["tool"]["setuptools"]["package-dir"].values())
IMAGE_NAME = "segbatch"


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def split_image(image: str) -> tuple[str, str | None]:
    """``name`` and ``tag`` of an image reference (the tag is None when absent)."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = name.rsplit(":", 1)
        return name, tag
    return name, digest or None


# --- Compose ------------------------------------------------------------------------

COMPOSE = load_documents(COMPOSE_FILE)[0]
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
IMAGE_SERVICES = {
    name: service
    for name, service in SERVICES.items()
    if split_image(service.get("image", ""))[0] == IMAGE_NAME
}
_INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}")


def interpolate(value: object) -> str:
    """A Compose value with every ``${NAME:-default}`` at its local default."""
    text = _INTERPOLATION.sub(lambda match: match["default"] or "", str(value))
    return text.replace("$$", "$")


def compose_environment(service: Mapping[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    return {name: interpolate(value) for name, value in environment.items()}


def duration_s(text: str) -> float:
    """Seconds of a Compose duration such as ``11m30s``."""
    units_s = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert "".join(number + unit for number, unit in parts) == text, text
    return sum(float(number) * units_s[unit] for number, unit in parts)


# --- Kubernetes ---------------------------------------------------------------------

KUSTOMIZATION = load_documents(K8S_DIR / "kustomization.yaml")[0]
RESOURCES = [
    doc for file in KUSTOMIZATION["resources"] for doc in load_documents(K8S_DIR / file)
]
EXAMPLE_SECRETS = {
    doc["metadata"]["name"]: doc for doc in load_documents(SECRET_EXAMPLE)
}


def resources_of(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in RESOURCES if doc["kind"] == kind]


def pod_spec(resource: Mapping[str, Any]) -> dict[str, Any]:
    if resource["kind"] == "CronJob":
        return resource["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return resource["spec"]["template"]["spec"]


WORKLOADS = [
    doc for doc in RESOURCES if doc["kind"] in ("Deployment", "Job", "CronJob")
]
CONTAINERS = {
    f"{workload['kind']}/{workload['metadata']['name']}/{container['name']}": container
    for workload in WORKLOADS
    for container in pod_spec(workload)["containers"]
}
(WORKER,) = resources_of("Deployment")
(WORKER_CONTAINER,) = pod_spec(WORKER)["containers"]
(SCALED_OBJECT,) = resources_of("ScaledObject")
(QUEUE_TRIGGER,) = SCALED_OBJECT["spec"]["triggers"]


def container_environment(container: Mapping[str, Any]) -> dict[str, str | None]:
    """Every variable a container gets, by name; None where it comes from a ref."""
    environment: dict[str, str | None] = {}
    for source in container.get("envFrom", ()):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            (config_map,) = [
                doc
                for doc in resources_of("ConfigMap")
                if doc["metadata"]["name"] == name
            ]
            environment.update(config_map["data"])
        else:
            environment.update(
                EXAMPLE_SECRETS[source["secretRef"]["name"]]["stringData"]
            )
    for variable in container.get("env", ()):
        environment[variable["name"]] = variable.get("value")
    return environment


# --- What segbatch and boto3 read ---------------------------------------------------


def cli_root() -> Any:
    """The segbatch command group (typer may carry its own copy of click)."""
    cli = pytest.importorskip("segbatch.cli")
    from typer.main import get_command

    return get_command(cli.app)


def cli_command(argv: list[str]) -> Any:
    """The segbatch command that ``argv`` runs.

    Raises:
        ValueError: ``argv`` names no command, or the command refuses its arguments.
    """
    command, args = cli_root(), list(argv)
    while hasattr(command, "commands"):
        if not args or args[0].startswith("-"):
            raise ValueError(f"{argv} names no segbatch command")
        name, *args = args
        if name not in command.commands:
            raise ValueError(f"segbatch has no command {name!r} ({argv})")
        command = command.commands[name]
    try:
        command.make_context(command.name, args).close()
    except Exception as exc:  # click's usage errors, from whichever click typer uses
        raise ValueError(f"segbatch refuses {argv}: {exc}") from exc
    return command


def cli_env_vars() -> set[str]:
    names: set[str] = set()
    pending = [cli_root()]
    while pending:
        command = pending.pop()
        pending.extend(getattr(command, "commands", {}).values())
        for parameter in command.params:
            envvar = parameter.envvar or ()
            names.update([envvar] if isinstance(envvar, str) else envvar)
    return names


def boto3_reads(name: str) -> bool:
    from botocore.configprovider import (
        BOTOCORE_DEFAUT_SESSION_VARIABLES,
        ConfiguredEndpointProvider,
    )
    from botocore.credentials import EnvProvider

    session_names: set[str] = {EnvProvider.ACCESS_KEY, EnvProvider.SECRET_KEY}
    session_names.update(EnvProvider.TOKENS)
    for _, envvar, *_ in BOTOCORE_DEFAUT_SESSION_VARIABLES.values():
        session_names.update([envvar] if isinstance(envvar, str) else envvar or ())
    probe = "http://probe.invalid"
    endpoint = ConfiguredEndpointProvider({}, {}, "s3", environ={name: probe})
    return name in session_names or endpoint.provide() == probe


def is_known_env_var(name: str) -> bool:
    return name in _ENV_FIELDS or name in cli_env_vars() or boto3_reads(name)


@pytest.mark.parametrize(
    "argv",
    [["no-such-command"], ["worker", "--no-such-option"], ["enqueue"], ["db"], []],
)
def test_an_argument_list_segbatch_would_refuse_is_caught(argv):
    with pytest.raises(ValueError, match="segbatch"):
        cli_command(argv)


# --- Every file ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [COMPOSE_FILE, *sorted(K8S_DIR.glob("*.yaml"))],
    ids=lambda path: path.relative_to(REPO).as_posix(),
)
def test_every_deployment_file_parses_as_yaml_mappings(path):
    documents = load_documents(path)

    assert documents
    assert all(isinstance(doc, dict) and doc for doc in documents)


def all_images() -> Iterator[tuple[str, str]]:
    for name, service in SERVICES.items():
        yield f"compose/{name}", service["image"]
    for where, container in CONTAINERS.items():
        yield where, container["image"]
    arguments = dict(dockerfile_args())
    for instruction, value in dockerfile_instructions():
        if instruction == "FROM":
            image = value.split()[0]
            for name, default in arguments.items():
                image = image.replace(f"${{{name}}}", default)
            if image not in dockerfile_stages():
                yield "Dockerfile", image


def test_every_image_is_pinned_to_a_version():
    unpinned = [
        (where, image)
        for where, image in all_images()
        if split_image(image)[1] in (None, "latest")
    ]

    assert not unpinned


def test_the_segbatch_image_carries_the_project_version():
    tags = {split_image(service["image"])[1] for service in IMAGE_SERVICES.values()}
    tags |= {split_image(container["image"])[1] for container in CONTAINERS.values()}
    (kustomized,) = [i for i in KUSTOMIZATION["images"] if i["name"] == IMAGE_NAME]

    assert tags == {PROJECT["version"]}
    assert kustomized["newTag"] == PROJECT["version"]


# --- Compose ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(IMAGE_SERVICES))
def test_each_compose_service_on_the_image_runs_a_segbatch_command(name):
    command = cli_command(IMAGE_SERVICES[name]["command"])

    assert command.callback is not None


@pytest.mark.parametrize(
    ("name", "dependency", "condition"),
    [
        (name, dependency, wait["condition"])
        for name, service in SERVICES.items()
        for dependency, wait in service.get("depends_on", {}).items()
    ],
)
def test_a_compose_service_waits_only_for_what_can_report_it(
    name, dependency, condition
):
    target = SERVICES[dependency]

    if condition == "service_healthy":
        assert target["healthcheck"]["test"] not in (["NONE"], "NONE")
    else:
        assert condition == "service_completed_successfully"
        assert target.get("restart", "no") == "no"
        assert "replicas" not in target.get("deploy", {})


def test_compose_runs_at_least_two_workers_that_report_their_health():
    worker = SERVICES["worker"]

    concurrency = compose_environment(worker)["SEGBATCH_WORKER_CONCURRENCY"]
    cpus = worker["deploy"]["resources"]["limits"]["cpus"]

    assert worker["deploy"]["replicas"] >= 2
    assert worker["healthcheck"]["test"][0] == "CMD-SHELL"
    assert 1 <= int(concurrency) <= float(cpus)
    assert "SEGBATCH_WORKER_CONCURRENCY" in cli_env_vars()


@pytest.mark.parametrize(
    ("where", "grace_s"),
    [
        ("compose", duration_s(SERVICES["worker"]["stop_grace_period"])),
        ("kubernetes", pod_spec(WORKER)["terminationGracePeriodSeconds"]),
    ],
)
def test_a_stopping_worker_has_longer_than_a_task_to_finish_it(where, grace_s):
    assert grace_s > defaults.TASK_TIME_LIMIT_S


def segbatch_environments() -> Iterator[tuple[str, dict[str, str | None]]]:
    for name, service in IMAGE_SERVICES.items():
        yield f"compose/{name}", dict(compose_environment(service))
    for where, container in CONTAINERS.items():
        yield where, container_environment(container)


@pytest.mark.parametrize(
    ("where", "variable"),
    [(where, name) for where, env in segbatch_environments() for name in sorted(env)],
)
def test_every_variable_given_to_segbatch_is_one_segbatch_or_boto3_reads(
    where, variable
):
    assert is_known_env_var(variable), f"{where} sets {variable}, which nothing reads"


@pytest.mark.parametrize("where", [where for where, _ in segbatch_environments()])
def test_the_settings_given_to_every_segbatch_container_are_valid(where):
    environment = dict(segbatch_environments())[where]
    given = {name: value for name, value in environment.items() if value is not None}

    load_settings(given)


def test_compose_points_segbatch_at_the_compose_services():
    environment = compose_environment(SERVICES["worker"])
    postgres = compose_environment(SERVICES["postgres"])
    minio = compose_environment(SERVICES["minio"])

    database = make_url(environment["SEGBATCH_DATABASE_URL"])
    assert (database.host, database.username, database.password, database.database) == (
        "postgres",
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        postgres["POSTGRES_DB"],
    )
    assert urlsplit(environment["SEGBATCH_BROKER_URL"]).hostname == "redis"
    assert urlsplit(environment["AWS_ENDPOINT_URL"]).hostname == "minio"
    assert environment["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert environment["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    assert environment["SEGBATCH_S3_ADDRESSING_STYLE"] == "path"


def test_the_compose_producer_runs_on_demand_on_a_bucket_that_is_created():
    producer = SERVICES["producer"]
    init_command = SERVICES["minio-init"]["command"]
    created = {arg.split("/", 1)[1] for arg in init_command if arg.startswith("local/")}
    uris = [arg for arg in producer["command"] if arg.startswith("s3://")]

    assert "tools" in producer["profiles"]
    assert uris
    assert {parse_s3_uri(uri).bucket for uri in uris} <= created


def test_compose_redis_keeps_the_queue_on_disk_and_never_evicts_it():
    command = SERVICES["redis"]["command"]
    options = dict(zip(command[1::2], command[2::2], strict=True))

    assert options["--appendonly"] == "yes"
    assert options["--maxmemory-policy"] == "noeviction"


def test_docker_compose_accepts_the_file():
    docker = shutil.which("docker")
    if (
        docker is None
        or subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False
        ).returncode
    ):
        pytest.skip("the docker compose client is not installed")

    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr


# --- Dockerfile ---------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    instructions, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        instruction, _, arguments = (current + stripped).partition(" ")
        instructions.append((instruction.upper(), arguments.strip()))
        current = ""
    return instructions


def dockerfile_args() -> list[tuple[str, str]]:
    return [
        tuple(value.split("=", 1))  # type: ignore[misc]
        for instruction, value in dockerfile_instructions()
        if instruction == "ARG" and "=" in value
    ]


def dockerfile_stages() -> set[str]:
    return {
        value.split()[-1]
        for instruction, value in dockerfile_instructions()
        if instruction == "FROM" and " AS " in value.upper()
    }


def dockerfile_values(instruction: str) -> list[str]:
    return [value for name, value in dockerfile_instructions() if name == instruction]


def dockerfile_env() -> dict[str, str]:
    pairs = [item for value in dockerfile_values("ENV") for item in shlex.split(value)]
    return dict(pair.split("=", 1) for pair in pairs)


def context_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context."""
    copies = []
    for value in dockerfile_values("COPY"):
        words = [word for word in value.split() if not word.startswith("--")]
        if "--from=" not in value:
            copies.append((words[:-1], words[-1]))
    return copies


def dockerignore_includes(relative: str) -> bool:
    """Whether Docker sends ``relative`` (a path in the repository) to the build."""
    included = True
    for line in DOCKERIGNORE.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        regex = _docker_pattern_regex(pattern.lstrip("!").strip("/"))
        path = Path(relative)
        if any(regex.fullmatch(p.as_posix()) for p in (path, *path.parents[:-1])):
            included = negated
    return included


def _docker_pattern_regex(pattern: str) -> re.Pattern[str]:
    regex = pattern.replace(".", r"\.").replace("**/", "\0").replace("**", "\1")
    regex = regex.replace("*", "[^/]*").replace("?", "[^/]")
    return re.compile(regex.replace("\0", "(?:.*/)?").replace("\1", ".*"))


def test_the_image_is_built_from_every_package_folder_and_the_readme():
    copied = {
        source.strip("/") for sources, _ in context_copies() for source in sources
    }
    needed = {"pyproject.toml", PROJECT["readme"], *PACKAGE_DIRS}
    moved = [
        (sources, destination)
        for sources, destination in context_copies()
        if destination.strip("/") not in (".", *(s.strip("/") for s in sources))
    ]

    assert needed <= copied
    assert moved == [], "the project layout must stay as it is for pip install ."


def test_the_build_context_holds_the_sources_and_nothing_else():
    copied = {
        source.strip("/") for sources, _ in context_copies() for source in sources
    }
    sources = [
        path.relative_to(REPO).as_posix()
        for top in copied
        for path in [REPO / top, *(REPO / top).rglob("*")]
        if path.is_file() and "__pycache__" not in path.parts
    ]
    others = [entry.name for entry in REPO.iterdir() if entry.name not in copied]

    assert sources
    assert [path for path in sources if not dockerignore_includes(path)] == []
    assert [name for name in others if dockerignore_includes(name)] == []


def test_the_image_runs_the_worker_by_default_as_a_user_other_than_root():
    (entrypoint,) = dockerfile_values("ENTRYPOINT")
    (command,) = dockerfile_values("CMD")
    (user,) = dockerfile_values("USER")

    assert yaml.safe_load(entrypoint) == ["segbatch"]
    assert cli_command(yaml.safe_load(command)).name == "worker"
    assert user.split(":")[0] not in ("root", "0")


def test_the_image_installs_no_part_of_the_training_toolchain():
    def names(requirements: list[str]) -> set[str]:
        return {
            re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in requirements
        }

    installs = [v for v in dockerfile_values("RUN") if "pip install" in v]
    training_only = names(PROJECT["optional-dependencies"]["train"])

    assert installs and not any("train" in value for value in installs)
    assert not names(PROJECT["dependencies"]) & training_only


# --- Kubernetes ---------------------------------------------------------------------


def test_the_kustomization_lists_every_manifest_and_only_existing_ones():
    manifests = {
        path.name
        for path in K8S_DIR.glob("*.yaml")
        if path.name != "kustomization.yaml" and not path.name.endswith(".example.yaml")
    }

    assert sorted(KUSTOMIZATION["resources"]) == sorted(manifests)


def test_kubectl_builds_the_kustomization_into_one_namespace():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")

    result = subprocess.run(
        [kubectl, "kustomize", str(K8S_DIR)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    built = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    (namespace,) = [
        doc["metadata"]["name"] for doc in built if doc["kind"] == "Namespace"
    ]
    assert len(built) == len(RESOURCES)
    assert {
        doc["metadata"]["namespace"] for doc in built if doc["kind"] != "Namespace"
    } == {namespace}


def test_keda_scales_the_workers_on_the_celery_queue():
    metadata = QUEUE_TRIGGER["metadata"]

    assert QUEUE_TRIGGER["type"] == "redis"
    assert metadata["listName"] == defaults.QUEUE_NAME
    assert int(metadata["listLength"]) >= 1
    assert int(metadata["activationListLength"]) >= 0
    assert SCALED_OBJECT["spec"]["scaleTargetRef"]["name"] == WORKER["metadata"]["name"]
    assert "replicas" not in WORKER["spec"]


def test_keda_watches_the_redis_database_the_workers_consume():
    broker = urlsplit(container_environment(WORKER_CONTAINER)["SEGBATCH_BROKER_URL"])
    metadata = QUEUE_TRIGGER["metadata"]
    (auth,) = [
        doc
        for doc in resources_of("TriggerAuthentication")
        if doc["metadata"]["name"] == QUEUE_TRIGGER["authenticationRef"]["name"]
    ]

    assert metadata["address"] == f"{broker.hostname}:{broker.port}"
    assert int(metadata["databaseIndex"]) == int(broker.path.strip("/") or 0)
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["key"] in EXAMPLE_SECRETS[ref["name"]]["stringData"]


def test_the_queue_the_producer_allows_can_occupy_every_worker_keda_may_start():
    environment = container_environment(WORKER_CONTAINER)
    settings = load_settings({k: v for k, v in environment.items() if v is not None})
    per_pod = int(QUEUE_TRIGGER["metadata"]["listLength"])
    spec = SCALED_OBJECT["spec"]

    assert 0 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
    assert math.ceil(settings.max_queued_batches / per_pod) >= spec["maxReplicaCount"]


@pytest.mark.parametrize("where", sorted(CONTAINERS))
def test_each_kubernetes_container_runs_a_segbatch_command(where):
    container = CONTAINERS[where]

    assert container.get("command", ["segbatch"]) == ["segbatch"]
    assert cli_command(container["args"]).callback is not None


@pytest.mark.parametrize("where", sorted(CONTAINERS))
def test_each_kubernetes_container_has_cpu_and_memory_requests_and_limits(where):
    resources = CONTAINERS[where]["resources"]

    for bound in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(resources[bound])


def test_a_worker_gets_whole_cores_and_runs_one_process_per_core():
    resources = WORKER_CONTAINER["resources"]
    (concurrency,) = [
        variable
        for variable in WORKER_CONTAINER["env"]
        if variable["name"] == "SEGBATCH_WORKER_CONCURRENCY"
    ]
    field = concurrency["valueFrom"]["resourceFieldRef"]

    assert resources["requests"]["cpu"] == resources["limits"]["cpu"]
    assert float(resources["limits"]["cpu"]).is_integer()
    assert (field["resource"], str(field["divisor"])) == ("limits.cpu", "1")
    assert field["containerName"] == WORKER_CONTAINER["name"]
    assert "SEGBATCH_WORKER_CONCURRENCY" in cli_env_vars()


def test_the_worker_pods_have_probes_and_a_disruption_budget():
    labels = WORKER["spec"]["template"]["metadata"]["labels"]
    (budget,) = resources_of("PodDisruptionBudget")

    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert WORKER_CONTAINER[probe]["exec"]["command"]
    assert WORKER["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_nightly_backfill_never_runs_twice_at_once():
    (backfill,) = resources_of("CronJob")
    (container,) = pod_spec(backfill)["containers"]

    assert backfill["spec"]["concurrencyPolicy"] == "Forbid"
    assert cli_command(container["args"]).name == "enqueue"


def test_a_job_migrates_the_database():
    (job,) = resources_of("Job")
    (container,) = pod_spec(job)["containers"]

    assert cli_command(container["args"]).name == "upgrade"


# --- The worker health check, against a real Celery worker --------------------------


def health_checks() -> dict[str, str]:
    """The worker's distinct health check command lines, named by where they run."""
    places_by_line: dict[str, list[str]] = {}
    compose_line = SERVICES["worker"]["healthcheck"]["test"][1].replace("$$", "$")
    places_by_line[compose_line] = ["compose"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        shell, flag, line = WORKER_CONTAINER[probe]["exec"]["command"]
        assert (shell, flag) == ("sh", "-c")
        places_by_line.setdefault(line, []).append(probe)
    return {" ".join(places): line for line, places in places_by_line.items()}


@pytest.fixture(scope="module")
def celery_node(producer_broker_url):
    """The host name of a Celery worker, named as a container's would be."""
    from segbatch.config import Settings
    from segbatch.workers.celery_app import make_celery

    host = f"segbatch-test-{uuid.uuid4().hex[:12]}"
    environment = {**os.environ, "SEGBATCH_BROKER_URL": producer_broker_url}
    worker = subprocess.Popen(
        [
            *(sys.executable, "-m", "celery", "-A", "segbatch.workers.celery_app:app"),
            *(
                "worker",
                "--pool",
                "solo",
                "--queues",
                host,
                "--hostname",
                f"celery@{host}",
            ),
            *("--without-gossip", "--without-mingle", "--loglevel", "WARNING"),
        ],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    control = make_celery(Settings(broker_url=producer_broker_url)).control
    try:
        deadline = time.monotonic() + 30.0
        while not control.ping(destination=[f"celery@{host}"], timeout=1.0):
            assert worker.poll() is None and time.monotonic() < deadline
        yield host
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def run_check(line: str, host: str, broker_url: str) -> int:
    bin_dir = str(Path(sys.executable).parent)
    environment = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOSTNAME": host,
        "SEGBATCH_BROKER_URL": broker_url,
    }
    return subprocess.run(["sh", "-c", line], env=environment, check=False).returncode


@pytest.mark.slow
@pytest.mark.parametrize("where", sorted(health_checks()))
def test_the_worker_health_check_passes_while_its_node_answers(
    where, celery_node, producer_broker_url
):
    assert run_check(health_checks()[where], celery_node, producer_broker_url) == 0


@pytest.mark.slow
@pytest.mark.parametrize("where", sorted(health_checks()))
def test_the_worker_health_check_fails_when_only_another_node_answers(
    where, celery_node, producer_broker_url
):
    # The node that is asked for never answers: wait one second, not the whole
    # reply timeout of the real check.
    line, changes = re.subn(r"--timeout \d+", "--timeout 1", health_checks()[where])
    other = f"{celery_node}-gone"

    assert changes == 1
    assert run_check(line, other, producer_broker_url) != 0
