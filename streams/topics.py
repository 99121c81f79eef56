"""Every topic Warden reads or writes, declared once.

Code refers to topics through a :class:`Topics` built from the Kafka
settings (which add the prefix); nobody spells a topic name elsewhere.

=================  ===========================  ==========================================
topic              key                          value
=================  ===========================  ==========================================
mail.events        event id                     raw mail event JSON (ingest input)
mail.features      sender pseudonym             :class:`~streams.records.MailFeatures`
calendar.events    event id                     raw calendar event JSON (ingest input)
contacts.events    event id                     raw contacts event JSON (ingest input)
activity.features  account pseudonym            :class:`~streams.records.ActivityFeatures`
verdicts           event id                     :class:`~streams.records.Verdict`
feature-log        event id                     :class:`~streams.records.FeatureLogEntry`
dead-letters       source topic                 :class:`~streams.records.DeadLetter`
model-updates      (none)                       :class:`~streams.records.ModelUpdate`
feedback           event id                     :class:`~streams.records.Feedback` (input)
training-examples  event id                     :class:`~streams.records.TrainingExample`
=================  ===========================  ==========================================

``activity.features`` carries calendar and contacts features together (the
scoring agent routes each by its ``kind``), keyed by the organizer's or
owner's pseudonym. ``mail.features`` is keyed by the sender pseudonym so
that every update of one sender's aggregates is made by one partition's consumer, in order.
``dead-letters`` keeps raw payloads (whole up to 256 KiB, else an excerpt with
the length and SHA-256; ``streams.dead_letters`` reads larger ones back at their
input position), so it shares the input topics' access rules and retention,
not those of derived topics.

Record headers: a trusted producer replaying recorded traffic (``warden
replay``, the demo, the simulator, tests) stamps each input record with
:data:`EVENT_TIME_HEADER`, the event's recorded time in epoch milliseconds as
ASCII digits. Workers read it only with ``IngestSettings.trust_producer_event_time``
(off in production) and never let it move time past the broker's timestamp
(:mod:`streams.provenance`). A worker that ingests for another
(``WorkerSettings.split_stages``) seals each features record with
:data:`SEAL_HEADER`, and the scoring agent reads no features record without a
valid seal (:meth:`streams.feedback_auth.ExampleKeys.seal`).
"""

from __future__ import annotations

from dataclasses import dataclass

from warden.streams.settings import KafkaSettings

#: The input record header carrying a trusted producer's event time (epoch ms, ASCII digits).
EVENT_TIME_HEADER = "warden-event-time-ms"
#: The features record header carrying the ingesting worker's seal (hex HMAC-SHA256).
SEAL_HEADER = "warden-seal"


@dataclass(frozen=True)
class Topic:
    """One topic: its full name on the broker and what it holds."""

    name: str
    partitions: int
    replication_factor: int
    description: str


@dataclass(frozen=True)
class Topics:
    """Warden's topics, named for one deployment (prefix and partition count)."""

    mail_events: Topic
    mail_features: Topic
    verdicts: Topic
    feature_log: Topic
    dead_letters: Topic
    model_updates: Topic
    feedback: Topic
    training_examples: Topic
    calendar_events: Topic
    contacts_events: Topic
    activity_features: Topic

    @classmethod
    def from_settings(cls, settings: KafkaSettings) -> Topics:
        def topic(name: str, description: str) -> Topic:
            return Topic(
                name=f"{settings.topic_prefix}{name}",
                partitions=settings.partitions,
                replication_factor=settings.replication_factor,
                description=description,
            )

        return cls(
            mail_events=topic("mail.events", "mail events as produced by the mail system"),
            mail_features=topic("mail.features", "pseudonymised mail features, by sender"),
            verdicts=topic("verdicts", "one verdict per event"),
            feature_log=topic("feature-log", "the features each verdict was computed from"),
            dead_letters=topic("dead-letters", "records that could not be processed, with why"),
            model_updates=topic("model-updates", "promotions, rollbacks and shadow changes"),
            feedback=topic("feedback", "labels from users, operators, appeals and rules"),
            training_examples=topic("training-examples", "served rows joined with their labels"),
            calendar_events=topic("calendar.events", "calendar invites as produced by the calendar service"),
            contacts_events=topic("contacts.events", "contact cards created or shared"),
            activity_features=topic("activity.features", "pseudonymised calendar and contacts features"),
        )

    def all(self) -> tuple[Topic, ...]:
        return (
            self.mail_events,
            self.mail_features,
            self.verdicts,
            self.feature_log,
            self.dead_letters,
            self.model_updates,
            self.feedback,
            self.training_examples,
            self.calendar_events,
            self.contacts_events,
            self.activity_features,
        )

    def inputs(self) -> tuple[Topic, ...]:
        """The topics that carry raw events from outside Warden."""
        return (self.mail_events, self.feedback, self.calendar_events, self.contacts_events)
