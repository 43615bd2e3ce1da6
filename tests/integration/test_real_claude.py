"""The real Claude Code CLI (`.ci/agents`, installed by `bash .ci/setup`) in a real bwrap
bottle through `bot-bottle start/commit/resume`, against the fake Anthropic Messages API
(streamed): the cases of `_real_anthropic.AnthropicCliCases` with claude's `Bash` tool."""

import unittest

from tests.integration._real_anthropic import AnthropicCliCases


class RealClaudeTest(AnthropicCliCases, unittest.TestCase):
    PROVIDER, TOOL, EXACT = "claude", "Bash", False


if __name__ == "__main__":
    unittest.main()
