"""The hostile agents of tests/integration/test_hostile_agent.py: Python sources the `command`
provider runs in a real bwrap bottle as `python3 -I -c <source> [args]`.

Each agent shares `PRELUDE`: raw HTTP/1.1 on the sidecar socket (`request`), `done` (retried
after a 503 or a refused connection, until 202 or a deadline), `report(name, data)` (an atomic
`/workspace/<name>.json` the test reads on the host side while the bottle runs) and
`wait_release(name)` (a fifo in the workspace: the agent blocks in `open` until the test opens
the other end, so every step is driven by an event, never a sleep). A report is written before
`done`: done freezes the bottle, which stops the agent.

`SNIPPETS` maps an agent name to its body; `command(name, *args)` is its manifest's argv.
"""

from __future__ import annotations

PRELUDE = r'''
import errno, json, os, re, socket, sys, time
WS = "/workspace"
SOCK = os.environ.get("BOT_BOTTLE_FORGE_SOCKET", "")
TOKEN = os.environ.get("BOT_BOTTLE_FORGE_RUN_TOKEN", "")

def code(exc):
    return errno.errorcode.get(exc.errno, str(exc)) if isinstance(exc, OSError) else repr(exc)

def prompt():
    try:
        with open(os.environ["BOT_BOTTLE_PROMPT_FILE"], encoding="utf-8") as fh:
            return fh.read()
    except (KeyError, OSError):
        return sys.stdin.read()

def issue_number():
    found = re.search(r"#(\d+)", prompt())
    return int(found.group(1)) if found else 1

def report(name, data):
    tmp = os.path.join(WS, "." + name + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh)
    os.rename(tmp, os.path.join(WS, name + ".json"))

def wait_release(name="release"):
    path = os.path.join(WS, name)
    os.mkfifo(path)
    open(path, "rb").close()  # returns once the test has opened the writing end
    os.unlink(path)

def request(method, path, body=b"", token=TOKEN, timeout=30):
    """(status, body) of one request on the sidecar socket; status 0 if no HTTP answer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(SOCK)
        head = (f"{method} {path} HTTP/1.1\r\nHost: sidecar\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n")
        if token:
            head += f"Authorization: Bearer {token}\r\n"
        s.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.") else 0
    return status, data.partition(b"\r\n\r\n")[2]

def done(status="done", summary="", deadline=60.0):
    """POST /done until 202 (again after a 503 or a refused connection) or the deadline."""
    tries, end = [], time.monotonic() + deadline
    body = json.dumps({"status": status, "summary": summary}).encode()
    while True:
        try:
            answer = request("POST", "/done", body)[0]
        except OSError as exc:
            answer = code(exc)
        tries.append(answer)
        if answer == 202 or time.monotonic() > end:
            print("bot-bottle hostile agent: done answered", tries, flush=True)  # agent.log
            return tries
        time.sleep(0.1)  # the sidecar is full: try again shortly (bounded by the deadline)
'''

