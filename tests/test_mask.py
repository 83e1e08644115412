"""PII masking (issue 5 item 1): each rule's true and false positives on Chinese and English text,
consistency and idempotence, the [mask] settings, seed 004's buggy example, and masking on
every write path (file import on all three databases, HTTP ingest, the Recorder's spool)."""

from __future__ import annotations

import logging
import re
from datetime import date

import orjson
import polars as pl
import pytest
import sqlalchemy as sa

from helpers_recorder import dead_port, wait_until
from test_cli import voxtrail
from voxtrail import Recorder
from voxtrail.config import ConfigError, Settings
from voxtrail.event import EventBatch
from voxtrail.store import accounts
from voxtrail.transforms import default_chain, mask
from voxtrail.transforms.mask import Masker, id_number_valid, luhn_valid
from web_support import client_for, fast_password_hashing, make_app  # noqa: F401 - fixture

PHONE = "13812345678"


def id_number(first17: str) -> str:
    """A resident ID number with the right check character (ISO 7064 MOD 11-2)."""
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return first17 + "10X98765432"[sum(int(d) * w for d, w in zip(first17, weights)) % 11]


def luhn_complete(prefix: str) -> str:
    """``prefix`` + the Luhn check digit."""
    return next(prefix + d for d in "0123456789" if luhn_valid(prefix + d))


def settings(**section) -> Settings:
    return Settings(db="sqlite://", tz="UTC", file={"mask": section})


@pytest.fixture(autouse=True)
def fresh_default_masker(monkeypatch):
    """default_masker() is built once per process: each test starts from its own environment."""
    mask.default_masker.cache_clear()
    monkeypatch.setattr(mask, "_warned_off", False)
    yield
    mask.default_masker.cache_clear()


M = Masker()
ID_X = id_number("11010519491231002")  # ends in X
ID_DIGIT = id_number("44030619900307123")
VISA = "4111111111111111"
UNIONPAY_19 = luhn_complete("622202100112345678")


# -- each rule: what it masks, and what it leaves alone --------------------------------------

@pytest.mark.parametrize("text, expected", [
    (f"请拨打{PHONE}联系张三", "请拨打138****5678联系张三"),
    ("客户电话：138 1234 5678，请回电", "客户电话：138****5678，请回电"),
    ("手机 +86 139-0000-1111 或 +8615012345678", "手机 +86 139****1111 或 +86150****5678"),
    ("call 008618612345678 or 8619912345678 today", "call 0086186****5678 or 86199****5678 today"),
    (f"Please call me at {PHONE}.", "Please call me at 138****5678."),
])
def test_mobile_numbers_are_masked(text, expected):
    assert M.mask_text(text) == expected


@pytest.mark.parametrize("text", [
    "订单号 12345678901 已发货",           # 11 digits not starting 1[3-9]
    "座机 010-12345678",                   # landline
    "流水号 1381234567890123 已入账",       # 16 digits: a longer number, and not a Luhn card (starts with 1)
    "编号 213812345678",                   # the phone digits inside a longer number
    "模型 indextts2，版本 2.0",
])
def test_mobile_false_positives_are_left_alone(text):
    assert M.mask_text(text) == text


def test_resident_id_numbers_are_masked_with_their_length():
    assert id_number_valid(ID_X) and id_number_valid(ID_DIGIT)
    assert M.mask_text(f"身份证号{ID_X}，请核对") == "身份证号110***********002X，请核对"
    assert M.mask_text(f"ID: {ID_DIGIT.lower()}") == f"ID: 440***********{ID_DIGIT[-4:]}"
    assert M.mask_text(ID_X.lower()) == "110***********002x"
    assert len(M.mask_text(ID_DIGIT)) == 18


@pytest.mark.parametrize("text", [
    "订单号 123456789012345678",                           # 18 digits, wrong check character
    f"身份证 {ID_DIGIT[:-1]}{'0' if ID_DIGIT[-1] != '0' else '1'}",  # wrong check character
    f"编号 {id_number('11010520991231002')}",               # born in 2099
    f"编号 {id_number('11010519490231002')}",               # born on 31 February... 02-31
    f"流水 9{ID_X[:-1]}0",                                  # 19 digits: a longer number
])
def test_other_18_digit_numbers_are_left_alone(text):
    if "2099" in text:
        assert date.today().year < 2099
    assert M.mask_text(text) == text


