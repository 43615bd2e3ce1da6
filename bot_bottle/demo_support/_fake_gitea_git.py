"""The fake Gitea's git: one bare repository per fake repo, served over smart HTTP by the real
`git http-backend` (a CGI run per request) behind Gitea's rules for a private repository.

Like Gitea (`routers/web/repo/githttp.go`): the URLs are `/{owner}/{repo}.git/info/refs`,
`.../git-upload-pack` and `.../git-receive-pack` (the `.git` suffix is optional); a request
without a valid token is `401` with `WWW-Authenticate: Basic realm="Gitea"`; a token is
accepted as `Authorization: token X` / `Bearer X` or as either half of Basic credentials; a
token without a repository scope is `403` (fetching needs `read:repository` or
`write:repository`, pushing `write:repository`); an unknown repository is `404 Repository not
found`. Per-repository permissions are not modelled for git: any valid token with the scope
may fetch and push. A bare repository is created on first use (or by `seed`), so fakes that
never touch git cost no subprocess.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

GIT_ROUTE = re.compile(r"/([^/]+)/([^/]+?)(?:\.git)?/(info/refs|git-upload-pack|git-receive-pack)")
READ_SCOPES = frozenset({"read:repository", "write:repository"})
WRITE_SCOPES = frozenset({"write:repository"})
MAX_BODY = 64 * 1024 * 1024  # a test repository's pack; more is a bug in the test
_IDENT = {"GIT_AUTHOR_NAME": "fake gitea", "GIT_AUTHOR_EMAIL": "fake@gitea.invalid",
          "GIT_COMMITTER_NAME": "fake gitea", "GIT_COMMITTER_EMAIL": "fake@gitea.invalid"}


def _git_env() -> dict[str, str]:
    # nothing from the test runner's git configuration may change what the fake serves
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent",
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null", "LANG": "C"}


class GitRepos:
    """Bare repositories under a private temp dir: `<root>/<owner>/<repo>.git`."""

    def __init__(self) -> None:
        self._root: Path | None = None
        self._lock = threading.Lock()

    def bare(self, owner: str, repo: str, branch: str) -> Path:
        """The repository's bare directory, created (HEAD -> `branch`) on first use."""
        with self._lock:
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="fake-gitea-git-"))
            path = self._root / owner / f"{repo}.git"
            if not (path / "HEAD").exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                subprocess.run(["git", "init", "-q", "--bare", f"--initial-branch={branch}", str(path)],
                               env=_git_env(), check=True, stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=30)
            return path

    @property
    def root(self) -> Path | None:
        return self._root

    def commit(self, owner: str, repo: str, branch: str, files: dict[str, str],
               message: str = "seed") -> str:
        """Commit `files` (path -> text) on top of `branch` in one `git fast-import`; the sha."""
        path = self.bare(owner, repo, branch)
        ref = f"refs/heads/{branch}"
        has_parent = subprocess.run(["git", "rev-parse", "-q", "--verify", ref], cwd=path,
                                    env=_git_env(), capture_output=True).returncode == 0
        stamp = f"{int(time.time())} +0000"
        msg = message.encode()
        stream = [f"commit {ref}\nauthor fake gitea <fake@gitea.invalid> {stamp}\n"
                  f"committer fake gitea <fake@gitea.invalid> {stamp}\n".encode(),
                  b"data %d\n" % len(msg), msg, b"\n"]
        if has_parent:
            stream.append(f"from {ref}^0\n".encode())
        for name, text in files.items():
            data = text.encode()
            stream += [f"M 100644 inline {name}\n".encode(), b"data %d\n" % len(data), data, b"\n"]
        subprocess.run(["git", "fast-import", "--quiet"], cwd=path, input=b"".join(stream),
                       env={**_git_env(), **_IDENT}, check=True, capture_output=True, timeout=30)
        return subprocess.run(["git", "rev-parse", ref], cwd=path, env=_git_env(), check=True,
                              capture_output=True, text=True).stdout.strip()

    def cleanup(self) -> None:
        with self._lock:
            if self._root is not None:
                shutil.rmtree(self._root, ignore_errors=True)
                self._root = None


