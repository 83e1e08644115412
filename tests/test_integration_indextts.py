"""voxtrail.integrations.indextts around a stand-in with IndexTTS2's signature and console output."""

from __future__ import annotations

import hashlib
import json
import threading
import wave

import pytest

from helpers_recorder import rows
from voxtrail import Recorder
from voxtrail.integrations.indextts import instrument, uninstrument
from voxtrail.store import Store
from voxtrail.transforms.encrypt import decrypt_value


def write_wav(path, seconds: float, rate: int = 22050) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(int(seconds * rate) * 2))


class StandInIndexTTS2:
    """Same ``infer`` signature as ``indextts/infer_v2.py``'s IndexTTS2, same printed lines
    (values derived from the text so that each call's figures are its own), a real WAV out."""

    def __init__(self):
        self.calls = 0

    def infer(self, spk_audio_prompt, text, output_path,
              emo_audio_prompt=None, emo_alpha=1.0,
              emo_vector=None,
              use_emo_text=False, emo_text=None, use_random=False, interval_silence=200,
              verbose=False, max_text_tokens_per_segment=120, stream_return=False, more_segment_before=0,
              **generation_kwargs):
        self.calls += 1
        print(">> starting inference...")
        if use_emo_text:
            print("detected emotion vectors from text: {'happy': 0.0, 'angry': 0.0, 'sad': 0.7, 'afraid': 0.0, "
                  "'disgusted': 0.0, 'melancholic': 0.1, 'surprised': 0.0, 'calm': 0.2}")
        if text == "crash":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        k = len(text)
        print(f"torch.Size([1, {k * 1000}])")
        print(f">> gpt_gen_time: {k * 0.01:.2f} seconds")
        print(f">> gpt_forward_time: {k * 0.001:.2f} seconds")
        print(f">> s2mel_time: {k * 0.002:.2f} seconds")
        print(f">> bigvgan_time: {k * 0.003:.2f} seconds")
        print(f">> Total inference time: {k * 0.02:.2f} seconds")
        print(f">> Generated audio length: {k * 0.05:.2f} seconds")
        print(f">> RTF: {0.4:.4f}")
        write_wav(output_path, k * 0.05)
        print(">> wav file saved to:", output_path)
        return output_path


@pytest.fixture
def ref_audio(tmp_path):
    path = tmp_path / "voice_01.wav"
    write_wav(path, 1.0)
    return path


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_each_infer_call_is_recorded(db_url, tmp_path, ref_audio, capsys):
    rec = Recorder(db=db_url, spool_dir=tmp_path / "spool")
    tts = instrument(StandInIndexTTS2(), rec, node="gpu-1", model_version="2.0")
    out1 = tmp_path / "out" / "spk_1.wav"
    out1.parent.mkdir()
    assert tts.infer(str(ref_audio), "你好，欢迎使用", str(out1), emo_vector=[0, 0.8, 0, 0, 0, 0, 0, 0],
                     emo_alpha=0.6, top_p=0.9) == str(out1)
    out2 = tmp_path / "out" / "spk_2.wav"
    tts.infer(spk_audio_prompt=str(ref_audio), text="今天天气很好", output_path=str(out2), use_emo_text=True,
              emo_text="悲伤地说")
    out3 = tmp_path / "out" / "spk_3.wav"
    tts.infer(str(ref_audio), "hello there", str(out3), emo_audio_prompt=str(ref_audio), emo_alpha=0.5)
    tts.infer(str(ref_audio), "plain", str(tmp_path / "out" / "spk_4.wav"))
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        tts.infer(str(ref_audio), "crash", str(tmp_path / "out" / "never.wav"))
    printed = capsys.readouterr().out
    assert printed.count(">> gpt_gen_time:") == 4, "the console still shows the model's output"
    rec.close()

    got = {r.text_input: r for r in rows(db_url, "SELECT * FROM tts_events")}
    assert len(got) == 5
    vec = got["你好，欢迎使用"]
    assert vec.emotion_control == "vector" and vec.emo_alpha == 0.6 and vec.emotion == "angry"
    assert json.loads(vec.emotion_vector) if isinstance(vec.emotion_vector, str) else vec.emotion_vector
    assert vec.gpt_gen_ms == pytest.approx(70.0) and vec.s2mel_ms == pytest.approx(10.0)  # 7 characters
    assert vec.bigvgan_ms == pytest.approx(20.0) and vec.gpt_forward_ms == pytest.approx(10.0)
    assert vec.latency_ms == pytest.approx(140.0) and vec.audio_length_ms == pytest.approx(350.0)
    assert vec.rtf == pytest.approx(0.4) and vec.text_length == 7
    assert vec.output_audio_url == str(out1) and vec.output_audio_sha256 == sha256(out1)
    # Stored encrypted (the default for ref_audio_url); the store's keys give the path back.
    with Store.open(db_url) as store:
        path = decrypt_value(vec.ref_audio_url, store.keyring, "ref_audio_url", vec.request_id)
    assert vec.ref_audio_url.startswith("vx1:") and path == str(ref_audio)
    assert vec.ref_audio_sha256 == sha256(ref_audio)
    assert vec.node == "gpu-1" and vec.model == "IndexTTS2" and vec.model_version == "2.0"
    assert vec.status == "success" and vec.source == "recorder"
    assert "top_p" in str(vec.attributes)

    text = got["今天天气很好"]
    assert text.emotion_control == "text" and text.emotion_desc == "悲伤地说" and text.emotion == "sad"
    assert got["hello there"].emotion_control == "audio" and got["hello there"].emo_alpha == 0.5
    assert got["plain"].emotion_control == "speaker"

    failed = got["crash"]
    assert failed.status == "failed" and failed.error_type == "RuntimeError"
    assert failed.error_message.startswith("CUDA out of memory") and failed.output_audio_sha256 is None


