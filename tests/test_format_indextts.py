from datetime import datetime, timezone

import orjson

from voxtrail.sources.formats import Chunk, ParseContext
from voxtrail.sources.formats.detect import FORMATS

IDX = FORMATS["indextts"]
SAMPLES = "/work/shared/samples/"


def ok_block(t, total=4.57, vec="None", mode=0, detected=False):
    lines = [f"Emo control mode:{mode},weight:0.65,vec:{vec}", ">> starting inference..."]
    if detected:
        lines.append("detected emotion vectors from text: {'happy': 0.0, 'angry': 0.0, 'sad': 0.85, 'afraid': 0.0, "
                     "'disgusted': 0.0, 'melancholic': 0.1, 'surprised': 0.0, 'calm': 0.05}")
    lines += ["torch.Size([1, 275845])", ">> gpt_gen_time: 2.51 seconds", ">> gpt_forward_time: 0.09 seconds",
              ">> s2mel_time: 1.60 seconds", ">> bigvgan_time: 0.23 seconds", f">> Total inference time: {total} seconds",
              ">> Generated audio length: 12.51 seconds", ">> RTF: 0.3653", f">> wav file saved to: outputs/spk_{t}.wav"]
    return "".join(x + "\n" for x in lines).encode()


FAIL = (b"Emo control mode:2,weight:0.65,vec:[0.02, 0.1, 0.05, 0.08, 0.09, 0.09, 0.0, 0.03]\n>> starting inference...\n"
        b"Traceback (most recent call last):\n  File \"/app/indextts/infer_v2.py\", line 580, in infer_generator\n"
        b"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n")


def ctx(final=False, state=None):
    return ParseContext("s", "webui.log", "Asia/Shanghai", state if state is not None else {}, final)


def utc(t):
    return datetime.fromtimestamp(t, timezone.utc).replace(tzinfo=None)


def test_blocks_fields_and_noise():
    data = (b">> GPT weights restored from: checkpoints/gpt.pth\n* Running on local URL:  http://0.0.0.0:7860\n"
            + ok_block(1740787200) + FAIL + ok_block(1740787204, 6.7, mode=3, detected=True)
            + ok_block(1740787209, vec="[0.08, 0.08, 0.03, 0.06, 0.09, 0.04, 0.08, 0.04]", mode=2))
    c = ctx()
    r = IDX.parse(Chunk(0, data), c)
    f = r.batch.frame
    assert f.height == 4 and not r.batch.rejects and r.skipped == 2 and r.consumed == len(data)
    assert f["ts"].to_list() == [utc(1740787200)] * 2 + [utc(1740787204), utc(1740787209)]  # UTC, not tz
    assert f["status"].to_list() == ["success", "failed", "success", "success"]
    assert f["emotion_control"].to_list() == ["speaker", "vector", "text", "vector"]
    assert f["emotion"].to_list() == [None, "angry", "sad", "disgusted"]
    assert round(f["latency_ms"].sum()) == 4570 * 2 + 6700
    assert f["gpt_gen_ms"][0] == 2510.0 and f["audio_length_ms"][0] == 12510.0 and f["rtf"][0] == 0.3653
    fail = f.row(1, named=True)
    assert fail["error_type"] == "torch.OutOfMemoryError" and fail["error_message"].startswith("CUDA out of memory")
    assert orjson.loads(fail["attributes"]) == {"ts_estimated": True}
    assert f["source_offset"][1] == data.index(FAIL)
    assert orjson.loads(f["emotion_vector"][2])[2] == 0.85
    assert c.state["last_ts"] == 1740787209


def test_block_split_across_chunks():
    data = ok_block(1740787200) + ok_block(1740787204)
    cut = len(ok_block(1740787200)) + 40
    c = ctx()
    r1 = IDX.parse(Chunk(0, data[:cut]), c)
    assert r1.batch.frame.height == 1 and r1.consumed == len(ok_block(1740787200)) and not r1.batch.rejects
    r2 = IDX.parse(Chunk(r1.consumed, data[r1.consumed:]), c)
    assert r2.batch.frame.height == 1 and r2.consumed == len(data)
    assert r2.batch.frame["source_offset"][0] == r1.consumed
    r3 = IDX.parse(Chunk(0, data[:cut], final=True), ctx(final=True))
    assert r3.batch.rejects[0].reason == "indextts: incomplete generation block"


