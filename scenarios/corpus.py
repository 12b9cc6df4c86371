"""A tiny character-level corpus, written into the repository: the text the GPT-style scenarios learn from.

Jane Taylor's "The Star" (1806, in the public domain), lower-cased. Its
characters, sorted, are the vocabulary (``VOCABULARY``); a token id is a
character's place in it (``token_ids``). Byte-level models (vocabulary 256,
``scenarios.transformer.gpt_mini_scenario``) read the same text as bytes.
"""
from __future__ import annotations

import numpy as np

CORPUS = (
    "twinkle, twinkle, little star,\n"
    "how i wonder what you are!\n"
    "up above the world so high,\n"
    "like a diamond in the sky.\n"
    "when the blazing sun is gone,\n"
    "when he nothing shines upon,\n"
    "then you show your little light,\n"
    "twinkle, twinkle, all the night.\n"
)

VOCABULARY = "".join(sorted(set(CORPUS)))


def token_ids(text: str = CORPUS) -> np.ndarray:
    """Each character's index in ``VOCABULARY`` (int64)."""
    index = {character: k for k, character in enumerate(VOCABULARY)}
    return np.array([index[character] for character in text], dtype=np.int64)


def byte_ids(text: str = CORPUS) -> np.ndarray:
    """The text's UTF-8 bytes as token ids in [0, 256) (int64)."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)


def windows(ids: np.ndarray, batch: int, steps: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``batch`` windows of ``steps`` tokens at seeded starting places (the text read as a ring), and the
    token that follows each: (inputs (N, T), next tokens (N, T)) — a character model's data."""
    starts = rng.integers(0, len(ids), size=batch)
    positions = (starts[:, None] + np.arange(steps + 1)[None, :]) % len(ids)
    window = ids[positions]
    return window[:, :-1], window[:, 1:]