def test_bank_cards_keep_first_six_and_last_four():
    assert M.mask_text(f"卡号{VISA}已绑定") == "卡号411111******1111已绑定"
    assert M.mask_text("card 4111 1111 1111 1111 expires 12/27") == "card 4111 11** **** 1111 expires 12/27"
    assert M.mask_text(f"银行卡：{UNIONPAY_19}") == f"银行卡：622202*********{UNIONPAY_19[-4:]}"
    assert M.mask_text("Amex 3782-822463-10005.") == "Amex 3782-82****-*0005."
    # A card followed by its CVV: the longest run of groups that is a card is masked.
    assert M.mask_text("4111 1111 1111 1111 123") == "4111 11** **** 1111 123"


@pytest.mark.parametrize("text", [
    "卡号4111111111111112",                    # Luhn-invalid
    "card 4111 1111 1111 1112",
    "时间戳 1732253895123",                    # 13 digits starting with 1: not a card network
    "订单 62220210011234567890",               # 20 digits: longer than any card
])
def test_card_false_positives_are_left_alone(text):
    assert M.mask_text(text) == text


@pytest.mark.parametrize("text, expected", [
    ("请发邮件到zhang.san@example.com，谢谢", "请发邮件到z***@example.com，谢谢"),
    ("联系人：李四（li_si+tts@mail.qq.com）", "联系人：李四（l***@mail.qq.com）"),
    ("Contact a@b.cn or Bob.Smith@corp.example.org.", "Contact a***@b.cn or B***@corp.example.org."),
])
def test_email_addresses_are_masked(text, expected):
    assert M.mask_text(text) == expected


@pytest.mark.parametrize("text", ["价格 @ 5元", "user@localhost", "微博@张三 转发", "a@b"])
def test_email_false_positives_are_left_alone(text):
    assert M.mask_text(text) == text


@pytest.mark.parametrize("text, expected", [
    ("connect to 10.0.3.17:6379 failed", "connect to 10.0.*.*:6379 failed"),
    ("Redis 连接 192.168.1.254 超时。", "Redis 连接 192.168.*.* 超时。"),
    ("from 8.8.8.8, to 255.255.255.255.", "from 8.8.*.*, to 255.255.*.*."),
])
def test_ipv4_addresses_are_masked(text, expected):
    assert M.mask_text(text) == expected


@pytest.mark.parametrize("text", [
    "running v1.2.3.4", "版本 V10.0.3.17", "build1.2.3.4", "oid 1.2.3.4.5", "1.3.6.1.4.1.2021",
    "value 256.1.1.1", "version 2.0.1",
])
def test_ipv4_false_positives_are_left_alone(text):
    assert M.mask_text(text) == text


# -- order, consistency, idempotence ----------------------------------------------------------

def test_an_id_number_that_is_also_luhn_valid_is_masked_as_an_id():
    """Why ID runs before card: 1 in 10 valid ID numbers pass the Luhn check too."""
    both = next(n for n in (id_number(f"3201021985{m:02d}01{s:03d}"[:17]) for m in range(1, 13) for s in range(100))
                if luhn_valid(n))
    assert M.mask_text(both) == both[:3] + "*" * 11 + both[-4:]
    card_first = Masker(rules=(mask.BUILTIN_RULES["bank_card"], mask.BUILTIN_RULES["id_number"]))
    assert card_first.mask_text(both) == both[:6] + "*" * 8 + both[-4:]  # would keep the birth year


def test_a_grouped_card_is_not_masked_as_a_phone():
    """Why card runs before mobile: a card grouped 4-3-4-4 holds a phone-shaped 3-4-4 tail."""
    card = next(f"{p} 138 1234 5678" for p in range(6000, 7000) if luhn_valid(f"{p}13812345678"))
    assert M.mask_text(card) == f"{card[:4]} 13* **** 5678"
    mobile_first = Masker(rules=(mask.BUILTIN_RULES["mobile"], mask.BUILTIN_RULES["bank_card"]))
    assert mobile_first.mask_text(card) == f"{card[:4]} 138****5678"  # the first group left readable


MIXED = (f"用户{PHONE}（身份证{ID_X}）绑定卡 {VISA}，邮箱 wang.wu@163.com，"
         f"来自 10.0.3.17；again {PHONE} and 138 1234 5678")


def test_masking_is_consistent_and_idempotent():
    once = M.mask_text(MIXED)
    assert once == ("用户138****5678（身份证110***********002X）绑定卡 411111******1111，邮箱 w***@163.com，"
                    "来自 10.0.*.*；again 138****5678 and 138****5678")
    assert M.mask_text(once) == once
    assert M.mask_text(MIXED) == once  # the same value, the same mask, every time
    for raw in (PHONE, ID_X, VISA, "wang.wu", "3.17"):
        assert raw not in once


