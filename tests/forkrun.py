"""Run many ``personae`` command lines fast, each in its own forked process.

Starting a Python interpreter costs about half a second here, so a sweep of a
few hundred hostile command lines would take minutes. This script imports
personae once, then forks one child per command line: each child is a real,
separate process with its own stdin, stdout, stderr, working folder and exit
status, that runs ``personae.app.cli.main`` as ``python -m personae`` would
(an exception that escapes is printed as the interpreter prints it, with
"Traceback"). Usage::

    python tests/forkrun.py < cases.json > results.json

``cases.json`` is a list of ``{"argv": [...], "cwd": ..., "stdin": FILE or
null, "timeout": seconds, "env": {NAME: value or null}}`` (``env``, optional:
variables set, or unset where null, in that child only); each result is ``{"argv", "status", "stdout",
"stderr"}``, status ``None`` for a child killed by the hang guard.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from typing import Any

# Everything a command imports lazily, imported once before forking.
import personae.app.chat
import personae.app.cli
import personae.app.commands
import personae.app.config
import personae.app.emit_client
import personae.app.replay
import personae.app.replay_control
import personae.app.runtime
import personae.language.lint
import personae.language.loader
import personae.storage.store


def _child(case: dict[str, Any], out: str, err: str, stdio: dict[str, tuple[str, str]]) -> None:
    """Become the command: never returns."""
    code = 1
    try:
        os.chdir(case["cwd"])
        for name, value in case.get("env", {}).items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        fd = os.open(case.get("stdin") or os.devnull, os.O_RDONLY)
        os.dup2(fd, 0)
        os.dup2(os.open(out, os.O_WRONLY), 1)
        os.dup2(os.open(err, os.O_WRONLY), 2)
        # The same encodings and error handlers as the interpreter's own streams.
        sys.stdin = open(0, encoding=stdio["stdin"][0], errors=stdio["stdin"][1], closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", encoding=stdio["stdout"][0], errors=stdio["stdout"][1], closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", encoding=stdio["stderr"][0], errors=stdio["stderr"][1], closefd=False)  # noqa: SIM115
        sys.argv = ["personae", *case["argv"]]
        try:
            result = personae.app.cli.main(case["argv"])
            code = int(result or 0)
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = int(exc.code or 0)
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
        # As the interpreter does at exit: wait for non-daemon threads.
        threading._shutdown()  # type: ignore[attr-defined]
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def run(case: dict[str, Any], stdio: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """Fork a child for ``case`` and collect what it wrote and its exit status."""
    with tempfile.NamedTemporaryFile(delete=False) as o, tempfile.NamedTemporaryFile(delete=False) as e:
        out, err = o.name, e.name
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        _child(case, out, err, stdio)
    started = time.monotonic()
    deadline = started + float(case.get("timeout", 30))
    status: int | None = None
    while True:
        done, wait_status = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(wait_status)
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            break
        time.sleep(0.005)
    with open(out, "rb") as f:
        stdout = f.read().decode("utf-8", "replace")
    with open(err, "rb") as f:
        stderr = f.read().decode("utf-8", "replace")
    os.unlink(out)
    os.unlink(err)
    elapsed = time.monotonic() - started
    return {"argv": case["argv"], "status": status, "stdout": stdout, "stderr": stderr, "elapsed": elapsed}


def main() -> None:
    """Read the cases on stdin, write the results on stdout."""
    cases = json.load(sys.stdin)
    stdio = {name: (getattr(sys, name).encoding, getattr(sys, name).errors) for name in ("stdin", "stdout", "stderr")}
    results = [run(case, stdio) for case in cases]
    out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", errors="surrogatepass")
    json.dump(results, out)
    out.flush()


if __name__ == "__main__":
    main()
