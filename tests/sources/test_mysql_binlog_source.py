"""The mysql_binlog source against a real MariaDB (binlog on) and a real broker.

Each test makes its changes in its own database and starts the source at the
binlog position taken before them, then reads what landed in the table topics.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from zoneinfo import ZoneInfo

import pytest

from etl.kafka import topic_partitions
from etl.runtime.transform import ensure_dead_letter_topic
from etl.sources.mysql_binlog.envelope import murmur2_partition
from etl.testing.kafka import read_all
from tests.sources.helpers import (
    BinlogServer,
    events,
    make_settings,
    running_source,
    source_options,
)

pytestmark = [pytest.mark.kafka, pytest.mark.mysql]


def midnight_ms(day: dt.date, zone: str) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone)).timestamp() * 1000)


async def test_document_example_yields_the_documented_envelope(
    kafka_bootstrap: str, binlog_server: BinlogServer, database: str, uid: str
) -> None:
    server = binlog_server
    server.execute(
        f"CREATE TABLE `{database}`.mysql_tbl (mysql_id INT UNSIGNED AUTO_INCREMENT PRIMARY KEY, "
        "mysql_title VARCHAR(100) NOT NULL, mysql_author VARCHAR(40) NOT NULL, "
        "submission_date DATE)"
    )
    options = source_options(
        server, database, uid, tables="mysql_tbl", topic_prefix="mysql", timezone="Asia/Shanghai"
    )
    options["topic_prefix"] = f"mysql{uid}"
    async with running_source(kafka_bootstrap, options) as source:
        assert str(source.status.state) == "running", source.status.error
        # The statement of the document, as written there.
        server.execute(
            f"INSERT INTO `{database}`.mysql_tbl\n  (mysql_title, mysql_author, submission_date)\n"
            '  VALUES\n  ("mysql2kafka", "tester", NOW())'
        )
        stored = server.execute(f"SELECT submission_date FROM `{database}`.mysql_tbl")[0][0]
        [event] = await events(kafka_bootstrap, f"mysql{uid}_mysql_tbl", 1)

    doc = event.doc
    assert list(doc) == ["schema", "payload", "version"]
    assert list(doc["schema"]) == ["dataColumn", "primaryKey", "source"]
    assert doc["schema"]["dataColumn"] == [
        {"name": "mysql_id", "type": "LONG"},
        {"name": "mysql_title", "type": "STRING"},
        {"name": "mysql_author", "type": "STRING"},
        {"name": "submission_date", "type": "DATE"},
    ]
    assert doc["schema"]["primaryKey"] == ["mysql_id"]
    assert doc["schema"]["source"] == {
        "dbType": "MySQL",
        "dbName": database,
        "tableName": "mysql_tbl",
    }
    payload = doc["payload"]
    assert list(payload) == ["before", "after", "sequenceId", "timestamp", "op", "ddl"]
    assert payload["before"] is None
    assert list(payload["after"]) == ["dataColumn"]
    assert payload["after"]["dataColumn"] == {
        "mysql_id": 1,  # the full row image also carries the generated id
        "mysql_title": "mysql2kafka",
        "mysql_author": "tester",
        "submission_date": midnight_ms(stored, "Asia/Shanghai"),
    }
    assert isinstance(payload["sequenceId"], str) and payload["sequenceId"].isdigit()
    stamps = payload["timestamp"]
    assert list(stamps) == ["eventTime", "systemTime", "checkpointTime"]
    assert all(isinstance(v, int) for v in stamps.values())
    assert stamps["eventTime"] % 1000 == 0  # the binlog keeps whole seconds
    assert stamps["eventTime"] <= stamps["systemTime"] + 1000
    assert stamps["checkpointTime"] <= stamps["eventTime"]
    assert payload["op"] == "INSERT"
    assert payload["ddl"] is None
    assert doc["version"] == "0.0.1"
    assert event.record.key == b"[1]"
    assert event.record.partition == murmur2_partition(b"[1]", 6)


async def test_update_delete_and_multi_row_insert(
    kafka_bootstrap: str, binlog_server: BinlogServer, database: str, uid: str
) -> None:
    server = binlog_server
    server.execute(
        f"CREATE TABLE `{database}`.orders (id INT PRIMARY KEY, item VARCHAR(20), qty INT)"
    )
    start = server.position()
    table = f"`{database}`.orders"
    server.execute(
        f"INSERT INTO {table} VALUES (1, 'apple', 3), (2, 'pear', 5), (3, 'plum', 7)",
        f"UPDATE {table} SET qty = qty + 10 WHERE id IN (1, 2)",
        f"DELETE FROM {table} WHERE id = 3",
        f"UPDATE {table} SET id = 20 WHERE id = 2",
    )
    options = source_options(server, database, uid, tables=["orders"], start=start)
    async with running_source(kafka_bootstrap, options) as source:
        found = await events(kafka_bootstrap, f"t{uid}_orders", 8)
        assert source.status.produced == 8

    assert [e.op for e in found] == ["INSERT"] * 3 + ["UPDATE"] * 2 + ["DELETE"] * 2 + ["INSERT"]
    inserts, updates, delete = found[:3], found[3:5], found[5]
    # A new primary key: the old key's history ends with a DELETE, the new key's starts.
    moved_out, moved_in = found[6], found[7]
    assert moved_out.record.key == b"[2]" and moved_out.after is None
    assert moved_in.record.key == b"[20]" and moved_in.after == {
        "id": 20,
        "item": "pear",
        "qty": 15,
    }
    # One statement, three rows: three messages of one event, in row order.
    assert [e.after for e in inserts] == [
        {"id": 1, "item": "apple", "qty": 3},
        {"id": 2, "item": "pear", "qty": 5},
        {"id": 3, "item": "plum", "qty": 7},
    ]
    assert len({e.payload["timestamp"]["eventTime"] for e in inserts}) == 1
    sequence = [int(e.payload["sequenceId"]) for e in found]
    assert sequence == sorted(sequence) and len(set(sequence)) == 8
    assert [(e.before, e.after) for e in updates] == [
        ({"id": 1, "item": "apple", "qty": 3}, {"id": 1, "item": "apple", "qty": 13}),
        ({"id": 2, "item": "pear", "qty": 5}, {"id": 2, "item": "pear", "qty": 15}),
    ]
    assert delete.before == {"id": 3, "item": "plum", "qty": 7} and delete.after is None
    # Same key, same partition: one row's changes stay in order.
    for event in found:
        key = f"[{(event.after or event.before or {})['id']}]".encode()
        assert event.record.key == key
        assert event.record.partition == murmur2_partition(key, 6)


async def test_column_types_and_nulls(
    kafka_bootstrap: str, binlog_server: BinlogServer, database: str, uid: str
) -> None:
    server = binlog_server
    server.execute(
        f"CREATE TABLE `{database}`.types (id BIGINT UNSIGNED PRIMARY KEY, ti TINYINT, "
        "si SMALLINT UNSIGNED, bi BIGINT, f FLOAT, d DOUBLE, amount DECIMAL(12,4), "
        "dt DATETIME(3), ts TIMESTAMP(6) NULL, da DATE, tm TIME(2), y YEAR, ch CHAR(3), "
        "vc VARCHAR(20), tx TEXT, vb VARBINARY(8), bl BLOB, e ENUM('a','b'), "
        "s SET('x','y','z'), flag BIT(1), bits BIT(9), j JSON, emoji VARCHAR(4) "
        "CHARACTER SET utf8mb4)"
    )
    start = server.position()
    server.execute(
        f"INSERT INTO `{database}`.types VALUES (18446744073709551615, -5, 65535, "
        "-9223372036854775808, 1.1, 2.25, -12.5, '2024-01-02 03:04:05.678', "
        "'2024-01-02 03:04:05.123456', '2024-02-29', '-838:59:58.5', 2024, 'ab', 'héllo', "
        "'long text', 0x00ff, 0xdeadbeef, 'b', 'z,x', b'1', b'100000001', '{\"k\": [1, 2]}', "
        "'😀')",
        f"INSERT INTO `{database}`.types (id) VALUES (2)",
    )
    options = source_options(server, database, uid, tables="types", start=start)
    async with running_source(kafka_bootstrap, options):
        first, nulls = await events(kafka_bootstrap, f"t{uid}_types", 2)

    assert first.doc["schema"]["dataColumn"] == [
        {"name": name, "type": kind}
        for name, kind in [
            ("id", "LONG"),
            ("ti", "LONG"),
            ("si", "LONG"),
            ("bi", "LONG"),
            ("f", "DOUBLE"),
            ("d", "DOUBLE"),
            ("amount", "DECIMAL"),
            ("dt", "DATE"),
            ("ts", "DATE"),
            ("da", "DATE"),
            ("tm", "STRING"),
            ("y", "LONG"),
            ("ch", "STRING"),
            ("vc", "STRING"),
            ("tx", "STRING"),
            ("vb", "BYTES"),
            ("bl", "BYTES"),
            ("e", "STRING"),
            ("s", "STRING"),
            ("flag", "BOOLEAN"),
            ("bits", "LONG"),
            ("j", "STRING"),
            ("emoji", "STRING"),
        ]
    ]
    utc = dt.UTC
    assert first.after == {
        "id": 18446744073709551615,
        "ti": -5,
        "si": 65535,
        "bi": -9223372036854775808,
        "f": 1.1,
        "d": 2.25,
        "amount": "-12.5000",
        "dt": int(dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=utc).timestamp() * 1000),
        "ts": int(dt.datetime(2024, 1, 2, 3, 4, 5, 123000, tzinfo=utc).timestamp() * 1000),
        "da": int(dt.datetime(2024, 2, 29, tzinfo=utc).timestamp() * 1000),
        "tm": "-838:59:58.50",
        "y": 2024,
        "ch": "ab",
        "vc": "héllo",
        "tx": "long text",
        "vb": "AP8=",
        "bl": "3q2+7w==",
        "e": "b",
        "s": "x,z",
        "flag": True,
        "bits": 257,
        "j": '{"k": [1, 2]}',
        "emoji": "😀",
    }
    assert nulls.after == {
        "id": 2,
        **{c["name"]: None for c in first.doc["schema"]["dataColumn"][1:]},
    }
    assert json.loads(first.record.value)  # valid JSON, UTF-8


async def test_alter_table_mid_stream_decodes_each_row_with_its_own_columns(
    kafka_bootstrap: str, binlog_server: BinlogServer, database: str, uid: str
) -> None:
    server = binlog_server
    table = f"`{database}`.people"
    server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, name VARCHAR(20), age INT)")
    start = server.position()
    # All of it happens before the source reads a byte: the old row must still be
    # decoded with the old columns, which only the binlog knows by now.
    server.execute(
        f"INSERT INTO {table} VALUES (1, 'ann', 30)",
        f"ALTER TABLE {table} DROP COLUMN age, ADD COLUMN email VARCHAR(40) AFTER id",
        f"INSERT INTO {table} VALUES (2, 'bob@example.com', 'bob')",
        f"UPDATE {table} SET name = 'ann-marie' WHERE id = 1",
    )
    options = source_options(server, database, uid, tables="people", start=start)
    async with running_source(kafka_bootstrap, options):
        found = await events(kafka_bootstrap, f"t{uid}_people", 6 + 3)

    rows = [e for e in found if e.op != "DDL"]
    ddl = [e for e in found if e.op == "DDL"]
    assert rows[0].after == {"id": 1, "name": "ann", "age": 30}
    assert [c["name"] for c in rows[0].doc["schema"]["dataColumn"]] == ["id", "name", "age"]
    assert rows[1].after == {"id": 2, "email": "bob@example.com", "name": "bob"}
    assert [c["name"] for c in rows[1].doc["schema"]["dataColumn"]] == ["id", "email", "name"]
    assert rows[2].before == {"id": 1, "email": None, "name": "ann"}
    # The ALTER reaches every partition once, between the old and the new rows.
    assert sorted(e.record.partition for e in ddl) == list(range(6))
    assert {e.payload["ddl"] for e in ddl} == {
        f"ALTER TABLE {table} DROP COLUMN age, ADD COLUMN email VARCHAR(40) AFTER id"
    }
    assert ddl[0].payload["before"] is None and ddl[0].payload["after"] is None
    assert ddl[0].record.key is None
    seq = int(ddl[0].payload["sequenceId"])
    assert int(rows[0].payload["sequenceId"]) < seq < int(rows[1].payload["sequenceId"])


async def test_table_created_after_start_that_matches_the_regex(
    kafka_bootstrap: str, binlog_server: BinlogServer, database: str, uid: str
) -> None:
    server = binlog_server
    server.execute(f"CREATE TABLE `{database}`.listed (id INT PRIMARY KEY)")
    options = source_options(server, database, uid, tables="listed", table_regex="auto_.*")
    async with running_source(kafka_bootstrap, options) as source:
        assert str(source.status.state) == "running", source.status.error
        server.execute(
            f"CREATE TABLE `{database}`.auto_keyed (id INT PRIMARY KEY, v TEXT)",
            f"CREATE TABLE `{database}`.auto_plain (v TEXT)",
            f"CREATE TABLE `{database}`.other (id INT PRIMARY KEY)",
            f"INSERT INTO `{database}`.auto_keyed VALUES (1, 'a')",
            f"INSERT INTO `{database}`.auto_plain VALUES ('b'), ('c')",
            f"INSERT INTO `{database}`.other VALUES (9)",
        )
        keyed = await events(kafka_bootstrap, f"t{uid}_auto_keyed", 6 + 1)
        plain = await events(kafka_bootstrap, f"t{uid}_auto_plain", 1 + 2)

    partitions = await topic_partitions(
        make_settings(kafka_bootstrap).kafka,
        [f"t{uid}_listed", f"t{uid}_auto_keyed", f"t{uid}_auto_plain", f"t{uid}_other"],
    )
    # As the document says: 6 partitions with a primary key, 1 without; no topic
    # for a table that matches neither the list nor the regex.
    assert partitions == {f"t{uid}_listed": 6, f"t{uid}_auto_keyed": 6, f"t{uid}_auto_plain": 1}
    assert [e.op for e in keyed] == ["DDL"] * 6 + ["INSERT"]
    assert keyed[-1].after == {"id": 1, "v": "a"}
    assert keyed[0].payload["ddl"].startswith("CREATE TABLE")
    assert [e.op for e in plain] == ["DDL", "INSERT", "INSERT"]
    assert [e.after for e in plain[1:]] == [{"v": "b"}, {"v": "c"}]
    assert all(e.record.key is None for e in plain)
    assert plain[1].doc["schema"]["primaryKey"] == []


async def test_initial_snapshot_then_changes(
    kafka_bootstrap: str, binlog_server: BinlogServer, database: str, uid: str
) -> None:
    server = binlog_server
    table = f"`{database}`.stock"
    server.execute(
        f"CREATE TABLE {table} (sku VARCHAR(10), site INT, qty INT, at DATETIME, "
        "PRIMARY KEY (sku, site))",
        f"INSERT INTO {table} VALUES ('a', 1, 5, '2024-05-06 07:08:09'), ('b', 2, 0, NULL)",
    )
    options = source_options(server, database, uid, tables="stock", snapshot=True)
    async with running_source(kafka_bootstrap, options) as source:
        snapshot = await events(kafka_bootstrap, f"t{uid}_stock", 2)
        server.execute(f"UPDATE {table} SET qty = 6 WHERE sku = 'a'")
        found = await events(kafka_bootstrap, f"t{uid}_stock", 3)
        await asyncio.sleep(0.5)
        assert source.acked is not None and source.acked.snapshot is None

    assert [(e.op, e.before, e.after) for e in snapshot] == [
        ("INSERT", None, {"sku": "a", "site": 1, "qty": 5, "at": 1714979289000}),
        ("INSERT", None, {"sku": "b", "site": 2, "qty": 0, "at": None}),
    ]
    assert all(dict(e.record.headers).get("etl.snapshot") == b"true" for e in snapshot)
    assert [e.record.key for e in snapshot] == [b'["a",1]', b'["b",2]']
    assert snapshot[0].doc["schema"]["primaryKey"] == ["sku", "site"]
    update = found[-1]
    assert update.op == "UPDATE" and update.after["qty"] == 6  # type: ignore[index]
    assert not dict(update.record.headers).get("etl.snapshot")
    assert int(update.payload["sequenceId"]) > int(snapshot[-1].payload["sequenceId"])
    assert update.doc["schema"] == snapshot[0].doc["schema"]


async def test_clean_stop_saves_position_and_resumes_without_repeats(
    kafka_bootstrap: str, binlog_server: BinlogServer, database: str, uid: str
) -> None:
    server = binlog_server
    table = server.id_table(database, "log")
    options = source_options(server, database, uid, tables="log", start=server.position())
    async with running_source(kafka_bootstrap, options):
        server.insert_ids(table, range(1, 21))
        await events(kafka_bootstrap, f"t{uid}_log", 20)
    server.insert_ids(table, range(21, 31))
    async with running_source(kafka_bootstrap, options):
        found = await events(kafka_bootstrap, f"t{uid}_log", 30)
        await asyncio.sleep(1.0)
    found = await events(kafka_bootstrap, f"t{uid}_log")
    assert sorted(e.after["id"] for e in found) == list(range(1, 31))  # type: ignore[index]

    saved = await read_all(kafka_bootstrap, f"etl-source-cdc-{uid}-offsets")
    last = json.loads(saved[-1].value)
    assert saved[-1].key == f"cdc-{uid}".encode()
    assert {"file", "pos", "gtid", "source", "server"} <= set(last)
    assert last["file"].startswith("binlog.")


async def test_purged_position_fails_loudly_or_resnapshots(
    kafka_bootstrap: str, binlog_server: BinlogServer, database: str, uid: str
) -> None:
    server = binlog_server
    table = server.id_table(database, "gone")
    options = source_options(server, database, uid, tables="gone", start=server.position())
    async with running_source(kafka_bootstrap, options):
        server.execute(f"INSERT INTO {table} VALUES (1)")
        await events(kafka_bootstrap, f"t{uid}_gone", 1)
    server.execute(f"INSERT INTO {table} VALUES (2)", "FLUSH BINARY LOGS")
    current = server.execute("SHOW MASTER STATUS")[0][0]
    for _ in range(100):  # the server keeps a file while a dump thread still reads it
        server.execute(f"PURGE BINARY LOGS TO '{current}'")
        if server.execute("SHOW BINARY LOGS")[0][0] == current:
            break
        await asyncio.sleep(0.1)

    async with running_source(kafka_bootstrap, options) as source:
        assert str(source.status.state) == "failed"
        error = source.status.error or ""
    assert "no longer in the server's binlog" in error and "snapshot: when_needed" in error

    options["snapshot"] = "when_needed"
    async with running_source(kafka_bootstrap, options) as source:
        assert str(source.status.state) == "running", source.status.error
        found = await events(kafka_bootstrap, f"t{uid}_gone", 3)
    copied = [e for e in found if dict(e.record.headers).get("etl.snapshot")]
    assert sorted(e.after["id"] for e in copied) == [1, 2]  # type: ignore[index]


async def test_missing_grants_fail_with_the_list(
    kafka_bootstrap: str, binlog_server: BinlogServer, database: str, uid: str
) -> None:
    server = binlog_server
    user = f"weak{uid}"
    server.execute(
        f"CREATE USER '{user}'@'%' IDENTIFIED BY 'weak-pw-1'",
        f"GRANT SELECT ON `{database}`.* TO '{user}'@'%'",
    )
    server.execute(f"CREATE TABLE `{database}`.t (id INT PRIMARY KEY)")
    options = source_options(server, database, uid, tables="t", user=user, password="weak-pw-1")
    try:
        async with running_source(kafka_bootstrap, options) as source:
            assert str(source.status.state) == "failed"
            error = source.status.error or ""
    finally:
        server.execute(f"DROP USER '{user}'@'%'")
    assert "REPLICATION SLAVE" in error and "REPLICATION CLIENT" in error
    assert "lacks" in error and "GRANT SELECT, REPLICATION SLAVE, REPLICATION CLIENT" in error
    assert "weak-pw-1" not in error


async def test_oversized_change_is_dead_lettered_and_the_rest_flows(
    kafka_bootstrap: str, binlog_server: BinlogServer, database: str, uid: str
) -> None:
    server = binlog_server
    table = f"`{database}`.docs"
    server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, body LONGTEXT)")
    start = server.position()
    server.execute(
        f"INSERT INTO {table} VALUES (1, 'small')",
        f"INSERT INTO {table} VALUES (2, REPEAT('x', 5000))",
        f"INSERT INTO {table} VALUES (3, 'small too')",
    )
    options = source_options(server, database, uid, tables="docs", start=start)
    options["on_error"] = "continue"
    await ensure_dead_letter_topic(make_settings(kafka_bootstrap))
    async with running_source(kafka_bootstrap, options, max_request_size=4096) as source:
        found = await events(kafka_bootstrap, f"t{uid}_docs", 2)
        for _ in range(100):
            if source.status.dead_lettered:
                break
            await asyncio.sleep(0.05)
    assert [e.after["id"] for e in found] == [1, 3]  # type: ignore[index]
    letters = [
        r
        for r in await read_all(kafka_bootstrap, "etl-dead-letter")
        if dict(r.headers).get("etl.pipeline") == f"cdc-{uid}".encode()
    ]
    assert len(letters) == 1
    headers = dict(letters[0].headers)
    assert letters[0].key == b"[2]"
    assert headers["etl.stage"] == b"source"
    assert headers["etl.exception.class"] == b"RecordTooLarge"
    assert headers["etl.source.table"] == b"docs"


async def test_two_workers_one_source_publish_once_and_hand_over(
    kafka_bootstrap: str, binlog_server: BinlogServer, database: str, uid: str
) -> None:
    server = binlog_server
    table = server.id_table(database, "shared")
    options = source_options(server, database, uid, tables="shared", start=server.position())
    topic = f"t{uid}_shared"
    async with running_source(kafka_bootstrap, options) as first:
        assert str(first.status.state) == "running"
        async with running_source(kafka_bootstrap, options, wait=None) as second:
            await asyncio.sleep(0.5)
            assert str(second.status.state) == "starting"  # standby: the lock is taken
            server.insert_ids(table, range(1, 11))
            await events(kafka_bootstrap, topic, 10)
            await first.stop()  # hands the source over
            server.insert_ids(table, range(11, 21))
            await events(kafka_bootstrap, topic, 20)
            assert str(second.status.state) == "running"
            await asyncio.sleep(1.0)
    found = await events(kafka_bootstrap, topic)
    assert sorted(e.after["id"] for e in found) == list(range(1, 21))  # type: ignore[index]


async def test_start_at_a_gtid(
    kafka_bootstrap: str, binlog_server: BinlogServer, database: str, uid: str
) -> None:
    server = binlog_server
    table = f"`{database}`.g"
    server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY)", f"INSERT INTO {table} VALUES (1)")
    [(gtid,)] = server.execute("SELECT @@gtid_binlog_pos")
    server.execute(f"INSERT INTO {table} VALUES (2)", f"INSERT INTO {table} VALUES (3)")
    options = source_options(server, database, uid, tables="g", start=f"gtid:{gtid}")
    async with running_source(kafka_bootstrap, options) as source:
        assert str(source.status.state) == "running", source.status.error
        found = await events(kafka_bootstrap, f"t{uid}_g", 2)
        await asyncio.sleep(0.5)
        assert source.acked is not None and source.acked.file.startswith("binlog.")
    assert [e.after["id"] for e in found] == [2, 3]  # type: ignore[index]


async def test_stop_policy_halts_before_the_bad_transaction(
    kafka_bootstrap: str, binlog_server: BinlogServer, database: str, uid: str
) -> None:
    server = binlog_server
    table = f"`{database}`.docs"
    server.execute(f"CREATE TABLE {table} (id INT PRIMARY KEY, body LONGTEXT)")
    start = server.position()
    server.execute(
        f"INSERT INTO {table} VALUES (1, 'small')",
        f"INSERT INTO {table} VALUES (2, REPEAT('x', 5000))",
        f"INSERT INTO {table} VALUES (3, 'never reached')",
    )
    options = source_options(server, database, uid, tables="docs", start=start, on_error="stop")
    async with running_source(kafka_bootstrap, options, max_request_size=4096) as source:
        for _ in range(200):
            if str(source.status.state) == "halted":
                break
            await asyncio.sleep(0.05)
        assert str(source.status.state) == "halted"
        error = source.status.error or ""
        saved = source.saved
    assert "cannot publish a change of table 'docs'" in error and "RecordTooLarge" in error
    found = await events(kafka_bootstrap, f"t{uid}_docs")
    assert [e.after["id"] for e in found if e.after] == [1]  # type: ignore[index]
    # The saved position is the end of the last good transaction: a restart retries row 2.
    first_end = int(found[0].payload["sequenceId"][6:16])
    assert saved is not None and saved.pos > first_end
    async with running_source(kafka_bootstrap, options, max_request_size=4096) as source:
        for _ in range(200):
            if str(source.status.state) == "halted":
                break
            await asyncio.sleep(0.05)
        assert str(source.status.state) == "halted"