def test_a_text_without_digits_or_at_is_returned_as_is():
    text = "今天天气很好，我们一起去公园散步吧。"
    assert M.mask_text(text) is text


# -- seed 004's example ------------------------------------------------------------------------

def seed004_mask_sensitive(text):
    """Seed 004's own masking example, verbatim (its second seed, 工程实践中的深层考量)."""
    return re.sub(r'(1[3-9]\d{9})', r'1****\1[-4:]', text)


def test_seed_004_example_leaks_the_number_and_ours_does_not():
    text = f"请拨打{PHONE}联系张三"
    # The replacement is a plain template: "\1" puts the whole number back, "[-4:]" is literal.
    assert seed004_mask_sensitive(text) == f"请拨打1****{PHONE}[-4:]联系张三"
    assert PHONE in seed004_mask_sensitive(text)
    assert M.mask_text(text) == "请拨打138****5678联系张三"


# -- the batch transform -----------------------------------------------------------------------

def test_batch_transform_masks_the_configured_fields_and_constants():
    frame = pl.DataFrame({
        "request_id": ["a", "b", "c", "d"],
        "text_input": [f"电话{PHONE}", "你好", None, "邮箱 a.b@x.org"],
        "error_message": [None, "connect to 10.0.3.17:6379 failed", None, None],
        "user_id": [PHONE, PHONE, PHONE, PHONE],  # not a masked field by default
    })
    batch = M(EventBatch(frame, [], {"source": "file", "emotion_desc": f"温柔 {PHONE}"}))
    assert batch.frame["text_input"].to_list() == ["电话138****5678", "你好", None, "邮箱 a***@x.org"]
    assert batch.frame["error_message"].to_list() == [None, "connect to 10.0.*.*:6379 failed", None, None]
    assert batch.frame["user_id"].to_list() == [PHONE] * 4
    assert batch.constants == {"source": "file", "emotion_desc": "温柔 138****5678"}
    untouched = EventBatch(pl.DataFrame({"request_id": ["a"], "text_input": ["你好 2025"]}))
    assert M(untouched) is untouched


def test_default_chain_masks_after_normalize(monkeypatch):
    chain = default_chain()
    assert len(chain) == 2 and isinstance(chain[1], Masker)
    monkeypatch.setenv("VOXTRAIL_MASK", "off")
    assert len(default_chain(settings())) == 1


# -- settings ----------------------------------------------------------------------------------

def test_disable_a_rule_and_choose_fields():
    m = Masker.from_settings(settings(disable=["ipv4"], fields=["text_input", "user_id"]))
    assert m.mask_text(f"{PHONE} at 10.0.3.17") == "138****5678 at 10.0.3.17"
    assert m.fields == ("text_input", "user_id")


def test_custom_rules_keep_or_replace():
    m = Masker.from_settings(settings(rules=[
        {"name": "order", "pattern": r"ORD-\d{6,}", "keep_start": 4, "keep_end": 2},
        {"name": "plate", "pattern": r"([京沪粤])[A-Z]\w{5}", "replacement": r"\1*****"},
    ]))
    assert m.mask_text("订单 ORD-20250301 车牌 京A12345") == "订单 ORD-******01 车牌 京*****"
    assert m.mask_text("车牌粤BXYZAB，没有数字") == "车牌粤*****，没有数字"  # custom rules see every text
    assert m.mask_text(m.mask_text("ORD-20250301")) == "ORD-******01"


