"""Stand-ins the tests use and the service never ships: fake model APIs speaking the real
streaming formats (`fake_anthropic`, `fake_openai`), an in-memory forge (`fake_forge`) and a fake
core CLI (`fake_core_cli`, run as `python -m tests.support.fake_core_cli` from the checkout).
The fake Gitea and the scripted agents are the demo's, in `bot_bottle.demo_support`."""
