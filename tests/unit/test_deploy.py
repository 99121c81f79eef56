"""The deployment files in infra/deploy/ agree with the settings, the CLI, the topics and the web pages.

No container engine runs here: the files are parsed (PyYAML) and every name in them is checked against
the code it names: WARDEN_* variables are real settings whose values load, commands are real `warden`
commands, probes hit pages the worker serves, ports match the web port, topics match `Topics`.
"""

from __future__ import annotations

import re
import secrets
import shlex
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from infra.cli import _parser
from infra.exceptions import SettingsError
from infra.metrics import WorkerStats
from infra.settings import WardenSettings, load_settings
from streams import web
from streams.topics import Topics

DEPLOY = Path(__file__).resolve().parents[2] / "infra" / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
#: The secret keys the settings check for strength (the deploy files ship stand-ins for them).
KEY_VARIABLES = (
    "WARDEN_PRIVACY__HMAC_KEY",
    "WARDEN_FEEDBACK__KEY_USER_REPORT",
    "WARDEN_FEEDBACK__KEY_OPS_REVIEW",
    "WARDEN_FEEDBACK__KEY_APPEAL",
    "WARDEN_FEEDBACK__KEY_AUTO",
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


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> WardenSettings:
    import os

    for name in list(os.environ):
        if name.startswith("WARDEN_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def _named(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in _of_kind(kind)}


def _container_env(container: dict[str, Any], real_keys: bool = True) -> dict[str, str]:
    """The WARDEN_* environment of a container, as shipped or with real keys for the stand-ins."""
    configs, stored = _named("ConfigMap"), _named("Secret")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configs[source["configMapRef"]["name"]]["data"])
        if "secretRef" in source:
            env.update(stored[source["secretRef"]["name"]]["stringData"])
    env.update({entry["name"]: entry["value"] for entry in container.get("env", [])})
    if real_keys:
        env.update({name: REAL_KEYS[name] for name in KEY_VARIABLES if name in env})
    return env


def _container(command: str) -> dict[str, Any]:
    (found,) = [c for c in _containers() if c["command"][1] == command]
    return found


def _k8s_env() -> dict[str, str]:
    return _container_env(_container("worker"))


def _compose_env(service: str = "worker") -> dict[str, str]:
    env = {k: str(v) for k, v in _compose()["services"][service]["environment"].items()}
    for name, value in env.items():
        if "PASSWORD" in name or name in KEY_VARIABLES:
            assert value.startswith(f"${{{name}:?"), f"{name} is never a literal in compose.yaml"
    # `${NAME:?...}`: compose refuses to start unless NAME is set; here, to a real key.
    return {
        name: REAL_KEYS.get(name, f"{name.lower()}-value") if value.startswith("${") else value
        for name, value in env.items()
    }


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
    settings = _settings_from(_k8s_env() if source == "kubernetes" else _compose_env(), monkeypatch)
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
    settings = _settings_from(_k8s_env(), monkeypatch)
    pages: list[str] = []
    app = SimpleNamespace(page=lambda path: pages.append(path) or (lambda handler: handler))
    web.register(app, settings, SimpleNamespace(stats=WorkerStats()))  # type: ignore[arg-type]

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

    compose_settings = _settings_from(_compose_env(), monkeypatch)
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
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                assert ("Secret", volume["secret"]["secretName"]) in names
    (deployment,) = _of_kind("Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (budget,) = _of_kind("PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (service,) = _of_kind("Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_registry_mounts_and_worker_count_fit_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings_from(_k8s_env(), monkeypatch)
    for container in _containers():
        if container["command"][1] in ("worker", "train", "retrain"):
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert str(settings.models.registry_dir) in mounts, container["name"]
    (deployment,) = _of_kind("Deployment")
    # Workers beyond the partition count of mail.events would sit idle; an uneven split overloads some.
    assert deployment["spec"]["replicas"] <= settings.kafka.partitions
    assert settings.kafka.partitions % deployment["spec"]["replicas"] == 0


def test_compose_creates_exactly_warden_topics(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings_from(_compose_env(), monkeypatch)
    services = _compose()["services"]
    topics = services["topics"]["environment"]
    assert topics["TOPICS"].split() == [t.name for t in Topics.from_settings(settings.kafka).all()]
    assert int(topics["PARTITIONS"]) == settings.kafka.partitions
    assert int(topics["REPLICATION_FACTOR"]) == settings.kafka.replication_factor
    assert settings.kafka.retention_hours is not None
    assert int(topics["RETENTION_MS"]) == settings.kafka.retention_hours * 3600 * 1000
    script = shlex.split(services["topics"]["command"][0].replace("$$", "$"))
    assert "--create" in script
    assert "$TOPICS;" in script
    kafka = services["kafka"]["environment"]
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft: no ZooKeeper
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert settings.kafka.bootstrap_servers == kafka["KAFKA_ADVERTISED_LISTENERS"].split("//")[1]
    assert services["worker"]["deploy"]["replicas"] >= 2


def test_the_capacity_plan_is_what_is_deployed(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = (DEPLOY.parent / "CAPACITY.md").read_text()
    rows = dict(re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|$", plan, flags=re.MULTILINE))
    settings = _settings_from(_k8s_env(), monkeypatch)
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


def _secret_mounts(container: dict[str, Any]) -> dict[str, str]:
    """Mount path -> Secret name, for the Secrets mounted as files in ``container``."""
    volumes = {v["name"]: v for v in _pod_of(container).get("volumes", [])}
    out = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "secret" in volume:
            assert mount.get("readOnly") is True, mount
            out[mount["mountPath"]] = volume["secret"]["secretName"]
    return out


def _mounted_from(container: dict[str, Any], path: Path) -> str | None:
    """The Secret a file path of ``container`` comes from (None: not from a mounted Secret)."""
    for mount_path, secret in _secret_mounts(container).items():
        if path.parent == Path(mount_path):
            return secret
    return None


@pytest.mark.parametrize("variable", KEY_VARIABLES)
def test_no_stand_in_is_accepted_as_a_real_key_in_production(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = _container_env(_container("worker"), real_keys=False)
    assert variable in shipped, "every key a worker needs is in its Secrets"
    with pytest.raises(SettingsError, match=variable) as caught:
        _settings_from({**_k8s_env(), variable: shipped[variable]}, monkeypatch)
    assert "warden keygen" in str(caught.value)
    with pytest.raises(SettingsError):
        _settings_from(shipped, monkeypatch)  # the files as they are never start a pod


@pytest.mark.parametrize("source", ["kubernetes", "compose"])
def test_the_deployed_default_is_tls_everywhere(source: str, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings_from(_k8s_env() if source == "kubernetes" else _compose_env(), monkeypatch)
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
        settings = _settings_from(_container_env(container), monkeypatch)
        holds_signing = any(s == "warden-registry-signing" for s in _secret_mounts(container).values())
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
        keyed = "warden-feedback-keys" in {s.get("secretRef", {}).get("name") for s in container["envFrom"]}
        assert keyed == (command == "worker"), container["name"]
    for spec in _pod_specs():
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["defaultMode"] & 0o007 == 0, "mounted secrets are not world-readable"
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