def tokens_in(authorization: str) -> list[str]:
    """The candidate tokens in an `Authorization` header as Gitea reads it for git: `token X`,
    `Bearer X`, or Basic credentials whose user or password is a token."""
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() in ("token", "bearer"):
        return [value]
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return []
        return [user, password]
    return []


def serve(handler, method: str, match: re.Match) -> None:
    """Answer one git smart HTTP request on `handler` (a `BaseHTTPRequestHandler`)."""
    g = handler.gitea
    owner, repo, rest = match.groups()
    query = handler.path.split("?", 1)[1] if "?" in handler.path else ""
    body = _read_body(handler)
    if body is None:
        return _text(handler, 413, "request body too large\n")
    service = rest if rest != "info/refs" else dict(
        p.partition("=")[::2] for p in query.split("&") if p).get("service", "")
    with g.lock:
        login, token = _login(g, handler.headers.get("Authorization", ""))
        known = (owner, repo) in g.repos
        branch = g.repos[(owner, repo)]["branch"] if known else "main"
        g.git_requests.append({"method": method, "path": handler.path.split("?", 1)[0],
                               "service": service, "user": login})
    if service not in ("git-upload-pack", "git-receive-pack"):
        return _text(handler, 403, "dumb HTTP is not served\n")
    if login is None:
        return _text(handler, 401, "Unauthorized\n", {"WWW-Authenticate": 'Basic realm="Gitea"'})
    needed = WRITE_SCOPES if service == "git-receive-pack" else READ_SCOPES
    if not g.scopes.get(token, set()) & needed:
        return _text(handler, 403, "token does not have at least one of required scope(s), "
                                   f"required=[{sorted(needed)[-1]}]\n")
    if not known:
        return _text(handler, 404, "Repository not found\n")
    g.git.bare(owner, repo, branch)
    env = {**_git_env(), "GIT_PROJECT_ROOT": str(g.git.root), "GIT_HTTP_EXPORT_ALL": "1",
           "PATH_INFO": f"/{owner}/{repo}.git/{rest}", "QUERY_STRING": query,
           "REQUEST_METHOD": method, "REMOTE_USER": login, "REMOTE_ADDR": "127.0.0.1",
           "CONTENT_TYPE": handler.headers.get("Content-Type", ""),
           "CONTENT_LENGTH": str(len(body))}
    if handler.headers.get("Content-Encoding"):
        env["HTTP_CONTENT_ENCODING"] = handler.headers["Content-Encoding"]
    if re.fullmatch(r"[0-9a-zA-Z=:]+", handler.headers.get("Git-Protocol", "")):
        env["GIT_PROTOCOL"] = handler.headers["Git-Protocol"]
    done = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True,
                          timeout=60)
    head, _, payload = done.stdout.partition(b"\r\n\r\n")
    status, headers = 200, {}
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.split()[0])
        elif name:
            headers[name] = value.strip()
    handler.send_response(status)
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


def _login(g, authorization: str) -> tuple[str | None, str]:
    for token in tokens_in(authorization):
        if token and token in g.tokens:
            return g.tokens[token], token
    return None, ""


def _read_body(handler) -> bytes | None:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        parts, total = [], 0
        while True:
            size = int(handler.rfile.readline(100).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline(1000) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > MAX_BODY:
                handler.close_connection = True
                return None
            parts.append(handler.rfile.read(size))
            handler.rfile.readline(10)  # the CRLF after each chunk
    length = int(handler.headers.get("Content-Length") or 0)
    if length > MAX_BODY:
        handler.close_connection = True
        return None
    return handler.rfile.read(length) if length else b""


def _text(handler, status: int, text: str, headers: dict | None = None) -> None:
    raw = text.encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "text/plain; charset=utf-8")
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(raw)))
    handler.end_headers()
    handler.wfile.write(raw)
