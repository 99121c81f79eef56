"""The review queue's pure parts: fingerprints, campaign grouping, the ranking model, labels."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
from pydantic import SecretStr

from warden.features.definitions import FEATURE_NAMES, SCHEMAS
from warden.features.fingerprint import BANDS, band_keys, jaccard
from warden.features.ingest.extraction import to_activity_features, to_features
from warden.features.ingest.pseudonym import Pseudonymiser
from warden.infra.cli.main import main
from warden.infra.cli.review import feedback_records
from warden.serving.review.campaigns import YOUNG_HOURS, assign, group_keys, new_group_id, resolve
from warden.serving.review.ranking import REVIEW_FEATURES, RankingModel, review_features, wrong_verdicts
from warden.streams.exceptions import ExitCode
from warden.streams.records import CalendarEvent, MailEvent, MailFeatures, SourcePosition
from warden.streams.sources.campaign import campaign

_AT = SourcePosition(topic="t", partition=0, offset=0)
_KEY = Pseudonymiser(SecretStr("unit-test-key"), "k1")


def _features(events: list[MailEvent]) -> list[MailFeatures]:
    return [to_features(e, _KEY, _AT, 0, event_time=e.timestamp) for e in events]


def _row(**values: float) -> list[float]:
    row = [1000.0] * len(FEATURE_NAMES)  # old infrastructure unless said otherwise
    for name, value in values.items():
        row[FEATURE_NAMES.index(name)] = value
    return row


def _unrelated(count: int) -> list[MailEvent]:
    topics = ("gardening", "chess", "astronomy", "baking", "cycling", "violin", "sailing", "pottery")
    return [
        MailEvent(
            event_id=f"u-{i}",
            timestamp=1.04e9 + i,
            sender=f"person{i}@site{i}.example",
            recipients=["r@example.org"],
            subject=f"notes on {topics[i % len(topics)]} {i}",
            text=" ".join(f"{topics[i % len(topics)]}{i}word{j}" for j in range(40)),
        )
        for i in range(count)
    ]


def test_near_duplicates_share_band_keys_and_unrelated_mail_does_not() -> None:
    mails = _features(campaign(30, 1.04e9, ["a@example.org"], seed=3))
    others = _features(_unrelated(20))
    similar = [jaccard(a.tokens, b.tokens) for a, b in itertools.pairwise(mails)]
    assert np.median(similar) > 0.3
    keys = [set(band_keys(m.tokens)) for m in mails]
    assert all(len(k) == BANDS for k in keys)
    # Every campaign mail shares a band key with some other campaign mail; no unrelated mail does.
    assert all(any(k & other for other in keys if other is not k) for k in keys)
    campaign_keys = set().union(*keys)
    assert not any(set(band_keys(o.tokens)) & campaign_keys for o in others)


def test_short_mails_get_no_content_key() -> None:
    assert band_keys([1, 2, 3]) == []


def test_a_campaign_lands_in_one_group_and_unrelated_mail_stays_alone() -> None:
    mails = _features(campaign(60, 1.04e9, ["a@example.org"], seed=4))
    others = _features(_unrelated(10))
    events = [(f.event_id, group_keys(f, _row())) for f in [*mails[:30], *others, *mails[30:]]]
    grouping = assign(events, {})
    by_event = {a.event_id: a for a in grouping.assignments}
    # Early members may start groups of their own; later members bridge and merge them.
    final = Counter(resolve(by_event[m.event_id].group, grouping.merges) for m in mails)
    assert final.most_common(1)[0][1] >= 57  # at least 95% of the campaign in one group
    assert all(by_event[o.event_id].group == new_group_id(o.event_id) for o in others)
    assert all(by_event[o.event_id].grouped_by == "alone" for o in others)
    assert not set(grouping.merges) & {new_group_id(o.event_id) for o in others}


def test_groups_of_one_batch_or_many_batches_are_the_same() -> None:
    mails = _features(campaign(40, 1.04e9, ["a@example.org"], seed=6))
    events = [(f.event_id, group_keys(f, _row())) for f in mails]
    whole = assign(events, {})
    claimed: dict[str, str] = {}
    aliases: dict[str, str] = {}
    joined = []
    for start in range(0, len(events), 7):
        part = assign(events[start : start + 7], claimed, aliases)
        claimed.update(part.claims)
        aliases.update(part.merges)
        joined.extend(a.group for a in part.assignments)
    assert [resolve(g, aliases) for g in joined] == [
        resolve(a.group, whole.merges) for a in whole.assignments
    ]


def test_claimed_keys_are_joined_and_young_infrastructure_groups() -> None:
    (first, second) = _features(_unrelated(2))
    shared = first.model_copy(update={"url_domains": ["k1.abc"], "tokens": []})
    later = second.model_copy(update={"url_domains": ["k1.abc"], "tokens": []})
    young = _row(url_count=1, url_domain_age_h_min=1.0, sender_domain_age_h=1.0)
    old = _row(url_count=1, url_domain_age_h_min=YOUNG_HOURS * 10, sender_domain_age_h=1.0)
    established_sender = _row(url_count=1, url_domain_age_h_min=1.0, sender_domain_age_h=YOUNG_HOURS * 10)
    assert group_keys(later, established_sender) == []
    (started,) = assign([(shared.event_id, group_keys(shared, young))], {}).assignments
    claimed = {"u:k1.abc": started.group}
    (joined,) = assign([(later.event_id, group_keys(later, young))], claimed).assignments
    assert joined.group == started.group
    assert joined.grouped_by == "url_domain"
    (alone,) = assign([(later.event_id, group_keys(later, old))], claimed).assignments
    assert alone.grouped_by == "alone"


def test_ranking_prefers_uncertain_and_novel_verdicts() -> None:
    junk = 0.6
    rows = np.asarray(
        [
            _row(token_known_share=1.0, url_count=0),  # far below the threshold, familiar words
            _row(token_known_share=1.0, url_count=0),  # on the threshold
            _row(token_known_share=0.1, sender_domain_age_h=0.0, url_count=0),  # novel
        ]
    )
    features = review_features([0.001, 0.6, 0.001], rows, junk)
    assert features.shape == (3, len(REVIEW_FEATURES))
    assert features[1, 0] == pytest.approx(1.0)
    p = RankingModel().p_wrong(features)
    assert p[1] > p[0]
    assert p[2] > p[0]


def test_ranking_fit_learns_from_logged_feedback_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((400, len(REVIEW_FEATURES)))
    wrong = (x[:, 2] + 0.1 * rng.standard_normal(400) > 0.7).astype(np.int8)
    model = RankingModel.fit(x, wrong)
    assert model.fitted_on == 400
    assert model.weights[2] > 1.0  # novelty drives the errors here
    assert RankingModel.from_json(model.to_json()) == model
    assert RankingModel.fit(x[:10], wrong[:10]) == RankingModel()  # too little feedback: the prior


def test_wrong_verdicts() -> None:
    assert wrong_verdicts(["allow", "allow", "junk", "block"], [1, 0, 0, 1]).tolist() == [1, 0, 1, 0]


def test_a_group_label_is_one_feedback_per_member() -> None:
    records = feedback_records(["m-1", "m-2", "m-3"], "abuse", "ops-7", "gabc", 1.0)
    assert [r.event_id for r in records] == ["m-1", "m-2", "m-3"]
    assert {r.source for r in records} == {"ops_review"}
    assert {r.label for r in records} == {"abuse"}
    assert len({r.feedback_id for r in records}) == 3
    again = feedback_records(["m-1"], "abuse", "ops-7", "gabc", 2.0)
    assert again[0].feedback_id == records[0].feedback_id  # the same review sent twice is one label


@pytest.mark.parametrize(
    "argv",
    [
        ("review", "label"),
        ("review", "label", "gabc", "maybe"),
        ("review", "--top", "0"),
        ("review", "--measure", "--source", "fax"),
        ("review", "--measure", "--days", "1"),
    ],
)
def test_review_mistakes_are_one_line(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]) -> None:
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_the_mail_source_spreads_one_wave_over_each_day() -> None:
    from tests.conftest import CORPUS
    from warden.serving.review.measure import ROUNDS_PER_DAY, WAVE_SIZE, mail_source
    from warden.streams.settings import WardenSettings

    events = sorted(
        mail_source(WardenSettings(corpus=CORPUS), 3),
        key=lambda e: (e.mail.event_time, e.mail.event.event_id),
    )
    assert len({e.mail.event.event_id for e in events}) == len(events)
    for day in range(3):
        today = [e for e in events if e.day == day]
        assert sum(e.campaign for e in today) == WAVE_SIZE
        assert all(e.mail.is_spam for e in today if e.campaign)
        for part in np.array_split(np.asarray([e.campaign for e in today]), ROUNDS_PER_DAY):
            assert part.sum() >= WAVE_SIZE // ROUNDS_PER_DAY - 2  # every review round meets the wave


def _calendar_row(**values: float) -> list[float]:
    names = SCHEMAS["calendar"].feature_names
    row = [1000.0] * len(names)  # an established account and old links unless said otherwise
    for name, value in values.items():
        row[names.index(name)] = value
    return row


def test_calendar_events_group_by_young_link_domain_and_young_account() -> None:
    invite = CalendarEvent(
        event_id="cal-1",
        timestamp=1.767e9,
        action="created",
        organizer="new.spammer@gmail.com",
        invitees=["a@example.org", "b@example.net"],
        title="You have won a gift card",
        description="Claim it at https://prize-atlas7.xyz/claim/1234",
        urls=["https://prize-atlas7.xyz/claim/1234"],
        start=1.767e9 + 3600,
        end=1.767e9 + 7200,
    )
    features = to_activity_features(invite, _KEY, _AT, 0, event_time=invite.timestamp)
    assert features.url_domains
    young = _calendar_row(url_domain_age_h_min=1.0, organizer_account_age_h=0.5)
    keys = group_keys(features, young)
    assert f"a:{features.sender}" in keys
    assert {f"u:{d}" for d in features.url_domains} <= set(keys)
    assert [k for k in group_keys(features, _calendar_row()) if not k.startswith("c:")] == []
    other = to_activity_features(
        invite.model_copy(update={"event_id": "cal-2", "title": "Hi"}),
        _KEY,
        _AT,
        0,
        event_time=invite.timestamp,
    )
    (started,) = assign([(features.event_id, keys)], {}).assignments
    claimed = {k: started.group for k in keys}
    (joined,) = assign([(other.event_id, group_keys(other, young))], claimed).assignments
    assert joined.group == started.group


def test_review_features_read_each_kinds_own_columns() -> None:
    rows = np.asarray([_calendar_row(organizer_account_age_h=0.0, links=0), _calendar_row(links=2)])
    features = review_features([0.5, 0.5], rows, 0.5, "calendar")
    new_account = REVIEW_FEATURES.index("new_sender_dom")
    assert features[0, new_account] == pytest.approx(1.0)
    assert features[1, new_account] < 0.01
    assert features[0, REVIEW_FEATURES.index("new_url_dom")] == 0.0  # no links


def test_the_calendar_source_is_labelled_days_after_a_warm_up() -> None:
    from warden.serving.review.measure import UNSEEN, activity_stream
    from warden.streams.settings import WardenSettings

    stream = activity_stream("calendar", WardenSettings(), 2, accounts=40)
    assert stream.data.kind == stream.older.kind == "calendar"
    assert len(stream.features) == len(stream.data) == len(stream.days) == len(stream.is_campaign)
    assert [f.event_id for f in stream.features] == list(stream.data.event_ids)
    assert set(stream.days.tolist()) == {0, 1}
    assert np.all(np.diff(stream.data.timestamps) >= 0)
    campaign = np.asarray([f in UNSEEN for f in stream.data.folders])
    assert np.array_equal(campaign, stream.is_campaign)
    assert np.all(stream.data.labels[stream.is_campaign] == 1)
    assert not set(UNSEEN) & set(stream.older.folders)  # the first model never sees them
    assert stream.widen_thresholds


def test_the_measurement_runs_on_the_calendar_simulator() -> None:
    import functools

    from warden.serving.review.measure import ROUNDS_PER_DAY, activity_stream, prepare, simulate
    from warden.streams.settings import WardenSettings

    settings = WardenSettings()
    world = prepare(settings, functools.partial(activity_stream, "calendar", accounts=60), 3)
    assert len(world.rounds) == 3 * ROUNDS_PER_DAY
    abuse = int(world.truth.sum())
    for strategy in ("random", "lowest-confidence", "ranked"):
        outcome = simulate(world, strategy, 4, 3, settings, seed=1)
        assert 0 < outcome.reviews <= 4 * 2  # two review days, none on the test day
        assert outcome.campaign_delivered <= outcome.abuse_delivered <= abuse
        assert 0.0 <= outcome.recall <= 1.0
