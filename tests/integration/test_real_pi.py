"""The real pi coding agent (`.ci/agents`, installed by `bash .ci/setup`, on Node.js 22 from
there) in a real bwrap bottle through `bot-bottle start/commit/resume`, against the fake
Anthropic Messages API (streamed; pi's base URL comes from the models.json the provider
writes): the cases of `_real_anthropic.AnthropicCliCases` with pi's `bash` tool, `--skill`
skills, and the prompt as the only user text (pi trims surrounding whitespace, so the
prompts have none)."""

import unittest

from tests.integration._real_anthropic import AnthropicCliCases


class RealPiTest(AnthropicCliCases, unittest.TestCase):
    PROVIDER, TOOL, EXACT = "pi", "bash", True


if __name__ == "__main__":
    unittest.main()
