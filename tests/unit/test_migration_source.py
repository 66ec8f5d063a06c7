"""`cvbot.source.HttpSource`, the REST client `cvbot migrate` reads a Custom Vision endpoint with: Azure's
response shapes become the port's records, 429 waits for Retry-After (bounded), and a signed image link is
fetched without the training key."""
from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from email.message import Message

import pytest

from core import errors
from cvbot import source as source_module
from cvbot.source import HttpSource

ENDPOINT = "https://westeurope.api.cognitive.microsoft.com"
API = ENDPOINT + "/customvision/v3.3/training"


class Seq(list):
    """Answers served in order, the last one repeated."""


class FakeHttp:
    """Answers by URL: a JSON value, bytes, (status, Retry-After) for an HTTP error, or a Seq of those."""

    def __init__(self, answers: dict):
        self.answers = answers
        self.requests: list = []

    def __call__(self, request, timeout=None):
        self.requests.append(request)
        answer = self.answers[request.full_url]
        if isinstance(answer, Seq):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if isinstance(answer, tuple):  # (status, retry-after)
            headers = Message()
            if answer[1] is not None:
                headers["Retry-After"] = answer[1]
            raise urllib.error.HTTPError(request.full_url, answer[0], "Too Many Requests", headers,
                                         io.BytesIO(b'{"code":"TooManyRequests","message":"slow down"}'))
        return io.BytesIO(answer if isinstance(answer, bytes) else json.dumps(answer).encode())


AZURE_DOMAINS = [
    {"id": "ee85a74c-405e-4adc-bb47-ffa8ca0c9f31", "name": "General [A1]", "type": "Classification"},
    {"id": "0732100f-1a38-4e49-a514-c9b44c697ab5", "name": "General (compact)", "type": "Classification"},
    {"id": "da2e3a8a-40a5-4171-82f4-58522f70fbc1", "name": "General", "type": "ObjectDetection"},
]


def test_azure_shapes_become_source_records():
    http = FakeHttp({
        API + "/domains": AZURE_DOMAINS,
        API + "/projects": [
            {"id": "p1", "name": "Fruit", "description": "d", "settings": {
                "domainId": "ee85a74c-405e-4adc-bb47-ffa8ca0c9f31", "classificationType": "Multilabel"}},
            {"id": "p2", "name": "Boxes", "description": None, "settings": {
                "domainId": "da2e3a8a-40a5-4171-82f4-58522f70fbc1", "classificationType": None}}],
        API + "/projects/p1/tags": [{"id": "t1", "name": "Negative", "description": None, "type": "Negative",
                                     "imageCount": 1}],
        API + "/projects/p1/images/tagged?take=256&skip=0": [
            {"id": "i1", "originalImageUri": "https://irisprod.blob.core.windows.net/i1?sv=1&sig=s",
             "tags": [{"tagId": "t1", "tagName": "Negative"}], "metadata": {"k": "v"}}],
        "https://irisprod.blob.core.windows.net/i1?sv=1&sig=s": b"bytes",
    })
    src = HttpSource(ENDPOINT + "/", "KEY", opener=http)
    p1, p2 = src.projects()
    assert (p1.name, p1.domain_name, p1.domain_type, p1.classification_type) == \
        ("Fruit", "General [A1]", "Classification", "Multilabel")
    assert (p2.domain_type, p2.classification_type, p2.description) == ("ObjectDetection", None, "")
    [tag] = src.tags("p1")
    assert (tag.name, tag.type, tag.description) == ("Negative", "Negative", "")
    [img] = src.images("p1", True, 0, 256)
    assert img.tag_ids == ("t1",) and img.metadata == (("k", "v"),)
    assert src.image_bytes(img) == b"bytes"
    api_calls = [r for r in http.requests if r.full_url.startswith(API)]
    assert all(r.get_header("Training-key") == "KEY" for r in api_calls)
    assert http.requests[-1].get_header("Training-key") is None  # a signed link gets no key


def test_429_waits_as_told_and_gives_up_after_bounded_retries(monkeypatch):
    slept: list[float] = []
    http = FakeHttp({API + "/projects": Seq([(429, "2"), (429, None), (503, "1"), []])})
    src = HttpSource(ENDPOINT, "KEY", sleep=slept.append, opener=http)
    assert src.projects() == []
    assert slept == [2.0, 1.0, 1.0]  # Retry-After, then backoff (0.5 * 2^1), then Retry-After
    http = FakeHttp({API + "/projects": Seq([(429, "1000")])})
    slept.clear()
    src = HttpSource(ENDPOINT, "KEY", sleep=slept.append, opener=http)
    with pytest.raises(errors.CvError) as e:
        src.projects()
    assert "429" in e.value.message and "TooManyRequests" in e.value.message
    assert len(slept) == source_module.RETRIES and max(slept) == source_module.MAX_WAIT_S


def test_other_errors_are_not_retried():
    http = FakeHttp({API + "/projects": Seq([(401, None)])})
    with pytest.raises(errors.CvError) as e:
        HttpSource(ENDPOINT, "WRONG", sleep=lambda s: None, opener=http).projects()
    assert "401" in e.value.message and len(http.requests) == 1


def test_bad_endpoints_and_missing_keys_are_refused():
    with pytest.raises(errors.InvalidInput):
        HttpSource("ftp://x", "KEY")
    with pytest.raises(errors.InvalidInput):
        HttpSource(ENDPOINT, "")


def test_a_redirect_to_another_host_does_not_carry_the_key():
    from email.message import Message as Headers

    handler = source_module._KeyStaysOnItsHost()
    req = urllib.request.Request(API + "/projects", headers={"Training-Key": "KEY"})
    same = handler.redirect_request(req, None, 302, "Found", Headers(), API + "/projects/")
    other = handler.redirect_request(req, None, 302, "Found", Headers(), "https://evil.example/projects")
    assert same.get_header("Training-key") == "KEY"
    assert other.get_header("Training-key") is None
