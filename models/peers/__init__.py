"""The spam filters users would otherwise install, run beside Warden on the same mails.

``warden evaluate --peers`` trains bogofilter, SpamAssassin and Rspamd (each
from the distribution, see their modules) on the training half and scores the
test half with each. Every peer gets the same raw messages (the corpus files
as received, with the collector's ``X-Spam*`` headers and mbox line removed,
:func:`streams.sources.corpus.filter_input`), runs in its own private temporary folder
with its own daemons on loopback, and never touches the network. A peer whose
programs are not installed is reported as missing with the reason; one that
fails is reported as failed with the reason. Neither is ever left out silently.

This is offline evaluation: the peers read message text, which the stream
never carries past ingest. Nothing but scores and counts leaves this package.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from warden.models.exceptions import PeerError
from warden.models.peers.bogofilter import Bogofilter
from warden.models.peers.common import LabelledMail, Peer, PeerResult
from warden.models.peers.rspamd import Rspamd
from warden.models.peers.spamassassin import SpamAssassin
from warden.streams.exceptions import CorpusError
from warden.streams.settings import PeerSettings, WardenSettings
from warden.streams.sources import corpus
from warden.streams.sources.corpus import CorpusMail

__all__ = ["NAMES", "LabelledMail", "Peer", "PeerResult", "evaluate", "peers", "run_peers"]

#: The peers, in the order they are run and reported.
NAMES: tuple[str, ...] = ("bogofilter", "spamassassin", "rspamd")


def peers(settings: PeerSettings) -> list[Peer]:
    """Every peer, configured by ``settings``."""
    return [Bogofilter(settings), SpamAssassin(settings), Rspamd(settings)]


def run_peers(
    chosen: Sequence[Peer], train: Sequence[LabelledMail], test: Sequence[bytes], work_dir: Path
) -> list[PeerResult]:
    """Run each peer on the same mails, each in its own temporary folder under ``work_dir``.

    Never raises for one peer's failure: a peer that is not installed comes back
    ``missing`` and one whose program fails comes back ``failed``, each with its reason.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for peer in chosen:
        reason = peer.missing()
        if reason is not None:
            results.append(PeerResult(name=peer.name, status="missing", reason=reason))
            continue
        work = Path(tempfile.mkdtemp(prefix=f"{peer.name}-", dir=work_dir))
        try:
            results.append(peer.run(train, test, work))
        except PeerError as exc:
            results.append(PeerResult(name=peer.name, status="failed", reason=str(exc)))
        finally:
            shutil.rmtree(work, ignore_errors=True)  # the mails' text goes with it
    return results


def evaluate(
    settings: WardenSettings, train: Sequence[CorpusMail], test: Sequence[CorpusMail], work_dir: Path
) -> list[PeerResult]:
    """Train every peer on ``train`` and score ``test`` (corpus mails), in the order given.

    Called by ``warden evaluate --peers`` with the split Warden is evaluated on.
    Raises CorpusError when a mail's original file is not in the corpus cache.
    """
    files = corpus.source_files(settings.corpus)
    absent = [m.event.event_id for m in (*train, *test) if m.event.event_id not in files]
    if absent:
        raise CorpusError(
            f"{len(absent)} mails have no original file in the corpus cache (first: {absent[0]})"
        )

    def raw(mail: CorpusMail) -> bytes:
        return corpus.filter_input(files[mail.event.event_id].read_bytes())

    labelled = [LabelledMail(raw(m), m.is_spam) for m in train]
    return run_peers(peers(settings.peers), labelled, [raw(m) for m in test], work_dir)
