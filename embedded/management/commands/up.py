"""The embedded run: one command, no services (docs/architecture.md#processes).

Migrates the SQLite database, loads the demo sites and queues, submits a demo workflow and a demo
campaign, starts the web server, the loops (`run_loops`) and local pilots (`run_local_pilots`),
prints the monitor URL and stops everything it started on Ctrl-C.
"""

from __future__ import annotations

import fcntl
import io
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from embedded.demo.campaign import demo_campaign_submit
from embedded.demo.workflow import demo_workflow_submit

DEMO_QUEUES = Path(__file__).resolve().parents[2] / "demo" / "queues.yaml"
UP_LOGS_KEPT = 5  # up.log.1 … up.log.5: the logs of the five runs before this one


class Command(BaseCommand):
    help = "Run ailuro embedded: database, demo setup, web server, loops and local pilots."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--no-demo", action="store_true", help="Do not submit the demo workflow and campaign."
        )
        parser.add_argument(
            "--exit-after", type=float, default=0, help="Stop after N seconds (scripted checks)."
        )

    def handle(
        self, *args: Any, host: str, port: int, no_demo: bool, exit_after: float, **options: Any
    ) -> None:
        started = time.monotonic()
        base = f"http://{host}:{port}"
        # Each line reaches a pipe or a file at once (the banner with the URLs above all), not when
        # a block buffer fills or the process ends.
        if isinstance(sys.stdout, io.TextIOWrapper):
            sys.stdout.reconfigure(line_buffering=True)
        data_lock = self._lock_data_dir()  # before anything of the data directory is touched
        log_path = Path(settings.DATA_DIR) / "up.log"
        log_rotate(log_path, keep=UP_LOGS_KEPT)
        # This process's and the children's JSON logs go to one file (appends, so the writers never
        # overwrite each other), and the terminal keeps the banner readable; production processes
        # log to stdout (docs/architecture.md#errors-and-logs).
        log = log_path.open("a", encoding="utf-8", buffering=1)
        for handler in logging.getLogger().handlers:
            if type(handler) is logging.StreamHandler:
                handler.setStream(log)
        try:
            self._run(base, host, port, no_demo, exit_after, started, log, log_path)
        finally:
            log.close()
            data_lock.close()

    def _lock_data_dir(self) -> IO[str]:
        """Hold DATA_DIR/up.lock for the life of this process. A second `up` on the same data
        directory would truncate the first one's log, share its SQLite database and fight over its
        port; it stops here instead, naming the holder. The kernel releases the lock when the
        holder exits, however it exits, so a crash leaves nothing stale behind."""
        path = Path(settings.DATA_DIR) / "up.lock"
        handle = path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise CommandError(
                f"the data directory {settings.DATA_DIR} is in use by another `ailuro up` (pid {holder}); "
                "stop that one first, or give this one another directory with AILURO_DATA_DIR"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return handle

    def _run(
        self,
        base: str,
        host: str,
        port: int,
        no_demo: bool,
        exit_after: float,
        started: float,
        log: IO[str],
        log_path: Path,
    ) -> None:
        try:
            password, demo_lines = self._prepare(base, no_demo=no_demo)
        except KeyboardInterrupt:
            # Nothing runs yet (the database work is transactional): say so instead of a traceback.
            self.stderr.write("interrupted during start-up; nothing was started")
            raise SystemExit(130) from None
        # From here Ctrl-C (or SIGTERM) only asks to stop, whenever it comes: before the banner too,
        # so an early Ctrl-C still stops every child and exits 0 (a handler installed only once the
        # banner was out let KeyboardInterrupt escape from the readiness poll).
        self._stopping = False
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        children = self._start_children(host, port, log)
        try:
            if not self._wait_ready(base + "/", children[0], log_path):
                return
            self.stdout.write(
                self.style.SUCCESS(f"ailuro is up in {time.monotonic() - started:.1f} s\n")
                + f"  monitor:  {base}/\n"
                + f"  admin:    {base}/admin/  (user admin, password {password})\n"
                + f"  API docs: {base}/api/docs/\n"
                + demo_lines
                + f"  logs:     {log_path}  (JSON, one event a line: tail -f it)\n"
                + "Ctrl-C stops everything."
            )
            self._supervise(children, exit_after, log_path)
        finally:
            self._stop(children)

    def _prepare(self, base: str, *, no_demo: bool) -> tuple[str, str]:
        """Database, static files, demo queues, the admin account and the demo submissions; returns
        the admin password and the banner's demo lines."""
        call_command("migrate", verbosity=0, interactive=False)
        call_command("collectstatic", verbosity=0, interactive=False)
        call_command("load_queues", str(DEMO_QUEUES), verbosity=0)
        password = self._admin_password()
        demo_lines = ""
        if not no_demo:
            workflow = demo_workflow_submit()
            campaign = demo_campaign_submit()
            self.stdout.write(f"demo workflow {workflow.pk} submitted ({workflow.jobs.count()} jobs)")
            demo_lines = (
                f"  demo workflow: {base}/workflow/{workflow.pk}/\n"
                f"  demo campaign: {base}/campaign/{campaign.pk}/  (one group fails once: restart it there)\n"
            )
        return password, demo_lines

    def _admin_password(self) -> str:
        path = Path(settings.DATA_DIR) / "admin_password"
        password = path.read_text().strip() if path.exists() else secrets.token_urlsafe(12)
        if not path.exists():
            path.write_text(password)
            path.chmod(0o600)
        user_model = get_user_model()
        admin = user_model.objects.filter(username="admin").first()
        if admin is None:
            user_model.objects.create_superuser("admin", "", password)
        return password

    def _start_children(self, host: str, port: int, log: IO[str]) -> list[subprocess.Popen[bytes]]:
        """Web server, loops and local pilots, logging to `log`."""
        python = sys.executable
        manage = str(Path(settings.BASE_DIR) / "manage.py")
        commands = [
            [
                python,
                "-m",
                "gunicorn",
                "config.wsgi:application",
                "--bind",
                f"{host}:{port}",
                "--workers",
                "2",
                "--threads",
                "4",
                "--log-level",
                "warning",
                "--chdir",
                str(settings.BASE_DIR),
            ],
            # Every loop but the provisioner, whose embedded form is run_local_pilots: it knows the
            # web server's URL, serves the local queues every 2 s, and cancels its pilots at exit.
            [python, manage, "run_loops", "--skip", "provisioner"],
            [python, manage, "run_local_pilots", "--url", f"http://{host}:{port}"],
        ]
        # Each child leads its own process group so Ctrl-C handling stays ours and stop() can end
        # the child's own children too.
        return [
            subprocess.Popen(  # noqa: S603  (fixed argv of our own programs)
                cmd, cwd=settings.BASE_DIR, start_new_session=True, stdout=log, stderr=subprocess.STDOUT
            )
            for cmd in commands
        ]

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stopping = True

    def _wait_ready(self, url: str, web: subprocess.Popen[bytes], log_path: Path) -> bool:
        """True once the web server answers; False when asked to stop first."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not self._stopping:
            if web.poll() is not None:
                raise SystemExit(f"the web server exited with status {web.returncode}\n{_log_tail(log_path)}")
            try:
                with urllib.request.urlopen(url, timeout=2) as reply:  # noqa: S310  (our own loopback URL)
                    if reply.status == 200:
                        return True
            except OSError:
                time.sleep(0.2)
        if self._stopping:
            return False
        raise SystemExit(f"the web server did not answer at {url} within 30 s")

    def _supervise(self, children: list[subprocess.Popen[bytes]], exit_after: float, log_path: Path) -> None:
        deadline = time.monotonic() + exit_after if exit_after else None
        while not self._stopping:
            for child in children:
                if child.poll() is not None:
                    self.stderr.write(
                        f"{child.args!r} exited with {child.returncode}; stopping. The end of {log_path}:\n"
                        + _log_tail(log_path)
                    )
                    return
            if deadline and time.monotonic() >= deadline:
                return
            time.sleep(0.5)

    def _stop(self, children: list[subprocess.Popen[bytes]]) -> None:
        for child in children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        self.stdout.write("stopped")


def log_rotate(path: Path, *, keep: int) -> None:
    """up.log → up.log.1 → … → up.log.<keep>; the oldest is dropped. A fresh run starts an empty
    log and the earlier runs' logs stay readable."""
    for number in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{number}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{number + 1}"))
    if path.exists():
        path.replace(path.with_name(f"{path.name}.1"))
    path.write_text("", encoding="utf-8")


def _log_tail(path: Path, lines: int = 20) -> str:
    """The last lines of the children's log, for a start-up or supervision failure."""
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