@pytest.mark.parametrize("section, needle", [
    ({"rules": [{"name": "broken", "pattern": "(unclosed"}]}, "'broken': invalid regular expression"),
    ({"rules": [{"name": "ref", "pattern": "x", "replacement": r"\2"}]}, "'ref': invalid replacement"),
    ({"rules": [{"name": "both", "pattern": "x", "replacement": "y", "keep_end": 1}]}, "either replacement"),
    ({"rules": [{"name": "mobile", "pattern": "x"}]}, "built-in"),
    ({"rules": [{"pattern": "x"}]}, "needs a name"),
    ({"disable": ["phone"]}, "unknown rule 'phone'"),
    ({"fields": ["request_id"]}, "unknown field 'request_id'"),
    ({"enabled": "yes"}, "true or false"),
])
def test_invalid_settings_say_what_is_wrong(section, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
        Masker.from_settings(settings(**section))


def test_turning_masking_off_warns_once(monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="voxtrail.mask")
    monkeypatch.setenv("VOXTRAIL_MASK", "off")
    for _ in range(3):
        off = Masker.from_settings(settings())
        assert not off.enabled
        batch = EventBatch(pl.DataFrame({"request_id": ["a"], "text_input": [PHONE]}))
        assert off(batch).frame["text_input"][0] == PHONE
    warnings = [r for r in caplog.records if "masking is off" in r.getMessage()]
    assert len(warnings) == 1 and "VOXTRAIL_MASK=off" in warnings[0].getMessage()


def test_file_setting_off_and_env_on(monkeypatch, caplog):
    caplog.set_level(logging.WARNING, logger="voxtrail.mask")
    assert not Masker.from_settings(settings(enabled=False)).enabled
    assert "enabled = false" in caplog.text
    monkeypatch.setenv("VOXTRAIL_MASK", "on")  # the environment wins over the file
    assert Masker.from_settings(settings(enabled=False)).enabled
    monkeypatch.setenv("VOXTRAIL_MASK", "maybe")
    with pytest.raises(ConfigError, match="VOXTRAIL_MASK"):
        Masker.from_settings(settings())


# -- every write path --------------------------------------------------------------------------

def stored_texts(url: str) -> list[str]:
    from voxtrail.store.engine import make_engine, normalize_url

    u, dialect = normalize_url(url)
    engine = make_engine(u, dialect)
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.text("SELECT text_input FROM tts_events ORDER BY request_id"))]
    finally:
        engine.dispose()


