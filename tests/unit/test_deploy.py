"""The deployment files in infra/deploy/ agree with the settings, the CLI, the topics and the web pages.

No container engine runs here: the files are parsed (PyYAML) and every name in them is checked against
the code it names: WARDEN_* variables are real settings whose values load, commands are real `warden`
commands, probes hit pages the worker serves, ports match the web port, topics match `Topics`.
"""

from __future__ import annotations

import re
import secrets
import shlex
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, SecretStr

from warden.infra.cli.main import _parser
from warden.serving.worker import web
from warden.serving.worker.metrics import WorkerStats
from warden.streams.exceptions import SettingsError
from warden.streams.settings import SECRETS_DIR, WardenSettings, load_settings
from warden.streams.topics import Topics

DEPLOY = Path(__file__).resolve().parents[2] / "infra" / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
#: The secret keys the settings check for strength (the deploy files ship stand-ins for them).
KEY_VARIABLES = (
    "WARDEN_PRIVACY__HMAC_KEY",
    "WARDEN_FEEDBACK__KEY_USER_REPORT",
    "WARDEN_FEEDBACK__KEY_OPS_REVIEW",
    "WARDEN_FEEDBACK__KEY_APPEAL",
    "WARDEN_FEEDBACK__KEY_AUTO",
    "WARDEN_FEEDBACK__TRAINING_EXAMPLE_KEY",
    "WARDEN_SERVING__SCORE_TOKEN",
)
#: What the real Secrets would hold: a key from `warden keygen` for each.
REAL_KEYS = {name: secrets.token_hex(32) for name in KEY_VARIABLES}


def _manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path != COMPOSE:
            docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def _of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in _manifests() if doc["kind"] == kind]


def _pod_specs() -> Iterator[dict[str, Any]]:
    for doc in _manifests():
        spec = doc.get("spec", {})
        if doc["kind"] == "CronJob":
            yield spec["jobTemplate"]["spec"]["template"]["spec"]
        elif doc["kind"] in ("Deployment", "Job"):
            yield spec["template"]["spec"]


def _containers() -> Iterator[dict[str, Any]]:
    for spec in _pod_specs():
        yield from spec.get("initContainers", [])
        yield from spec["containers"]


def _is_setting(name: str) -> bool:
    """Whether ``WARDEN_A__B`` names a leaf field of the settings (``a.b``)."""
    parts = name.removeprefix("WARDEN_").lower().split("__")
    model: type[BaseModel] = WardenSettings
    for index, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        is_part = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        if index == len(parts) - 1:
            return not is_part
        if not is_part:
            return False
        model = annotation  # type: ignore[assignment]
    return False


def _secret_variables() -> set[str]:
    """Every setting that is a secret (a ``SecretStr``, and Redis Cluster node URLs, which may carry
    a password): none may reach a pod through its environment."""
    out = {"WARDEN_REDIS__CLUSTER_NODES"}
    for part_name, part in WardenSettings.model_fields.items():
        annotation = part.annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            continue
        for name, field in annotation.model_fields.items():
            if SecretStr in (field.annotation, *getattr(field.annotation, "__args__", ())):
                out.add(f"WARDEN_{part_name.upper()}__{name.upper()}")
    return out


