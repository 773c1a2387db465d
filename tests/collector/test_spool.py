"""The spool: a retrieved message split into header and body, in memory or on disk (no servers)."""

from __future__ import annotations

from smartpop.collector.spool import MEMORY_COPY, SpoolSlots, SpoolWriter


def test_spool_header_split_on_odd_chunking(tmp_path) -> None:
    data = b"Subject: a\r\n  folded\r\nX: y\r\n\r\nbody line\r\n"
    for size in (1, 2, 3, 7, 100):
        writer = SpoolWriter(tmp_path, "t")
        for i in range(0, len(data), size):
            writer.write(data[i:i + size])
        spooled = writer.close()
        assert spooled.header == b"Subject: a\r\n  folded\r\nX: y\r\n\r\n"
        assert spooled.path.read_bytes() == data
        assert [f.name for f in spooled.fields] == ["subject", "x"]
        spooled.remove()


def test_spool_in_memory_keeps_small_messages_off_the_disk_and_spills_large_ones(tmp_path) -> None:
    head = b"Subject: a\r\nX: y\r\n\r\n"
    for body_size in (0, 10, MEMORY_COPY - len(head), MEMORY_COPY - len(head) + 1, 3 * MEMORY_COPY):
        data = head + b"b" * body_size
        for size in (1000, 64 * 1024):
            slots = SpoolSlots(tmp_path, "t")
            writer = SpoolWriter(tmp_path, "t", slots, in_memory=True)
            for i in range(0, len(data), size):
                writer.write(data[i:i + size])
            spooled = writer.close()
            assert spooled.header == head and spooled.size == len(data)
            assert b"".join(spooled.body_chunks()) == data[len(head):]
            if len(data) <= MEMORY_COPY:
                assert spooled.path is None and not list(tmp_path.iterdir())
            else:
                assert spooled.path is not None and spooled.path.read_bytes() == data
            spooled.remove()
            slots.remove_all()
            assert not list(tmp_path.iterdir())
