"""``warden models {list,show,promote,rollback,shadow,compare,keygen}``: the registry's versions."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from warden.infra.cli import keys
from warden.infra.cli.common import (
    Commands,
    Parser,
    with_services,
)
from warden.models.exceptions import ModelsError
from warden.models.registry import Registry
from warden.streams.exceptions import UsageError
from warden.streams.settings import WardenSettings

#: The ``warden`` commands this module runs.
COMMANDS = ("models",)


def add_parsers(commands: Commands) -> None:
    """``warden models ACTION``."""
    models = commands.add_parser("models", help="list, promote or roll back model versions")
    models.add_argument(
        "--kind",
        choices=("mail", "calendar", "contacts"),
        default="mail",
        help="whose models (calendar and contacts have registries of their own; shadows are mail only)",
    )
    models_commands = models.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    models_commands.required = True
    models_commands.add_parser("list", help="registered versions, current marked")
    promote = models_commands.add_parser("promote", help="make a version current")
    promote.add_argument("version")
    models_commands.add_parser("rollback", help="return to the previously promoted version")
    show = models_commands.add_parser("show", help="a version's manifest (default: the current one)")
    show.add_argument("version", nargs="?")
    shadow = models_commands.add_parser(
        "shadow", help="score a version beside the champion, never acting on it"
    )
    shadow.add_argument("version", nargs="?", help="the version to shadow")
    shadow.add_argument("--clear", action="store_true", help="stop shadowing")
    models_commands.add_parser("compare", help="champion vs shadow on the logged traffic (feature-log)")
    keys.add_models_parser(models_commands)


def run(args: argparse.Namespace, settings: WardenSettings) -> int:
    """Run one of :data:`COMMANDS`; returns the exit status."""
    return _models(args, settings)


def _models(args: argparse.Namespace, settings: WardenSettings) -> int:
    if args.action == "keygen":
        return keys.models_keygen(args.out, sys.stdout)
    # Promote, rollback and shadow sign the pointer they write: only they load the signing key.
    signing = args.action in ("promote", "rollback", "shadow")
    registry = Registry.from_settings(settings, signing=signing).for_kind(args.kind)
    if args.kind != "mail" and args.action in ("shadow", "compare"):
        raise UsageError(f"shadow models are for mail only, not {args.kind}")
    if args.action == "list":
        current, shadow = _listed_pointer(registry.current), _listed_pointer(registry.shadow)
        versions = registry.versions()
        if not versions:
            print(f"no models registered in {registry.root}")
        for version in versions:
            marker = "*" if version == current else ("s" if version == shadow else " ")
            try:
                manifest = registry.manifest(version)  # the signature is checked first
            except ModelsError as exc:
                print(f"{marker} {version}  REFUSED: {exc}")
                continue
            print(
                f"{marker} {version}  auc={manifest.metrics.get('validation_auc', float('nan')):.4f}"
                f"  parity={manifest.parity.max_abs_diff:.1e}  data={manifest.data.source}"
            )
        return 0
    if args.action == "compare":
        return _compare(settings, registry)
    if args.action == "show":
        chosen = args.version or registry.current()
        if chosen is None:
            raise UsageError(f"no model promoted in {registry.root}")
        print(registry.manifest(chosen).model_dump_json(indent=2))
        return 0
    if args.action == "promote":
        registry.promote(args.version)
        changed: str | None = args.version
    elif args.action == "rollback":
        changed = registry.rollback()
    else:
        if args.clear == (args.version is not None):
            raise UsageError("give a version to shadow, or --clear (not both)")
        changed = None if args.clear else args.version
        registry.set_shadow(changed)
    announce(settings, args.action, changed)
    print(
        f"{args.action}: {changed or 'none'} (workers switch within {settings.serving.reload_interval_s:g} s)"
    )
    return 0


def _listed_pointer(read: Callable[[], str | None]) -> str | None:
    """A pointer's version for `warden models list`; a refused pointer is said, the versions still listed."""
    try:
        return read()
    except ModelsError as exc:
        print(f"pointer REFUSED: {exc}")
        return None


def announce(settings: WardenSettings, action: str, version: str | None) -> None:
    from warden.streams.broker import announce

    announce(settings, action, version)


def _compare(settings: WardenSettings, registry: Registry) -> int:
    from warden.serving.compare import compare
    from warden.streams import reader
    from warden.streams.records import FeatureLogEntry, decode
    from warden.streams.topics import Topics

    settings = with_services(settings)
    topics = Topics.from_settings(settings.kafka)
    read = reader.read_topics(settings.kafka, (topics.feature_log,), lambda raw: decode(FeatureLogEntry, raw))
    if read.malformed:
        skipped = f"skipped {len(read.malformed):,} records of {topics.feature_log.name}"
        print(f"{skipped}: {read.describe_malformed()}", file=sys.stderr)
    results = compare(read.records, registry)
    if not results:
        print("no shadow scores in the feature-log yet: `warden models shadow VERSION` first")
        return 0
    for result in results:
        print("\n".join(result.lines()))
    return 0
