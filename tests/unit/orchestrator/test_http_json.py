"""`http_server.loads_json`'s depth check, done on the bytes before parsing: for every valid
JSON text it is the value's true nesting depth, whatever brackets, quotes and backslashes
its strings hold, both on the fast path (split on quotes) and on a huge hostile shape's."""

from __future__ import annotations

import json
import random
import unittest
from unittest import mock

from bot_bottle.orchestrator import http_server as S

_CHARS = 'ab[]{}"\\\n/é'


def true_depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(true_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(true_depth, value), default=0)
    return 0


def random_value(rng: random.Random, depth: int = 0):
    roll = rng.random()
    if depth > 6 or roll < 0.3:
        text = "".join(rng.choice(_CHARS) for _ in range(rng.randint(0, 8)))
        return rng.choice([text, 1, None, True, 2.5])
    if roll < 0.65:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {"".join(rng.choice(_CHARS) for _ in range(rng.randint(0, 5))):
            random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


class DepthTest(unittest.TestCase):
    def check(self, count: int, seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(count):
            value = random_value(rng)
            body = json.dumps(value, ensure_ascii=rng.random() < 0.5).encode()
            self.assertEqual(S._depth(body), true_depth(value), body)

    def test_the_depth_of_valid_json_is_exact(self) -> None:
        self.check(3000, seed=1)
        self.assertEqual(S._depth(b'"[[[\\\\\\"[["'), 0)  # brackets and escapes in a string

    def test_a_shape_too_big_to_split_gives_the_same_depth(self) -> None:
        with mock.patch.object(S, "_SPLIT_MAX", 0):
            self.check(1000, seed=2)

    def test_deeper_than_the_limit_is_refused_and_the_limit_itself_parses(self) -> None:
        at_limit = b'{"a": "]]]", "b": ' + b"[" * 63 + b"]" * 63 + b"}"
        self.assertEqual(S.loads_json(at_limit)["a"], "]]]")
        with self.assertRaisesRegex(ValueError, "nested deeper than 64"):
            S.loads_json(b"[" * 65 + b"]" * 65)
        with self.assertRaisesRegex(ValueError, "nested deeper than 64"):
            S.loads_json(b'["x", ' + b"{" * 2 + b"[" * 100_000)


if __name__ == "__main__":
    unittest.main()