SNIPPETS = {
    # private files: its own files made world-readable, then held until released
    "modes": r'''
leak = os.path.join(WS, "leak.txt")
with open(leak, "w") as fh:
    fh.write("the agent's work\n")
os.chmod(leak, 0o666)
os.chmod(WS, 0o777)
report("ready", {"uid": os.getuid()})
wait_release()
done("done", "modes")
''',
    # a fork bomb: children blocking on a pipe until EAGAIN (or the limit + 200), held at the
    # peak until released
    "bomb": r'''
limit = int(sys.argv[1])
r, w = os.pipe()
kids, error = [], None
for _ in range(limit + 200):
    try:
        pid = os.fork()
    except OSError as exc:
        error = code(exc)
        break
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    kids.append(pid)
report("peak", {"forked": len(kids), "error": error})
wait_release()
os.close(w)
for pid in kids:
    os.waitpid(pid, 0)
done("done", "bomb")
''',
    # host root: /etc/shadow, the service's secrets file, a setuid binary left behind
    "root": r'''
import shutil
def read(path):
    try:
        with open(path, "rb") as fh:
            return {"read": len(fh.read())}
    except OSError as exc:
        return {"error": code(exc)}
out = {"uid": os.getuid(), "euid": os.geteuid(), "shadow": read("/etc/shadow"),
       "env_file": read(sys.argv[1])}
suid = os.path.join(WS, "suid-id")
shutil.copy("/usr/bin/id", suid)
try:
    os.chmod(suid, 0o6755)
    out["chmod"] = "ok"
except OSError as exc:
    out["chmod"] = code(exc)
out["mode"] = oct(os.stat(suid).st_mode)
report("result", out)
done("done", "root")
''',
    # working until released; the test closes its issue meanwhile
    "hold": r'''
report("ready", {})
wait_release()
done("done", "held")
''',
    # records each prompt it was given: a re-prompt shows as a further line
    "prompts": r'''
with open(os.path.join(WS, "prompts.log"), "a") as fh:
    fh.write(json.dumps(prompt()) + "\n")
with open(os.path.join(WS, "prompts.log")) as fh:
    n = sum(1 for _ in fh)
done("done", f"prompt {n}")
''',
    # sidecar bodies and paths: JSON nested 100k deep, then 500 calls with 60 KB paths
    "abuse": r'''
n = issue_number()
report("ready", {})
wait_release()
out = {"deep": request("POST", f"/issues/{n}/comments", b"[" * 100000 + b"]" * 100000)[0],
       "alive_after_deep": request("GET", f"/issues/{n}")[0]}
long_path = f"/issues/{n}/" + "a" * 60000
answers, started = {}, time.monotonic()
for _ in range(500):
    try:
        answer = str(request("GET", long_path)[0])
    except OSError as exc:
        answer = code(exc)
    answers[answer] = answers.get(answer, 0) + 1
out["long_paths"] = answers
out["seconds"] = time.monotonic() - started
out["alive_after_paths"] = request("GET", f"/issues/{n}")[0]
report("result", out)
done("done", "abuse")
''',
    # token-less connections trickling a byte a second until the service cuts them
    "trickle": r'''
import selectors
count = int(sys.argv[1])
report("ready", {})
wait_release()
line = b"GET /issues/1 HTTP/1.1\r\nHost: sidecar\r\nX-Pad: " + b"a" * 400
conns = []
for i in range(count):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(SOCK)
    s.setblocking(False)
    conns.append({"s": s, "opened": time.time(), "closed": None, "sent": 0, "answer": b""})
sel = selectors.DefaultSelector()
for c in conns:
    sel.register(c["s"], selectors.EVENT_READ, c)

def close(c, when):
    if c["closed"] is None:
        c["closed"] = when
        sel.unregister(c["s"])
        c["s"].close()

started, saturated, next_byte = time.time(), False, time.monotonic()
while any(c["closed"] is None for c in conns) and time.time() - started < 75:
    for key, _ in sel.select(max(0.0, next_byte - time.monotonic())):
        c = key.data
        try:
            data = c["s"].recv(4096)
        except OSError:
            data = b""
        c["answer"] += data
        if not data:
            close(c, time.time())
    if time.monotonic() >= next_byte:
        next_byte += 1.0
        for c in conns:
            if c["closed"] is None and c["sent"] < len(line):
                try:
                    c["s"].send(line[c["sent"]:c["sent"] + 1])
                    c["sent"] += 1
                except OSError:
                    close(c, time.time())
    if not saturated and time.time() - started > 2:
        saturated = True
        report("saturated", {"at": time.time(),
                             "open": sum(c["closed"] is None for c in conns)})
for c in conns:
    if c["closed"] is None:  # never cut: recorded as such
        c["s"].close()
report("result", {"started": started, "conns": [
    {"opened": c["opened"], "closed": c["closed"], "sent": c["sent"],
     "answer": c["answer"][:200].decode("latin-1")} for c in conns]})
done("done", "trickled")
''',
    # a run that only signals done once released, retrying while the sidecar is full
    "legit": r'''
report("ready", {})
wait_release()
done("done", "legit", deadline=75)
''',
    # a poison for freeze: an unreadable file and a path over PATH_MAX, then done
    "poison": r'''
report("ready", {})
wait_release()
secret = os.path.join(WS, "unreadable.txt")
with open(secret, "w") as fh:
    fh.write("no one reads this\n")
os.chmod(secret, 0)
os.chdir(WS)
depth, length = 0, len(WS)
while length <= 4400:  # longer than PATH_MAX (4096) inside the bottle, longer still outside
    os.mkdir("d" * 200)
    os.chdir("d" * 200)
    depth, length = depth + 1, length + 201
with open("deep.txt", "w") as fh:
    fh.write("deep\n")
os.chdir(WS)
report("poisoned", {"depth": depth, "length": length})
done("done", "poisoned")
''',
    "bystander": r'''
report("ready", {})
wait_release()
done("done", "bystander")
''',
    # a 20 GiB sparse file (or, under a smaller file-size limit, 21 GiB of 7 GiB ones)
    "sparse": r'''
GIB = 1 << 30
out = {}
try:
    with open(os.path.join(WS, "huge.bin"), "wb") as fh:
        fh.truncate(20 * GIB)
    out["single"] = "ok"
except OSError as exc:
    out["single"] = code(exc)
    for i in range(3):
        with open(os.path.join(WS, f"huge{i}.bin"), "wb") as fh:
            fh.truncate(7 * GIB)
names = [n for n in os.listdir(WS) if n.startswith("huge")]
out["apparent"] = sum(os.stat(os.path.join(WS, n)).st_size for n in names)
out["used"] = sum(os.stat(os.path.join(WS, n)).st_blocks * 512 for n in names)
report("result", out)
done("done", "sparse")
''',
}


def source(name: str) -> str:
    return PRELUDE + SNIPPETS[name]


def command(name: str, *args: str) -> list[str]:
    """The agent manifest's `command` for agent `name`."""
    return ["python3", "-I", "-c", source(name), *args]


def flood_command(size: int) -> list[str]:
    """`size` bytes on stderr without a newline, then exit (no done)."""
    return ["sh", "-c", f"head -c {int(size)} /dev/zero | tr '\\0' x >&2"]
