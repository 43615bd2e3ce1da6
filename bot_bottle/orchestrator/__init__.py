"""The orchestrator: turns Gitea webhooks into bottle runs and drives them to completion.

`from bot_bottle.orchestrator import X` works for the names below, each imported lazily
(PEP 562), so `status` pays for none of them (not even the model: dataclasses, enum, hashlib).
Import-time side effects are forbidden here; wiring happens in `bootstrap.build`.
"""

from importlib import import_module

_LAZY = {
    "ALLOWED_TRANSITIONS": "model", "IllegalTransition": "model",
    "OrchestratorError": "model", "RunRecord": "model", "RunState": "model",
    "Config": "config", "ConfigError": "config",
    "SqliteRunStore": "store", "StoreError": "store",
    "BottleRunner": "runner", "BottleExit": "runner", "RunnerError": "runner",
    "SubprocessBottleRunner": "runner",
    "decide": "lifecycle", "Executor": "executor", "Orchestrator": "dispatcher",
    "WebhookApp": "webhook", "SidecarApp": "sidecar", "Watchdog": "watchdog",
}

__all__ = ["ALLOWED_TRANSITIONS", "IllegalTransition", "OrchestratorError", "RunRecord",
           "RunState", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
