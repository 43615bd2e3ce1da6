"""The orchestrator: turns Gitea webhooks into bottle runs and drives them to completion.

Import-time side effects are forbidden here; wiring happens in `bootstrap.build`.
"""

from bot_bottle.orchestrator.model import (  # noqa: F401
    ALLOWED_TRANSITIONS,
    IllegalTransition,
    OrchestratorError,
    RunRecord,
    RunState,
)