def test_voxtrail_import_stores_masked_text(db_url, tmp_path):
    """`voxtrail import --config` of an audit JSONL file: masked with the file's [mask] settings."""
    log = tmp_path / "audit.jsonl"
    log.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in [
        {"request_id": "r1", "created_at": "2025-03-01T10:00:00+08:00", "status": "success", "user_id": 31,
         "text_input": f"请拨打{PHONE}联系张三，订单 ORD-20250301"},
        {"request_id": "r2", "created_at": "2025-03-01T10:00:01+08:00", "status": "success", "user_id": 31,
         "text_input": "欢迎大家来体验indextts2"},
    ]))
    config = tmp_path / "voxtrail.toml"
    config.write_text('[mask]\n[[mask.rules]]\nname = "order"\npattern = "ORD-\\\\d+"\nkeep_start = 4\n')
    proc = voxtrail("import", str(log), "--db", db_url, "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert stored_texts(db_url) == ["请拨打138****5678联系张三，订单 ORD-********", "欢迎大家来体验indextts2"]


@pytest.mark.usefixtures("fast_password_hashing")
def test_http_ingest_stores_masked_text(sqlite_url):
    app = make_app(sqlite_url)
    _, token = accounts.create_token(app.state.store.engine, "node-1", "ingest")
    with client_for(app) as client:
        body = [{"request_id": "h1", "ts": "2025-03-01T10:00:00+08:00", "status": "failed",
                 "text_input": f"我的手机是{PHONE}", "error_message": "connect to 10.0.3.17:6379 failed"}]
        answer = client.post("/api/v1/events", content=orjson.dumps(body),
                             headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        assert answer.status_code == 200, answer.text
    with app.state.store.engine.connect() as conn:
        row = conn.execute(sa.text("SELECT text_input, error_message FROM tts_events")).one()
    app.state.store.close()
    assert tuple(row) == ("我的手机是138****5678", "connect to 10.0.*.*:6379 failed")


def test_recorder_spool_never_holds_the_raw_number(tmp_path):
    spool = tmp_path / "spool"
    rec = Recorder(db=f"mysql://root@127.0.0.1:{dead_port()}/test", spool_dir=spool, max_backoff=0.2,
                   defaults={"emotion_desc": f"回拨 {PHONE}"})
    for i in range(50):
        rec.record(text_input=f"请拨打{PHONE}联系张三 #{i}", error_message=f"user {ID_X} card {VISA}",
                   pinyin_input="zhang1 san1 wang.wu@163.com")
    assert wait_until(lambda: "cannot connect" in (rec.stats()["last_error"] or ""))
    rec.close(timeout=0)
    spooled = b"".join(p.read_bytes() for p in spool.rglob("*") if p.is_file())
    assert "138****5678".encode() in spooled and b"110***********002X" in spooled
    for raw in (PHONE, ID_X, VISA, "wang.wu@"):
        assert raw.encode() not in spooled


def test_recorder_mask_false_keeps_text_and_warns(tmp_path, sqlite_url, caplog):
    caplog.set_level(logging.WARNING, logger="voxtrail.mask")
    rec = Recorder(db=sqlite_url, spool_dir=tmp_path / "spool", mask=False)
    rec.record(request_id="m1", text_input=f"电话 {PHONE}")
    assert rec.flush(30)
    rec.close()
    assert stored_texts(sqlite_url) == [f"电话 {PHONE}"]
    assert "Recorder(mask=False)" in caplog.text


def test_a_bad_mask_table_stops_a_command_in_one_line(tmp_path):
    config = tmp_path / "voxtrail.toml"
    config.write_text('[[mask.rules]]\nname = "broken"\npattern = "(unclosed"\n')
    (tmp_path / "a.jsonl").write_text("{}\n")
    proc = voxtrail("import", str(tmp_path / "a.jsonl"), "--db", f"sqlite:///{tmp_path}/v.db", "--config", str(config))
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "voxtrail: error: [[mask.rules]] 'broken': invalid regular expression '(unclosed': "
        "missing ), unterminated subpattern at position 0"]


def test_redis_entries_are_masked_on_both_paths():
    """What `voxtrail collect` reads from Redis: the column-wise fast path and the per-object one."""
    from voxtrail.sources.redis_stream import FIELD, entries_to_batch

    event = {"request_id": "x1", "ts": "2025-03-01T10:00:00+08:00", "status": "success",
             "text_input": f"请拨打{PHONE}"}
    fast = entries_to_batch([(b"1-0", {FIELD: orjson.dumps(event)})])
    slow = entries_to_batch([(b"1-0", {FIELD: orjson.dumps({**event, "emotion_vector": [1, 2]})}),
                             (b"2-0", {FIELD: orjson.dumps({**event, "request_id": "x2"})})])
    assert fast.frame["text_input"].to_list() == ["请拨打138****5678"]
    assert slow.frame["text_input"].to_list() == ["请拨打138****5678"] and len(slow.rejects) == 1


def test_configured_patterns_run_on_re2_with_python_replacements():
    m = Masker.from_settings(settings(rules=[
        {"name": "han", "pattern": r"姓名[:：]\p{Han}{2,3}", "replacement": r"姓名:[已隐藏]"},
        {"name": "order", "pattern": r"(?P<kind>ORD|INV)-(\d+)", "replacement": r"\g<kind>-\2*"},
    ]))
    assert m.mask_text("姓名：张三丰，订单 ORD-123") == "姓名:[已隐藏]，订单 ORD-123*"
    assert m.mask_text("没有匹配") == "没有匹配"


@pytest.mark.parametrize("pattern,needle", [
    (r"(?<=ID)\d+", "invalid perl operator: (?<="),
    (r"(a)\1", "invalid escape sequence: \\1"),
    (r"a++", "bad repetition operator: ++"),
])
def test_configured_patterns_that_need_backtracking_are_refused(pattern, needle):
    with pytest.raises(ConfigError) as exc:
        Masker.from_settings(settings(rules=[{"name": "bt", "pattern": pattern, "replacement": "*"}]))
    message = str(exc.value)
    assert message.startswith(f"[[mask.rules]] 'bt': invalid regular expression {pattern!r}: {needle}")
    assert "RE2" in message and "docs/masking.md" in message


def test_a_replacement_naming_an_unknown_group_is_a_config_error():
    with pytest.raises(ConfigError, match=r"'named': invalid replacement '\\\\g<nope>': unknown group name 'nope'"):
        Masker.from_settings(settings(rules=[{"name": "named", "pattern": "(?P<x>a)", "replacement": r"\g<nope>"}]))


def test_configured_patterns_mask_around_lone_surrogates_and_empty_matches():
    """Text from json.loads('"\\ud800"') reaches record(); it cannot be UTF-8 for RE2, and must not raise."""
    m = Masker.from_settings(settings(rules=[{"name": "order", "pattern": r"ORD-\d+", "keep_start": 4}]))
    assert m.mask_text("ORD-12\ud800ORD-345 中") == "ORD-**\ud800ORD-*** 中"
    empty = Masker.from_settings(settings(rules=[{"name": "gap", "pattern": "x*", "replacement": "-"}]))
    assert empty.mask_text("axé中") == re.sub("x*", "-", "axé中")
