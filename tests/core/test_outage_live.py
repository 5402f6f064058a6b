"""A real gunicorn server while its PostgreSQL goes away and comes back: every interface answers 503
with Retry-After in its own format during the outage (never a 500), and 200 again once the database
is back, without a restart. The database is a private cluster started for this module
(tests/pgcluster.py); the machine's shared cluster is not touched."""

from __future__ import annotations

import http.cookiejar
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ailuro.pilot.client import Server, ServerUnavailable
from tests.ailuro.server import AiluroServer
from tests.outage import Answer, ask, manage, send, until
from tests.pgcluster import PrivateCluster

pytestmark = pytest.mark.slow

RETRY_AFTER = "7"  # AILURO_RETRY_AFTER_S of the server under test (the default is 5)
DB = "ailuro_outage_live"
ADMIN_PASSWORD = "outage-test-password"  # noqa: S105 - a throwaway superuser of the private cluster


@dataclass
class Deployment:
    cluster: PrivateCluster
    server: AiluroServer
    pilot_token: str
    user_token: str
    browser: urllib.request.OpenerDirector  # with the session cookie of a logged-in admin

    def ask(
        self,
        path: str,
        *,
        form: dict[str, str] | None = None,
        token: str = "",
        headers: dict[str, str] | None = None,
    ) -> Answer:
        return ask(self.server.url, path, form=form, token=token, headers=headers)

    def send(self, request: urllib.request.Request, *, browser: bool = False) -> Answer:
        return send(request, opener=self.browser if browser else None)

    def get_job(self) -> Answer:
        return self.ask("/server/panda/getJob", form={"siteName": "NO_SUCH_QUEUE"}, token=self.pilot_token)

    def update_job(self) -> Answer:
        form = {"jobId": "424242", "state": "running", "attemptNr": "0"}
        return self.ask("/server/panda/updateJob", form=form, token=self.pilot_token)

    def acquire_jobs(self) -> Answer:
        return self.ask(
            "/api/v1/pilot/acquire_jobs", form={"site_name": "NO_SUCH_QUEUE"}, token=self.pilot_token
        )

    def rest_list(self) -> Answer:
        return self.ask("/api/v1/workflows/", token=self.user_token)

    def monitor(self, suffix: str = "", headers: dict[str, str] | None = None) -> Answer:
        return self.ask("/jobs/" + suffix, headers=headers)

    def admin(self) -> Answer:
        return self.send(urllib.request.Request(self.server.url + "/admin/dispatcher/job/"), browser=True)

    def log_in_to_admin(self) -> None:
        form = self.send(urllib.request.Request(self.server.url + "/admin/login/"), browser=True)
        found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        assert found, form.text[:2000]
        fields = {"csrfmiddlewaretoken": found.group(1), "username": "admin", "password": ADMIN_PASSWORD}
        request = urllib.request.Request(
            self.server.url + "/admin/login/?next=/admin/",
            data=urllib.parse.urlencode(fields).encode(),
            headers={"Referer": self.server.url + "/admin/login/"},
        )
        answer = self.send(request, browser=True)
        assert answer.status == 200 and "Log out" in answer.text, answer.text[:2000]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    pg = PrivateCluster()
    server: AiluroServer | None = None
    try:
        pg.start()
        pg.createdb(DB)
        url = pg.url(DB)
        manage(url, "migrate", "--noinput", "-v", "0")
        pilot_token = manage(url, "create_token", "--user", "pilots", "--role", "pilot").splitlines()[-1]
        user_token = manage(url, "create_token", "--user", "alice", "--role", "user").splitlines()[-1]
        manage(
            url,
            "createsuperuser",
            "--noinput",
            "--username",
            "admin",
            "--email",
            "admin@example.org",
            env={"DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD},
        )
        server = AiluroServer(
            tmp_path_factory.mktemp("outage"),
            env={
                "DATABASE_URL": url,
                "CELERY_BROKER_URL": "memory://",
                "AILURO_RETRY_AFTER_S": RETRY_AFTER,
                # Token lookups are cached per process; without the cache every call meets the outage.
                "AILURO_PILOT_TOKEN_CACHE_S": "0",
            },
        )
        server.start()
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        deployment = Deployment(pg, server, pilot_token, user_token, browser)
        deployment.log_in_to_admin()
        yield deployment
    finally:
        if server is not None:
            server.stop()
        pg.destroy()  # stops the private cluster if it is running, by its pg_ctl


def _assert_503(answer: Answer) -> None:
    assert answer.status == 503, (answer.status, answer.text[:2000])
    assert answer.headers["Retry-After"] == RETRY_AFTER
    assert "127.0.0.1" not in answer.text  # no host names or ports in the answer


def _all_ok(d: Deployment) -> None:
    answers = {
        "getJob": d.get_job(),
        "updateJob": d.update_job(),
        "acquire_jobs": d.acquire_jobs(),
        "REST list": d.rest_list(),
        "monitor": d.monitor(),
        "monitor json": d.monitor("?json"),
        "readyz": d.ask("/readyz"),
        "admin": d.admin(),
    }
    failed = {name: (a.status, a.text[:300]) for name, a in answers.items() if a.status != 200}
    assert not failed, failed


def test_every_interface_answers_503_while_the_database_is_down_and_200_after(deployment: Deployment) -> None:
    d = deployment
    # Before: every interface answers, and the server's threads hold open connections.
    for _ in range(3):
        _all_ok(d)
    legacy = d.get_job().json()
    assert legacy["StatusCode"] == 20  # no jobs (unknown queue)

    d.cluster.stop()
    try:
        # Pilot protocol, legacy: the envelope the pilot parses, HTTP 503 + Retry-After.
        answer = until(d.get_job, 503)
        _assert_503(answer)
        body = answer.json()
        assert body["StatusCode"] == 30
        assert "database is unavailable" in body["errorDialog"]
        answer = d.update_job()
        _assert_503(answer)
        assert answer.json()["StatusCode"] == 30

        # Pilot protocol, v1 (what `ailuro pilot` retries on, honouring Retry-After).
        answer = d.acquire_jobs()
        _assert_503(answer)
        assert answer.json() == {
            "success": False,
            "message": f"the database is unavailable; retry in {RETRY_AFTER} s",
            "data": None,
        }

        # The pilot's own client takes it as "unavailable, retry after Retry-After".
        client = Server(d.server.url, token=d.pilot_token)
        with pytest.raises(ServerUnavailable) as unavailable:
            client.call("acquire_jobs", {"site_name": "NO_SUCH_QUEUE"})
        client.close()
        assert unavailable.value.status == 503
        assert unavailable.value.retry_after == float(RETRY_AFTER)

        # REST API: the one error format.
        answer = d.rest_list()
        _assert_503(answer)
        assert answer.headers["Content-Type"].startswith("application/json")
        assert answer.json() == {"detail": f"the database is unavailable; retry in {RETRY_AFTER} s"}

        # Monitor: a plain HTML page, JSON for ?json, a fragment for htmx.
        answer = d.monitor()
        _assert_503(answer)
        assert answer.headers["Content-Type"].startswith("text/html")
        assert "The database is unavailable. Please retry shortly" in answer.text
        assert "Traceback" not in answer.text
        answer = d.monitor("?json")
        _assert_503(answer)
        assert answer.json() == {"error": f"the database is unavailable; retry in {RETRY_AFTER} s"}
        answer = d.monitor(headers={"HX-Request": "true"})
        _assert_503(answer)
        assert answer.text.startswith('<p class="error">The database is unavailable')

        # Admin (the session is in the database): the same plain page.
        answer = d.admin()
        _assert_503(answer)
        assert "The database is unavailable" in answer.text

        # Probes: alive, not ready, and the database named.
        assert d.ask("/healthz").status == 200
        answer = d.ask("/readyz")
        assert answer.status == 503
        assert answer.json()["failing"] == ["database"]
        assert "Retry-After" in answer.headers

        # Many calls over the server's threads: each is a 503, none a 500.
        statuses = {d.get_job().status for _ in range(12)} | {d.rest_list().status for _ in range(12)}
        assert statuses == {503}
    finally:
        d.cluster.start()

    # The same server process reconnects on its own.
    answer = until(d.get_job, 200)
    assert answer.status == 200, answer.text
    for _ in range(3):  # every thread of the worker, not just the first to reconnect
        _all_ok(d)

    log = (d.server.tmp / "server.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    assert '"severity": "ERROR"' not in log, log[-3000:]  # one warning per failed request, no error
    assert "database unavailable" in log
