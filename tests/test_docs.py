"""Documentation that cannot drift: the column reference and every SQL example are checked."""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa

from logdata import text_lines, write
from voxtrail.sources.files.importer import Importer
from voxtrail.store import Store, schema_doc

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_schema_reference_matches_the_tables():
    text = (DOCS / "schema.md").read_text(encoding="utf-8")
    start = text.index(schema_doc.START) + len(schema_doc.START) + 1
    end = text.index(schema_doc.END)
    assert text[start:end] == schema_doc.render_markdown(), (
        "docs/schema.md is out of date: replace the generated block with `voxtrail schema --markdown`"
    )


def sql_examples(name: str) -> list[tuple[set[str] | None, str]]:
    text = (DOCS / name).read_text(encoding="utf-8")
    examples = []
    for block in re.findall(r"```sql\n(.*?)```", text, flags=re.S):
        match = re.match(r"-- dialects: ([\w, ]+)\n", block)
        dialects = {d.strip() for d in match.group(1).split(",")} if match else None
        examples.append((dialects, block))
    return examples


def run_sql_examples(store: Store, doc: str) -> int:
    """Run every SQL example of docs/<doc> meant for the store's dialect; each must return rows."""
    ran = 0
    with store.engine.connect() as conn:
        for dialects, sql in sql_examples(doc):
            if dialects is None or store.dialect in dialects:
                rows = conn.execute(sa.text(sql)).all()
                assert rows, sql
                ran += 1
    return ran


def test_schema_sql_examples_run(db_url, tmp_path):
    write(tmp_path / "tts.log", text_lines(50, seed=60))
    (tmp_path / "tts.log").open("a").write("not a log line\n")
    store = Store.open(db_url)
    try:
        Importer(store, tz="UTC").run([str(tmp_path / "tts.log")])
        assert len(sql_examples("schema.md")) >= 3
        assert run_sql_examples(store, "schema.md") >= 2
    finally:
        store.close()
