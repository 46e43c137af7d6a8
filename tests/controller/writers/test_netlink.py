"""Node writer configuration that needs no kernel: table names, nexthop id blocks, refused settings.

The writer itself is exercised against the kernel in tests/integration/test_node_writer.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.writers.netlink import NodeTableWriter, UnknownTableError, nexthop_id_block, resolve_table


@pytest.fixture
def rt_tables(tmp_path: Path) -> list[Path]:
    """An rt_tables file and an rt_tables.d directory, as iproute2 lays them out."""
    main = tmp_path / "rt_tables"
    main.write_text(
        "#\n# reserved values\n#\n255\tlocal\n254\tmain\n253\tdefault\n0\tunspec\n100 vips  # ours\n"
    )
    directory = tmp_path / "rt_tables.d"
    directory.mkdir()
    (directory / "b.conf").write_text("0x200 firewall\n")
    (directory / "a.conf").write_text("201 anycast\n202 firewall\n")
    (directory / "notes.txt").write_text("300 ignored\n")
    return [main, directory]


def test_table_numbers_pass_through(rt_tables: list[Path]) -> None:
    assert resolve_table(100, rt_tables) == 100
    assert resolve_table("4242", rt_tables) == 4242
    assert resolve_table("0x10", rt_tables) == 16


def test_table_names_from_file_and_conf_directory(rt_tables: list[Path]) -> None:
    assert resolve_table("vips", rt_tables) == 100  # trailing comment ignored
    assert resolve_table("anycast", rt_tables) == 201
    assert resolve_table("firewall", rt_tables) == 202  # a.conf is read before b.conf: first wins


def test_builtin_names_without_any_file(tmp_path: Path) -> None:
    assert resolve_table("main", [tmp_path / "absent"]) == 254
    assert resolve_table("default", []) == 253


def test_unknown_table_name_is_refused(rt_tables: list[Path]) -> None:
    with pytest.raises(UnknownTableError, match="ignored"):
        resolve_table("ignored", rt_tables)  # only *.conf files of a directory are read


def test_nexthop_id_blocks_are_per_table() -> None:
    assert nexthop_id_block(100) == 0x80640000
    assert nexthop_id_block(254) == 0x80FE0000
    assert nexthop_id_block(100) != nexthop_id_block(101)
    big = nexthop_id_block(1_000_000)
    assert big >> 31 == 1
    assert big & 0xFFFF == 0


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"table": "local"}, "cannot hold our routes"),
        ({"table": 0}, "cannot hold our routes"),
        ({"table": 100, "protocol": 3}, "reserved"),  # boot: what `ip route add` writes by default
        ({"table": 100, "protocol": 256}, "out of range"),
        ({"table": 100, "metric": -1}, "metric"),
    ],
)
def test_settings_that_would_touch_what_is_not_ours_are_refused(
    options: dict[str, object], match: str
) -> None:
    table = options.pop("table")
    with pytest.raises(ValueError, match=match):
        NodeTableWriter(table, rt_tables=[], **options)  # type: ignore[arg-type]
