"""Two `cvbot serve` processes behind one Slack app (one PostgreSQL, one S3 bucket): a message event that Slack
redelivers to the other process, as a load balancer would send it, is processed once."""
from __future__ import annotations

import time
import uuid

import pytest

from tests.e2e.test_slack_bot import CREATOR, RED, SECRET, named, start_server, stop_server
from tests.helpers import colour_images
from tests.slack_server import FakeSlack, SignedSender, message_event, text_of


@pytest.mark.slow
def test_an_event_redelivered_to_the_other_process_is_processed_once(tmp_path, postgres_url, model_dir,
                                                                     s3_endpoint):
    slack = FakeSlack().start()
    blobs = s3_endpoint.env(f"slack2-{uuid.uuid4().hex[:10]}")
    env = dict(DATABASE_URL=postgres_url, SLACK_BOT_TOKEN=slack.token, SLACK_SIGNING_SECRET=SECRET,
               SLACK_API_URL=slack.api_url, CVBOT_LOG_LEVEL="INFO", **blobs)
    procs = []
    try:
        senders = []
        for name in ("web1", "web2"):
            (tmp_path / name).mkdir()
            proc, port, _ = start_server(tmp_path / name, model_dir, **env)
            procs.append(proc)
            senders.append(SignedSender(f"http://127.0.0.1:{port}/slack/events", SECRET, slack.team_id))
        ch = "CTWOPROC"
        url = slack.response_url()
        assert senders[0].command("new two processes", channel=ch, user=CREATOR, response_url=url)[0] == 200
        slack.wait_for(lambda: slack.responses_to(url), what="the project to be created")

        ts = "2000.000100"
        files = [slack.add_file(n, d) for n, d in named("x", colour_images(4, RED, 11))]
        event = message_event(ch, CREATOR, "tag: x", ts, files)
        assert senders[0].event(event, event_id="EvTWOPROC")[0] == 200
        # Slack retries on the other process while the first is still working on it, and once more later
        assert senders[1].event(event, event_id="EvTWOPROC", retry_num=1)[0] == 200
        slack.wait_for(lambda: slack.posts(ch, ts), what="the reply to the tagged message")
        assert senders[1].event(event, event_id="EvTWOPROC", retry_num=2)[0] == 200
        time.sleep(2)

        assert len(slack.posts(ch, ts)) == 1, slack.posts(ch, ts)
        ids = {f["id"] for f in files}
        assert len([d for d in slack.downloads if d in ids]) == 4  # each file fetched by one process, once
        for sender in senders:  # both processes see the one upload
            url = slack.response_url()
            assert sender.command("tags", channel=ch, user=CREATOR, response_url=url)[0] == 200
            (reply,) = slack.wait_for(lambda u=url: slack.responses_to(u), what="/cv tags")
            assert "*x*: 4 images" in text_of(reply), text_of(reply)
    finally:
        for proc in procs:
            stop_server(proc)
        slack.stop()