def test_failure_first_waits_for_time_then_uses_state():
    c = ctx()
    r = IDX.parse(Chunk(0, FAIL), c)
    assert r.batch.frame.height == 0 and r.consumed == 0  # no time known yet: held back
    r = IDX.parse(Chunk(0, FAIL + ok_block(1740787300)), c)
    assert r.batch.frame["ts"].to_list() == [utc(1740787300)] * 2 and c.state["last_ts"] == 1740787300
    c2 = ctx(state={"last_ts": 1740787100})  # state from an earlier run
    r = IDX.parse(Chunk(500, FAIL), c2)
    assert r.batch.frame["ts"].to_list() == [utc(1740787100)] and r.consumed == 500 + len(FAIL)
    r = IDX.parse(Chunk(0, FAIL, final=True), ctx(final=True))
    assert r.batch.frame.height == 0 and "no time known" in r.batch.rejects[0].reason


def test_interrupted_block_rejected():
    data = b"Emo control mode:0,weight:0.65,vec:None\n>> starting inference...\n" + ok_block(1740787200)
    r = IDX.parse(Chunk(0, data.replace(b"\n", b"\r\n")), ctx())
    assert r.batch.frame.height == 1 and r.batch.rejects[0].offset == 0
    assert "interrupted" in r.batch.rejects[0].reason


def test_sample_file():
    data = open(SAMPLES + "indextts2_webui.log", "rb").read()
    r = IDX.parse(Chunk(0, data, final=True), ctx(final=True))
    f = r.batch.frame
    assert f.height == 300 and not r.batch.rejects
    assert (f["status"] == "failed").sum() == data.count(b"Traceback (most recent call last):")
    total = sum(float(x.split(b": ")[1].split()[0]) for x in data.splitlines() if b"Total inference time" in x)
    assert abs(f["latency_ms"].sum() - total * 1000) < 1e-6


def test_bad_numbers_reject_their_block_and_the_rest_is_parsed():
    """Numbers float() refuses, or turns into inf, reject the block; they used to stop the parse."""
    stage = ok_block(1740787200).replace(b"gpt_gen_time: 2.51", b"gpt_gen_time: 1.2.3")
    huge_rtf = ok_block(1740787201).replace(b"RTF: 0.3653", b"RTF: " + b"9" * 400)
    inf_weight = ok_block(1740787202).replace(b"weight:0.65", b"weight:inf")
    huge_vec = ok_block(1740787203, vec="[" + "1" * 400 + ", 0, 0, 0, 0, 0, 0, 0]")
    long_mode = ok_block(1740787204, mode="1" * 5000)
    bad = [stage, huge_rtf, inf_weight, huge_vec, long_mode]
    data = b"".join(bad) + ok_block(1740787205)
    r = IDX.parse(Chunk(0, data), ctx())
    assert r.batch.frame["ts"].to_list() == [utc(1740787205)]
    offsets = [sum(map(len, bad[:i])) for i in range(len(bad))]
    assert [x.offset for x in r.batch.rejects] == offsets
    assert [x.reason.split(" in '")[0] for x in r.batch.rejects] == [
        "indextts: invalid number", "indextts: invalid number"] + ["indextts: invalid weight or vec"] * 3
    assert r.consumed == len(data)


def test_spaces_around_fields_are_stripped():
    data = ok_block(1740787200).replace(b"Emo control mode:0,weight:0.65,vec:None",
                                        b"  Emo control mode: 3 ,weight:  0.5  , vec:  None  ")
    data = data.replace(b"spk_1740787200.wav", b"spk_1740787200.wav  \t")
    f = IDX.parse(Chunk(0, data), ctx()).batch.frame
    assert f["emo_alpha"].to_list() == [0.5] and f["emotion_control"].to_list() == ["text"]
    assert f["output_audio_url"].to_list() == ["outputs/spk_1740787200.wav"]
