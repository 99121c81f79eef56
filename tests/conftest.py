"""Shared fixtures: the real dev stack, a Redis Cluster, unique names per test, a trained registry."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from warden.infra.dev import devstack, rediscluster
from warden.infra.dev.devstack import StackState
from warden.infra.dev.rediscluster import ClusterState
from warden.models.signing import RegistryKeys
from warden.streams.settings import CorpusSettings, DevSettings, WardenSettings

REPO = Path(__file__).resolve().parents[1]
#: The corpus cache is shared with `make demo`, so a checkout fetches it once.
CORPUS = CorpusSettings(cache_dir=REPO / ".warden" / "cache")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackState]:
    """The embedded broker and Redis, started once for the whole test session."""
    with devstack.running(DevSettings(state_dir=tmp_path_factory.mktemp("stack"))) as state:
        yield state


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterState]:
    """A three-master Redis Cluster on loopback, started once for the whole test session."""
    dev = DevSettings(state_dir=tmp_path_factory.mktemp("cluster"))
    with rediscluster.running_cluster(dev) as state:
        yield state


@pytest.fixture(scope="session")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The registry's Ed25519 pair for the whole session, as ModelSettings key-file settings."""
    from warden.models.signing import write_pair

    signing, verify = write_pair(tmp_path_factory.mktemp("registry-keys") / "pair")
    return {"signing_key_file": signing, "verify_key_file": verify}


@pytest.fixture(scope="session")
def registry_keys(key_files: dict[str, Path]) -> RegistryKeys:
    """The session pair, loaded (both halves: tests register and verify)."""
    from warden.models.signing import load_signing_key

    signing = load_signing_key(key_files["signing_key_file"])
    return RegistryKeys(signing.verify_key, signing)


@pytest.fixture(scope="session")
def registry_dir(tmp_path_factory: pytest.TempPathFactory, key_files: dict[str, Path]) -> Path:
    """A registry holding one model trained on the corpus's first half, signed with the session pair."""
    from warden.models.train import train_from_corpus
    from warden.streams.sources import corpus

    root = tmp_path_factory.mktemp("registry")
    settings = WardenSettings(corpus=CORPUS, models={"registry_dir": root, "num_trees": 120, **key_files})
    train_from_corpus(settings, corpus.FIRST_HALF)
    return root


@pytest.fixture
def settings(
    stack: StackState, tmp_path: Path, registry_dir: Path, key_files: dict[str, Path]
) -> WardenSettings:
    """Settings on the session stack with names no other test uses."""
    run = uuid.uuid4().hex[:10]
    return WardenSettings(
        kafka={"topic_prefix": f"t{run}.", "partitions": 2},
        redis={"key_prefix": f"w{run}", "ttl_seconds": 3600, "memo_ttl_seconds": 1800},
        worker={
            "app_id": f"warden-{run}",
            "web_port": devstack.free_port("127.0.0.1"),
            "batch_within_s": 0.02,
        },
        models={"registry_dir": registry_dir, **key_files},
        # Workers feed the review queue only in the tests about it (they turn it on).
        review={"enabled": False},
        # Tests replay recorded traffic: workers take each record's recorded time from the
        # replay's event-time header (streams.provenance); the tests about the clock turn it off.
        ingest={"trust_producer_event_time": True},
        corpus=CORPUS,
        dev={"state_dir": tmp_path / "dev"},
    ).with_services(stack.bootstrap_servers, stack.redis_url)


@pytest.fixture
def base_env() -> dict[str, str]:
    """The environment for child processes, without WARDEN_* from the caller's shell."""
    return {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")}
