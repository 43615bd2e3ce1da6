"""The run's pull request, opened by the service after done when the agent pushed through the
git gate but opened none itself.

`PrOpener.open(run)` carries out the `OpenPr` action (`lifecycle.decide` asks for it on a done
signal with status `done` for a run without a PR): refresh the run's gate repository from Gitea
(`git_gate_repo`); if the run's branch there has commits the default branch lacks, open a PR
from it onto the default branch, titled like the issue, its body linking the issue and the
run's provenance, and record it exactly like a PR the agent opened through the sidecar (op-log
`pr_opened`, the run's `pr_number`), so it joins the run's write scope. No branch or nothing
new: nothing to do. A failure is logged and said on the issue; the next done tries again.
"""

from __future__ import annotations

import logging
from typing import Callable

from bot_bottle.contrib.forge.base import ForgeError
from bot_bottle.orchestrator.git_gate_repo import GateRepos, GitGateError
from bot_bottle.orchestrator.model import RunRecord
from bot_bottle.orchestrator.sidecar import PR_OPENED
from bot_bottle.orchestrator.targeting import marked

log = logging.getLogger(__name__)


class PrOpener:
    def __init__(self, store, repos: GateRepos, forge_factory: Callable[[str, str], object], *,
                 provenance_url: Callable[[int], str], clock: Callable[[], float],
                 marker: str) -> None:
        self._store = store
        self._repos = repos
        self._forge_factory = forge_factory
        self._provenance_url = provenance_url
        self._clock = clock
        self._marker = marker

    def open(self, run: RunRecord) -> RunRecord:
        """The run, with its PR when one was opened."""
        if run.pr_number is not None:
            return run
        where = f"repo={run.repo_full_name} issue={run.issue_number} run={run.id}"
        try:
            with self._repos.lock(run):
                remote = self._repos.sync(run)
                ahead = self._repos.ahead(run, remote)
            if not ahead:
                log.info("no pull request: %s has no new commits on Gitea %s",
                         remote.branch, where)
                return run
            if remote.default is None:
                raise GitGateError("the repository has no default branch to merge into")
            forge = self._forge_factory(run.owner, run.repo)
            issue = forge.read_issue(run.issue_number)
            pr = forge.open_pr(title=issue.title, body=self.body(run, remote.branch, ahead),
                               head=remote.branch, base=remote.default)
        except (GitGateError, ForgeError) as exc:
            log.error("could not open the pull request: %s %s", exc, where)
            now = self._clock()
            self._store.enqueue_comment(
                run.id, run.owner, run.repo, run.issue_number,
                marked(f"Could not open a pull request for the agent's branch: {exc}. The next "
                       "done signal tries again.", self._marker), now)
            return run
        now = self._clock()
        self._store.append_op(run.id, PR_OPENED, {"number": pr.number, "by": "git gate"}, now,
                              essential=True)
        log.info("opened PR #%s from %s %s", pr.number, remote.branch, where)
        return self._store.update_run(run.id, now=now, pr_number=pr.number)

    def body(self, run: RunRecord, branch: str, ahead: int) -> str:
        commits = "1 commit" if ahead == 1 else f"{ahead} commits"
        return (f"For #{run.issue_number}: the work of bot-bottle run {run.id} (agent "
                f"`{run.agent}`), {commits} on `{branch}`, delivered through the git gate.\n\n"
                f"Provenance: {self._provenance_url(run.id)}")
