"""The programs exit without the interpreter's teardown, but with their status, their output, their exit
handlers, and never under a thread that is still working."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

HEAD = """import atexit, os, threading, time
import typer
from activedpo_core.program import run

app = typer.Typer()
atexit.register(lambda: open(os.environ["ATEXIT_FILE"], "w").write("ran"))


@app.command()
def main():
"""


def run_program(body: str, tmp_path) -> subprocess.CompletedProcess:
    """Run a one-command Typer program whose command is ``body`` through :func:`run`."""
    script = tmp_path / "prog.py"
    script.write_text(HEAD + textwrap.indent(textwrap.dedent(body).strip(), "    ") + "\n\n\nrun(app)\n")
    env = dict(os.environ, ATEXIT_FILE=str(tmp_path / "atexit"))
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)


def test_the_exit_status_output_and_exit_handlers_survive_the_fast_exit(tmp_path):
    done = run_program('print("partial line", end="")\nraise typer.Exit(3)', tmp_path)
    assert (done.returncode, done.stdout) == (3, "partial line")
    assert (tmp_path / "atexit").read_text() == "ran"
    done = run_program('print("fine")', tmp_path)
    assert (done.returncode, done.stdout) == (0, "fine\n")


def test_a_live_worker_thread_is_waited_for(tmp_path):
    marker = tmp_path / "worker"
    body = f"""
        def work():
            time.sleep(0.5)
            open({str(marker)!r}, "w").write("finished")
        threading.Thread(target=work).start()
    """
    done = run_program(body, tmp_path)
    assert done.returncode == 0 and marker.read_text() == "finished"
