"""What `bot-bottle-orchestrator demo` needs beside the service, shipped for it alone: a fake
Gitea answering like the real one (REST and git smart HTTP, `fake_gitea`, with the payload
builders of `fake_gitea_payloads`), a home with scripted agents (`homes`), and the scripted
agents that run inside the demo's bottles (`scripted_agent`, `push_probe`). Test-only
stand-ins live in the repository's `tests/support`, outside the package."""