def _settings_from(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, files: dict[str, str] | None = None
) -> WardenSettings:
    """The settings a container loads from ``env`` and, as secret files, ``files`` (name -> value)."""
    import os

    for name in list(os.environ):
        if name.startswith("WARDEN_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with tempfile.TemporaryDirectory() as directory:
        for name, value in (files or {}).items():
            path = Path(directory) / name
            path.write_text(value + "\n")
            path.chmod(0o440)  # what defaultMode 0440 gives a pod
        return load_settings(secrets_dir=Path(directory))


def _named(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in _of_kind(kind)}


def _k8s_settings(monkeypatch: pytest.MonkeyPatch, command: str = "worker") -> WardenSettings:
    env, files = _k8s(command)
    return _settings_from(env, monkeypatch, files)


def _compose_settings(monkeypatch: pytest.MonkeyPatch, service: str = "worker") -> WardenSettings:
    return _settings_from(_compose_env(service), monkeypatch, _compose_secret_files(service))


def _deployed_settings(source: str, monkeypatch: pytest.MonkeyPatch) -> WardenSettings:
    return _k8s_settings(monkeypatch) if source == "kubernetes" else _compose_settings(monkeypatch)


def _container_env(container: dict[str, Any]) -> dict[str, str]:
    """The WARDEN_* environment of a container: its ConfigMaps and its own ``env`` entries."""
    configs = _named("ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configs[source["configMapRef"]["name"]]["data"])
    env.update({entry["name"]: entry["value"] for entry in container.get("env", []) if "value" in entry})
    return env


def _container_files(container: dict[str, Any], real_keys: bool = True) -> dict[str, str]:
    """The secret files a container finds in SECRETS_DIR, as shipped or with real keys for the stand-ins."""
    stored = _named("Secret")
    files: dict[str, str] = {}
    for name in _secret_mounts(container).get(str(SECRETS_DIR), ()):
        files.update(stored[name]["stringData"])
    if real_keys:
        files.update({name: REAL_KEYS[name] for name in KEY_VARIABLES if name in files})
    return files


def _container(command: str) -> dict[str, Any]:
    (found,) = [c for c in _containers() if c["command"][1] == command]
    return found


def _k8s(command: str = "worker") -> tuple[dict[str, str], dict[str, str]]:
    """The environment and the secret files of the container running ``warden <command>``."""
    container = _container(command)
    return _container_env(container), _container_files(container)


def _compose_secret_files(service: str) -> dict[str, str]:
    """The secret files a compose service finds in SECRETS_DIR, with real keys (compose reads them from
    the shell that starts it)."""
    top = _compose()["secrets"]
    files = {}
    for entry in _compose()["services"][service].get("secrets", []):
        if isinstance(entry, dict) and Path(entry["target"]).parent == SECRETS_DIR:
            variable = top[entry["source"]]["environment"]
            assert Path(entry["target"]).name == variable, "the file is named like its setting"
            files[variable] = REAL_KEYS.get(variable, secrets.token_hex(32))
    return files


def _compose_env(service: str = "worker") -> dict[str, str]:
    env = {k: str(v) for k, v in _compose()["services"][service]["environment"].items()}
    assert not any(value.startswith("${") for value in env.values()), "no secret in compose's environment"
    return env


def test_every_file_parses_and_every_warden_variable_is_a_setting() -> None:
    names: set[str] = set()
    for doc in _manifests():
        names |= set(doc.get("data", {})) | set(doc.get("stringData", {}))
    for container in _containers():
        names |= {entry["name"] for entry in container.get("env", [])}
    for service in _compose()["services"].values():
        names |= set(service.get("environment", {}))
    warden = {n for n in names if n.startswith("WARDEN_")}
    assert len(warden) > 15
    assert not {n for n in warden if not _is_setting(n)}
    assert not _is_setting("WARDEN_KAFKA__NO_SUCH_THING")


@pytest.mark.parametrize("source", ["kubernetes", "compose"])
def test_the_deployed_settings_load_as_production(source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _deployed_settings(source, monkeypatch)
    assert settings.environment == "production"
    assert settings.kafka.acks == "all"
    assert settings.kafka.enable_idempotence
    assert settings.kafka.isolation_level == "read_committed"
    assert settings.kafka.retention_hours == 30 * 24
    assert settings.kafka.compression_type == "gzip"
    assert settings.worker.web_host == "0.0.0.0"
    if source == "kubernetes":
        assert settings.kafka.replication_factor == 3
        assert settings.kafka.min_insync_replicas == 2
        assert settings.redis.cluster_nodes is not None
        assert len(settings.redis.cluster_nodes.split(",")) >= 3


def test_every_command_is_a_real_cli_command() -> None:
    commands = [c["command"] for c in _containers()]
    commands += [s["command"] for s in _compose()["services"].values() if s.get("image") == "warden:latest"]
    assert len(commands) >= 6
    for argv in commands:
        assert argv[0] == "warden", argv
        _parser().parse_args(argv[1:])  # exits with status 2 on an unknown command or option
    assert ["warden", "worker"] in commands
    assert any(argv[1] == "retrain" for argv in commands)


def test_probes_and_ports_hit_what_the_worker_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _k8s_settings(monkeypatch)
    pages: list[str] = []
    app = SimpleNamespace(page=lambda path: pages.append(path) or (lambda handler: handler))
    web.register(app, settings, SimpleNamespace(stats=WorkerStats()), None)  # type: ignore[arg-type]

    (deployment,) = _of_kind("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": settings.worker.web_port}
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in pages, probe
        assert get["port"] in ports, probe
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in pages
    assert int(annotations["prometheus.io/port"]) == settings.worker.web_port
    (service,) = _of_kind("Service")
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)

    compose_settings = _compose_settings(monkeypatch)
    worker = _compose()["services"]["worker"]
    port = compose_settings.worker.web_port
    assert worker["expose"] == [str(port)]
    (url,) = re.findall(r"http://[^']+", " ".join(worker["healthcheck"]["test"]))
    assert url == f"http://127.0.0.1:{port}/health"
    assert "/health" in pages


def test_references_and_selectors_resolve() -> None:
    names = {(doc["kind"], doc["metadata"]["name"]) for doc in _manifests()}
    for spec in _pod_specs():
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in names
    for container in _containers():
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                assert ("ConfigMap", source["configMapRef"]["name"]) in names
            if "secretRef" in source:
                assert ("Secret", source["secretRef"]["name"]) in names
        for volume in _pod_of(container).get("volumes", []):
            if "secret" in volume:
                assert ("Secret", volume["secret"]["secretName"]) in names
            for source in volume.get("projected", {}).get("sources", []):
                assert ("Secret", source["secret"]["name"]) in names
    (deployment,) = _of_kind("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (budget,) = _of_kind("PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (service,) = _of_kind("Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_registry_mounts_and_worker_count_fit_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _k8s_settings(monkeypatch)
    for container in _containers():
        if container["command"][1] in ("worker", "train", "retrain"):
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert str(settings.models.registry_dir) in mounts, container["name"]
    (deployment,) = _of_kind("Deployment")
    # Workers beyond the partition count of mail.events would sit idle; an uneven split overloads some.
    assert deployment["spec"]["replicas"] <= settings.kafka.partitions
    assert settings.kafka.partitions % deployment["spec"]["replicas"] == 0


def test_compose_creates_exactly_warden_topics(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _compose_settings(monkeypatch)
    services = _compose()["services"]
    topics = services["topics"]["environment"]
    assert topics["TOPICS"].split() == [t.name for t in Topics.from_settings(settings.kafka).all()]
    assert int(topics["PARTITIONS"]) == settings.kafka.partitions
    assert int(topics["REPLICATION_FACTOR"]) == settings.kafka.replication_factor
    assert settings.kafka.retention_hours is not None
    assert int(topics["RETENTION_MS"]) == settings.kafka.retention_hours * 3600 * 1000
    inputs = [t.name for t in Topics.from_settings(settings.kafka).inputs()]
    assert topics["INPUT_TOPICS"].split() == inputs
    script = shlex.split(services["topics"]["command"][0].replace("$$", "$"))
    assert "--create" in script
    assert "$TOPICS;" in script
    # Input topics are stamped by the broker (LogAppendTime), the others keep CreateTime.
    assert "message.timestamp.type=$stamp" in script
    assert "stamp=LogAppendTime;;" in script
    kafka = services["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft: no ZooKeeper
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert settings.kafka.bootstrap_servers == kafka["KAFKA_ADVERTISED_LISTENERS"].split("//")[1]
    assert services["worker"]["deploy"]["replicas"] >= 2


def test_the_capacity_plan_is_what_is_deployed(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = (DEPLOY.parents[1] / "docs" / "pages" / "deployment-and-capacity.md").read_text()
    rows = dict(re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|$", plan, flags=re.MULTILINE))
    settings = _k8s_settings(monkeypatch)
    (deployment,) = _of_kind("Deployment")
    assert rows["partitions per topic"] == str(settings.kafka.partitions)
    assert rows["worker cores (pods of 1 CPU)"] == str(deployment["spec"]["replicas"])
    assert settings.redis.memo_ttl_seconds == 900
    assert settings.feedback.row_ttl_seconds == 86400


def _pod_of(container: dict[str, Any]) -> dict[str, Any]:
    (spec,) = [
        spec for spec in _pod_specs() if container in spec["containers"] + spec.get("initContainers", [])
    ]
    return spec


def _secret_mounts(container: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """Mount path -> the Secrets mounted there as files in ``container`` (projected: several)."""
    volumes = {v["name"]: v for v in _pod_of(container).get("volumes", [])}
    out = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "secret" in volume:
            names: tuple[str, ...] = (volume["secret"]["secretName"],)
        elif "projected" in volume:
            names = tuple(source["secret"]["name"] for source in volume["projected"]["sources"])
        else:
            continue
        assert mount.get("readOnly") is True, mount
        out[mount["mountPath"]] = names
    return out


def _mounted_from(container: dict[str, Any], path: Path) -> str | None:
    """The Secret a file path of ``container`` comes from (None: not from a mounted Secret)."""
    stored = _named("Secret")
    for mount_path, names in _secret_mounts(container).items():
        if path.parent == Path(mount_path):
            for name in names:
                if path.name in stored[name]["stringData"]:
                    return name
    return None


@pytest.mark.parametrize("variable", KEY_VARIABLES)
def test_no_stand_in_is_accepted_as_a_real_key_in_production(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    command = "worker"
    shipped = _container_files(_container(command), real_keys=False)
    assert variable in shipped, "every key a worker needs is in its Secrets"
    env, files = _k8s(command)
    with pytest.raises(SettingsError, match=variable) as caught:
        _settings_from(env, monkeypatch, {**files, variable: shipped[variable]})
    assert "warden keygen" in str(caught.value)
    with pytest.raises(SettingsError):
        _settings_from(env, monkeypatch, shipped)  # the files as they are never start a pod


def test_no_secret_arrives_through_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    secret_settings = _secret_variables()
    assert {
        "WARDEN_PRIVACY__HMAC_KEY",
        "WARDEN_KAFKA__SASL_PASSWORD",
        "WARDEN_REDIS__PASSWORD",
    } <= secret_settings
    assert set(KEY_VARIABLES) <= secret_settings
    for config in _of_kind("ConfigMap"):
        assert not set(config["data"]) & secret_settings, config["metadata"]["name"]
    mounted: set[str] = set()
    for container in _containers():
        for source in container.get("envFrom", []):
            assert "secretRef" not in source, (container["name"], source)
        for entry in container.get("env", []):
            assert "valueFrom" not in entry, (container["name"], entry)
        assert not set(_container_env(container)) & secret_settings, container["name"]
        files = _container_files(container, real_keys=False)
        assert files, f"{container['name']} gets its secrets as files in {SECRETS_DIR}"
        mounted |= set(_secret_mounts(container)[str(SECRETS_DIR)])
        # What the pod loads: its secrets come from those files alone.
        settings = _settings_from(_container_env(container), monkeypatch, _container_files(container))
        assert settings.privacy.hmac_key.get_secret_value() == REAL_KEYS["WARDEN_PRIVACY__HMAC_KEY"]
        assert settings.kafka.sasl_password is not None
        assert settings.redis.password is not None
    settings_secrets = {
        name
        for name, doc in _named("Secret").items()
        if any(k.startswith("WARDEN_") for k in doc["stringData"])
    }
    assert settings_secrets == mounted, "every settings Secret is mounted as files, and only there"
    for name in settings_secrets:
        assert set(_named("Secret")[name]["stringData"]) <= secret_settings | {
            "WARDEN_PRIVACY__KEY_ID",
            "WARDEN_KAFKA__SASL_USERNAME",
        }, name

    services = _compose()["services"]
    # No container, Warden's or a third-party image, gets a secret through its environment:
    # the broker and Redis read their passwords from secret files at start.
    top_secrets = _compose()["secrets"]
    from_environment = {name for name, secret in top_secrets.items() if "environment" in secret}
    for name, service in services.items():
        env = service.get("environment", {})
        values = env.values() if isinstance(env, dict) else []
        assert not any("${" in str(value) for value in values), name
        assert set(env) & secret_settings <= {"WARDEN_REDIS__URL"}, name  # a URL without a password
    for name, secret in (
        ("kafka", "sasl-password"),
        ("topics", "sasl-password"),
        ("redis", "redis-password"),
    ):
        assert secret in from_environment
        assert secret in services[name]["secrets"], name
        assert f"/run/secrets/{secret}" in str(services[name]["command"]), name
    assert "/run/secrets/redis-password" in str(services["redis"]["healthcheck"]["test"])
    for name, service in services.items():
        if service.get("image") == "warden:latest":
            env = service.get("environment", {})
            # A Redis URL is a secret setting because it may carry a password; this one carries none.
            assert set(env) & secret_settings <= {"WARDEN_REDIS__URL"}, name
            assert "@" not in env.get("WARDEN_REDIS__URL", ""), name
            assert _compose_secret_files(name), name
            settings = _compose_settings(monkeypatch, name)
            assert settings.privacy.hmac_key.get_secret_value() == REAL_KEYS["WARDEN_PRIVACY__HMAC_KEY"]
            for entry in service["secrets"]:
                if isinstance(entry, dict):
                    assert (entry["mode"] & 0o077, entry["uid"]) == (0, "10001"), (name, entry)


def test_the_example_key_is_held_by_those_who_sign_or_learn_from_examples(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    holders = {"worker", "retrain"}
    for container in _containers():
        command = container["command"][1]
        settings = _settings_from(_container_env(container), monkeypatch, _container_files(container))
        holds = settings.feedback.training_example_key is not None
        assert holds == (command in holders), container["name"]
    assert _compose_settings(monkeypatch, "worker").feedback.training_example_key is not None


@pytest.mark.parametrize("source", ["kubernetes", "compose"])
def test_the_deployed_default_is_tls_everywhere(source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _deployed_settings(source, monkeypatch)
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.kafka.sasl_username
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.ssl_cafile is not None
    assert settings.redis.tls
    assert settings.redis.tls_ca_file is not None
    urls = (settings.redis.cluster_nodes or "").split(",") if source == "kubernetes" else []
    urls += [settings.redis.url.get_secret_value()] if settings.redis.url is not None else []
    assert urls
    assert all(url.startswith("rediss://") for url in urls), urls
    assert not any("@" in url for url in urls), "the Redis password is its own secret, not in a URL"
    if source == "kubernetes":
        for container in _containers():
            if container["command"][1] in ("worker", "train", "retrain"):
                for path in (settings.kafka.ssl_cafile, settings.redis.tls_ca_file):
                    assert _mounted_from(container, path) == "warden-tls", (container["name"], path)
    else:
        services = _compose()["services"]
        for name in ("worker", "train"):
            assert str(settings.kafka.ssl_cafile) == f"/run/secrets/{services[name]['secrets'][0]}"
        kafka = services["kafka"]["environment"]
        assert kafka["KAFKA_ADVERTISED_LISTENERS"].startswith("SASL_SSL://")
        assert "PLAINTEXT://:" not in kafka["KAFKA_LISTENERS"], "no plaintext listener beyond loopback"
        assert "--port 0" in services["redis"]["command"][0], "no plaintext Redis port"


def test_workers_read_the_registry_and_only_training_holds_the_signing_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signers = {"train", "retrain"}
    for container in _containers():
        command = container["command"][1]
        settings = _settings_from(_container_env(container), monkeypatch, _container_files(container))
        holds_signing = any("warden-registry-signing" in s for s in _secret_mounts(container).values())
        assert holds_signing == (command in signers), container["name"]
        assert (settings.models.signing_key_file is not None) == (command in signers), container["name"]
        if command in signers:
            assert _mounted_from(container, settings.models.signing_key_file) == "warden-registry-signing"
        if command in signers | {"worker"}:
            assert settings.models.verify_key_file is not None
            assert _mounted_from(container, settings.models.verify_key_file) == "warden-registry-verify"
            (registry,) = [
                m for m in container["volumeMounts"] if m["mountPath"] == str(settings.models.registry_dir)
            ]
            assert registry.get("readOnly", False) == (command == "worker"), container["name"]
            if command == "worker":
                (claim,) = [v for v in _pod_of(container)["volumes"] if v["name"] == registry["name"]]
                assert claim["persistentVolumeClaim"]["readOnly"] is True
        # Feedback keys verify labels: workers only (senders get theirs outside these files).
        keyed = "warden-feedback-keys" in _secret_mounts(container).get(str(SECRETS_DIR), ())
        assert keyed == (command == "worker"), container["name"]
    for spec in _pod_specs():
        for volume in spec.get("volumes", []):
            if "secret" in volume or "projected" in volume:
                mode = (volume.get("secret") or volume.get("projected"))["defaultMode"]
                assert mode & 0o007 == 0, "mounted secrets are not world-readable"
        assert spec["securityContext"]["runAsUser"] == 10001

    services = _compose()["services"]
    for name, service in services.items():
        if service.get("image") != "warden:latest":
            continue
        signing = service.get("environment", {}).get("WARDEN_MODELS__SIGNING_KEY_FILE")
        assert ("registry-signing" in service.get("secrets", [])) == (name == "train"), name
        assert (signing == "/run/secrets/registry-signing") == (name == "train"), name
    worker = services["worker"]
    assert "registry:/var/lib/warden/registry:ro" in worker["volumes"]
    assert _compose_env()["WARDEN_MODELS__VERIFY_KEY_FILE"] == "/run/secrets/registry-verify"
    assert "registry-verify" in worker["secrets"]
