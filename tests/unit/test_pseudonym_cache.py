"""The word-digest memory of token bucketing: same buckets, no text, bounded."""

from __future__ import annotations

from pydantic import SecretStr

from warden.features.ingest.pseudonym import Pseudonymiser
from warden.features.tokens import BUCKETS, MAX_TOKENS_PER_MESSAGE


def test_remembered_digests_give_the_buckets_a_fresh_pseudonymiser_gives() -> None:
    warm = Pseudonymiser(SecretStr("k" * 32), "k1")
    words = [f"word{i}" for i in range(500)] + ["viagra", "hello", "word3"]
    first = warm.token_buckets(words, BUCKETS, MAX_TOKENS_PER_MESSAGE)
    again = warm.token_buckets(list(reversed(words)), BUCKETS, MAX_TOKENS_PER_MESSAGE)
    fresh = Pseudonymiser(SecretStr("k" * 32), "k1")
    assert first == fresh.token_buckets(words, BUCKETS, MAX_TOKENS_PER_MESSAGE)
    assert again == fresh.token_buckets(list(reversed(words)), BUCKETS, MAX_TOKENS_PER_MESSAGE)
    other_key = Pseudonymiser(SecretStr("z" * 32), "k2")
    assert other_key.token_buckets(words, BUCKETS, MAX_TOKENS_PER_MESSAGE) != first


def test_the_memory_holds_no_words_and_stays_bounded() -> None:
    pseudonymiser = Pseudonymiser(SecretStr("k" * 32), "k1")
    pseudonymiser.DIGEST_CACHE_WORDS = 100
    words = [f"secretword{i}" for i in range(1000)]
    for start in range(0, 1000, 50):
        pseudonymiser.token_buckets(words[start : start + 50], BUCKETS, MAX_TOKENS_PER_MESSAGE)
    memory = vars(pseudonymiser)["_digests"]
    assert 0 < len(memory) <= 100
    assert all(isinstance(k, int) and isinstance(v, int) for k, v in memory.items())
