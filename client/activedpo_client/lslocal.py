"""A Label Studio on this machine, for the tests, the benchmarks and the docs' screenshot.

:func:`start_local` runs ``label-studio start`` on 127.0.0.1 with SQLite in a data dir of its own, a preset
user and a legacy API token (Label Studio's documented headless start), with its network calls off (the
version check against PyPI, analytics): nothing is fetched at run time.

A fresh data dir spends most of a start on Label Studio's database migrations (about 40 s on two cores,
5 s for the rest). :func:`migrated_database` applies them once per Label Studio install, into a data dir
in the root of its virtual environment (``label-studio version`` migrates and exits; ``make install`` does
it); a start on a new data dir copies it. A copy from an older Label Studio is still correct: the start
applies whatever is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from activedpo_client.labelstudio import LabelStudioError

DATABASE = "label_studio.sqlite3"
MIGRATED = "activedpo-migrated-db"  # the migrated data dir, in the root of Label Studio's virtual environment
OFFLINE = {"LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false"}


def _environment(data_dir, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(OFFLINE, LABEL_STUDIO_BASE_DATA_DIR=str(data_dir), **more)
    return env


def migrated_database(binary) -> Path | None:
    """The data dir holding Label Studio's migrated, empty database for ``binary``, built on first use in the
    root of its virtual environment (its output in ``activedpo-migrated-db.log`` there); None where it
    cannot be kept (not in a virtual environment, not writable, or the migration failed): each start then
    migrates its own."""
    root = Path(binary).absolute().parent.parent
    if not (root / "pyvenv.cfg").exists():
        return None
    done = root / MIGRATED
    if (done / DATABASE).exists():
        return done
    work = root / f"{MIGRATED}.{os.getpid()}.tmp"
    try:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        with open(root / f"{MIGRATED}.log", "a") as out:
            subprocess.run([str(binary), "version"], env=_environment(work), stdout=out, stderr=out, check=True,
                           timeout=600)  # fmt: skip
        if not (work / DATABASE).exists():
            return None
        with suppress(OSError):  # another process built it meanwhile: its copy is as good
            work.rename(done)  # atomic: whoever looks finds a whole one or none
        return done if (done / DATABASE).exists() else None
    except (OSError, subprocess.SubprocessError):
        return None
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class LocalLabelStudio:
    """A Label Studio started by :func:`start_local`."""

    process: subprocess.Popen
    url: str
    token: str
    start_seconds: float
    restart_args: dict | None = None  # what start_local needs to start it again on the same port and data

    def restart(self) -> float:
        """Stop it and start it again on the same port with the same data; the seconds the start took."""
        self.stop()
        again = start_local(**(self.restart_args or {}))
        self.process, self.start_seconds = again.process, again.start_seconds
        return again.start_seconds

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_local(binary, data_dir, email: str = "admin@example.com", password: str = "activedpo-local",
                timeout: float = 300.0, log=None, port: int = 0,
                token: str | None = None) -> LocalLabelStudio:  # fmt: skip
    """Label Studio on 127.0.0.1 (``port``, default a free one) with SQLite in ``data_dir`` (a new one starts
    from :func:`migrated_database`), a preset user and a legacy API token; returns once ``/health`` answers.
    Being local, it accepts webhooks to local addresses (``SSRF_PROTECTION_ENABLED=false``)."""
    import secrets
    import socket
    import time
    import urllib.request

    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    token = token or secrets.token_hex(20)
    again = dict(binary=binary, data_dir=data_dir, email=email, password=password, timeout=timeout, log=log, port=port,
                 token=token)  # fmt: skip
    t0 = time.perf_counter()
    data_dir = Path(data_dir)
    if not (data_dir / DATABASE).exists() and (migrated := migrated_database(binary)) is not None:
        shutil.copytree(migrated, data_dir, dirs_exist_ok=True)
    env = _environment(data_dir, LABEL_STUDIO_USERNAME=email, LABEL_STUDIO_PASSWORD=password,
                       LABEL_STUDIO_USER_TOKEN=token, SSRF_PROTECTION_ENABLED="false")  # fmt: skip
    out = subprocess.DEVNULL if log is None else open(log, "a")  # noqa: SIM115 - the child keeps it open
    proc = subprocess.Popen([str(binary), "start", "--no-browser", "--port", str(port), "--host", "127.0.0.1",
                             "--enable-legacy-api-token"], env=env, stdout=out, stderr=out)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return LocalLabelStudio(proc, url, token, time.perf_counter() - t0, again)
        except OSError:
            if proc.poll() is not None or time.perf_counter() - t0 > timeout:
                proc.kill()
                raise LabelStudioError(f"Label Studio did not start ({binary}); see {log or 'its output'}") from None
            time.sleep(0.2)
