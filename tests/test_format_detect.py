import os
import random

import pytest

from voxtrail.sources.formats.detect import FORMATS, detect_format

SAMPLES = "/work/shared/samples/"


def test_registry_populated():
    assert {"text", "jsonl", "audit", "indextts"} <= set(FORMATS)


@pytest.mark.parametrize("name,fmt", [("tts.log", "text"), ("tts.jsonl", "jsonl"), ("audit.jsonl", "audit"),
                                      ("indextts2_webui.log", "indextts")])
def test_samples(name, fmt):
    head = open(SAMPLES + name, "rb").read()[:65536]
    assert detect_format(head) == fmt
    assert detect_format(b"\xef\xbb\xbf" + head.replace(b"\n", b"\r\n")) == fmt  # BOM, CRLF


def test_garbage_is_none():
    rnd = random.Random(3)
    words = ["alpha", "beta", "gamma", "{", "[", ">>", "]", "=", ","]
    text = "\n".join(" ".join(rnd.choice(words) for _ in range(8)) for _ in range(60)).encode()
    assert detect_format(text) is None
    assert detect_format(os.urandom(4096)) is None
    assert detect_format(b"") is None
    assert detect_format(open(SAMPLES + "README.md", "rb").read()) is None