def test_concurrent_calls_keep_their_own_figures(sqlite_url, tmp_path, ref_audio):
    rec = Recorder(db=sqlite_url, spool_dir=tmp_path / "spool")
    tts = instrument(StandInIndexTTS2(), rec, hash_audio=False)

    def work(n: int) -> None:
        for i in range(20):
            tts.infer(str(ref_audio), "x" * n, str(tmp_path / f"t{n}-{i}.wav"))

    threads = [threading.Thread(target=work, args=(n,)) for n in (10, 30, 50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rec.close()
    got = rows(sqlite_url, "SELECT text_length, gpt_gen_ms, latency_ms, ref_audio_sha256 FROM tts_events")
    assert len(got) == 60
    for length, gpt_gen_ms, latency_ms, ref_hash in got:
        assert gpt_gen_ms == pytest.approx(length * 10.0) and latency_ms == pytest.approx(length * 20.0)
        assert ref_hash is None


def test_uninstrument_restores_the_method(sqlite_url, tmp_path, ref_audio):
    rec = Recorder(db=sqlite_url, spool_dir=tmp_path / "spool")
    tts = instrument(StandInIndexTTS2(), rec)
    with pytest.raises(ValueError, match="already instrumented"):
        instrument(tts, rec)
    uninstrument(tts)
    tts.infer(str(ref_audio), "abc", str(tmp_path / "a.wav"))
    rec.close()

    with Store.open(sqlite_url) as store:
        assert store.count() == 0 and tts.calls == 1


class StreamingStandIn(StandInIndexTTS2):
    """``stream_return=True``: IndexTTS2 yields audio chunks; the figures are printed at the end."""

    def infer(self, spk_audio_prompt, text, output_path, emo_audio_prompt=None, emo_alpha=1.0, emo_vector=None,
              use_emo_text=False, emo_text=None, use_random=False, interval_silence=200, verbose=False,
              max_text_tokens_per_segment=120, stream_return=False, more_segment_before=0, **generation_kwargs):
        def chunks():
            for i in range(3):
                yield f"chunk {i}"
            super(StreamingStandIn, self).infer(spk_audio_prompt, text, output_path)
        return chunks() if stream_return else super().infer(spk_audio_prompt, text, output_path)


def test_streaming_calls_are_recorded_when_the_stream_ends(sqlite_url, tmp_path, ref_audio):
    rec = Recorder(db=sqlite_url, spool_dir=tmp_path / "spool")
    tts = instrument(StreamingStandIn(), rec, hash_audio=False)
    assert list(tts.infer(str(ref_audio), "streamed", str(tmp_path / "s.wav"), stream_return=True)) == \
        ["chunk 0", "chunk 1", "chunk 2"]
    stream = tts.infer(str(ref_audio), "abandoned", str(tmp_path / "a.wav"), stream_return=True)
    next(stream)
    stream.close()
    rec.close()
    got = {r.text_input: r for r in rows(sqlite_url, "SELECT text_input, status, gpt_gen_ms, error_type, "
                                                      "error_message FROM tts_events")}
    assert got["streamed"].status == "success" and got["streamed"].gpt_gen_ms == pytest.approx(80.0)
    assert got["abandoned"].status == "failed" and got["abandoned"].error_type == "GeneratorExit"
    assert "closed before its end" in got["abandoned"].error_message
