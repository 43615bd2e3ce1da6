"""Webhook payload builders in the shape of Gitea 1.25's deliveries (same keys as the samples
in shared/gitea): issues opened/assigned/labelled/closed, comments on issues and pulls, PRs
opened/closed/merged. Encode with `fake_gitea.gitea_json` and send with `FakeGitea.deliver_webhook`.
"""

from __future__ import annotations

from typing import Any

from bot_bottle.demo_support.fake_gitea import ROOT, FakeGitea

_REPO_FALSE = ("empty", "private", "fork", "template", "mirror", "archived", "has_projects",
               "has_packages", "ignore_whitespace_conflicts", "allow_fast_forward_only_merge",
               "allow_manual_merge", "autodetect_manual_merge",
               "default_delete_branch_after_merge", "default_allow_maintainer_edit", "internal")
_REPO_TRUE = ("has_code", "has_issues", "has_wiki", "has_pull_requests", "has_releases",
              "has_actions", "allow_merge_commits", "allow_rebase", "allow_rebase_explicit",
              "allow_squash_merge", "allow_rebase_update")


def repository(g: FakeGitea, owner: str, repo: str) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": 12, "owner": g.user_json(owner), "name": repo, "full_name": f"{owner}/{repo}",
        "description": "", "size": 0, "language": "",
        "languages_url": f"{ROOT}/api/v1/repos/{owner}/{repo}/languages",
        "html_url": f"{ROOT}/{owner}/{repo}", "url": f"{ROOT}/api/v1/repos/{owner}/{repo}",
        "link": "", "ssh_url": f"git@gitea.example.com:{owner}/{repo}.git",
        "clone_url": f"{ROOT}/{owner}/{repo}.git", "original_url": "", "website": "",
        "stars_count": 0, "forks_count": 0, "watchers_count": 0, "open_issues_count": 0,
        "open_pr_counter": 0, "release_counter": 0, "default_branch": "main",
        "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z",
        "archived_at": "1970-01-01T00:00:00Z",
        "permissions": {"admin": False, "push": False, "pull": True},
        "internal_tracker": {"enable_time_tracker": True,
                             "allow_only_contributors_to_track_time": True,
                             "enable_issue_dependencies": True},
        "projects_mode": "all", "default_merge_style": "merge",
        "avatar_url": "", "mirror_interval": "", "object_format_name": "sha1",
        "mirror_updated": "0001-01-01T00:00:00Z", "topics": None, "licenses": None}
    d.update({k: False for k in _REPO_FALSE})
    d.update({k: True for k in _REPO_TRUE})
    order = ["id", "owner", "name", "full_name", "description", "empty", "private", "fork",
             "template", "mirror", "size", "language", "languages_url", "html_url", "url",
             "link", "ssh_url", "clone_url", "original_url", "website", "stars_count",
             "forks_count", "watchers_count", "open_issues_count", "open_pr_counter",
             "release_counter", "default_branch", "archived", "created_at", "updated_at",
             "archived_at", "permissions", "has_code", "has_issues", "internal_tracker",
             "has_wiki", "has_pull_requests", "has_projects", "projects_mode", "has_releases",
             "has_packages", "has_actions", "ignore_whitespace_conflicts",
             "allow_merge_commits", "allow_rebase", "allow_rebase_explicit",
             "allow_squash_merge", "allow_fast_forward_only_merge", "allow_rebase_update",
             "allow_manual_merge", "autodetect_manual_merge",
             "default_delete_branch_after_merge", "default_merge_style",
             "default_allow_maintainer_edit", "avatar_url", "internal", "mirror_interval",
             "object_format_name", "mirror_updated", "topics", "licenses"]
    return {k: d[k] for k in order}


def _item(g: FakeGitea, owner: str, repo: str, number: int) -> dict:
    return g.repos[(owner, repo)]["items"][number]  # caller holds g.lock


def issue_event(g: FakeGitea, owner: str, repo: str, number: int, action: str,
                sender: str) -> dict[str, Any]:
    """`issues` payload (action opened/assigned/unassigned/label_updated/closed/edited)."""
    with g.lock:
        issue = g.issue_json(owner, repo, _item(g, owner, repo, number))
    return {"action": action, "number": number, "issue": issue,
            "repository": repository(g, owner, repo), "sender": g.user_json(sender),
            "commit_id": ""}


def comment_event(g: FakeGitea, owner: str, repo: str, number: int, comment_id: int,
                  sender: str, action: str = "created") -> dict[str, Any]:
    """`issue_comment` payload; on a PR it also carries `pull_request` and is_pull=true."""
    with g.lock:
        it = _item(g, owner, repo, number)
        c = next(c for c in g.repos[(owner, repo)]["comments"][number] if c["id"] == comment_id)
        d: dict[str, Any] = {"action": action, "issue": g.issue_json(owner, repo, it)}
        if it["pr"]:
            d["pull_request"] = g.pull_json(owner, repo, it)
        d["comment"] = g.comment_json(owner, repo, number, c)
    d.update({"repository": repository(g, owner, repo), "sender": g.user_json(sender),
              "is_pull": bool(it["pr"])})
    return d


def pull_request_event(g: FakeGitea, owner: str, repo: str, number: int, action: str,
                       sender: str) -> dict[str, Any]:
    """`pull_request` payload (opened/closed; a merge is closed with merged=true)."""
    with g.lock:
        pr = g.pull_json(owner, repo, _item(g, owner, repo, number))
    return {"action": action, "number": number, "pull_request": pr, "requested_reviewer": None,
            "repository": repository(g, owner, repo), "sender": g.user_json(sender),
            "commit_id": "", "review": None}


def close_issue(g: FakeGitea, owner: str, repo: str, number: int, *, merged: bool = False) -> None:
    """Close an issue or PR in the fake (and mark a PR merged) before building the event."""
    with g.lock:
        it = g.repos[(owner, repo)]["items"][number]
        it["state"] = "closed"
        if it["pr"] and merged:
            it["pr"]["merged"] = True
