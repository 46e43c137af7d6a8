"""Standalone loading (files, directories, Secrets) and reload semantics, with a fake runtime backend."""

from __future__ import annotations

import asyncio
import base64
import textwrap
from pathlib import Path

import pytest

from controller.agent import Agent, AgentOptions
from controller.runtime import Runtime
from controller.standalone import ConfigError, FileSource, RunOptions, fingerprint, load
from tests.controller.fakes import SpeakerFactory, WriterFactory
from tests.controller.test_agent import eventually
from tests.controller.test_cli import PEER, SERVER


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_directories_are_read_in_order_and_recursion_is_opt_in(tmp_path: Path) -> None:
    write(tmp_path / "10-server.yaml", SERVER)
    write(tmp_path / "20-peers.yml", PEER.format(name="fw-a", address="10.0.0.2"))
    write(tmp_path / "notes.txt", "not yaml")
    write(tmp_path / "more" / "30-peer.yaml", PEER.format(name="fw-b", address="10.0.0.3"))
    flat = load([tmp_path])
    assert [p.metadata.name for p in flat.peers] == ["fw-a"]
    assert flat.files == [str(tmp_path / "10-server.yaml"), str(tmp_path / "20-peers.yml")]
    deep = load([tmp_path], recursive=True)
    assert sorted(p.metadata.name for p in deep.peers) == ["fw-a", "fw-b"]


def test_secret_data_is_base64_and_string_data_wins(tmp_path: Path) -> None:
    encoded = base64.b64encode(b"from-data").decode()
    write(
        tmp_path / "s.yaml",
        f"""\
        apiVersion: v1
        kind: Secret
        metadata:
          name: md5
          namespace: routing
        data:
          password: {encoded}
          other: {encoded}
        stringData:
          password: from-string-data
        ---
        apiVersion: v1
        kind: Secret
        metadata:
          name: plain
        stringData:
          key: v
        """,
    )
    config = load([tmp_path / "s.yaml"], namespace="mine")
    assert config.secrets[("routing", "md5")] == {"password": b"from-string-data", "other": b"from-data"}
    assert config.secrets[("mine", "plain")] == {"key": b"v"}  # no namespace: the default one


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", PEER.format(name="x", address="not-an-ip"))
    write(tmp_path / "b.yaml", "kind: Nope\nmetadata: {name: y}\n")
    with pytest.raises(ConfigError) as exc:
        load([tmp_path])
    assert len(exc.value.messages) == 2


def test_fingerprint_changes_with_content_and_listing(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yaml", SERVER)
    first = fingerprint([str(tmp_path)], False)
    assert first == fingerprint([str(tmp_path)], False)
    path.write_text(SERVER + "\n# changed\n")
    second = fingerprint([str(tmp_path)], False)
    assert second != first
    write(tmp_path / "b.yaml", PEER.format(name="fw", address="10.0.0.2"))
    assert fingerprint([str(tmp_path)], False) != second


async def test_reload_applies_good_configuration_and_refuses_bad(tmp_path: Path) -> None:
    config = write(tmp_path / "rs.yaml", SERVER + "---\n" + PEER.format(name="fw-a", address="10.0.0.2"))
    source = FileSource(RunOptions(paths=[str(tmp_path)], bfd=False, watch_interval=0))
    speakers = SpeakerFactory()
    runtime = Runtime(speaker_factory=speakers, writer_factory=WriterFactory(), observe_interval=3600)
    agent = Agent(AgentOptions(admin_address="127.0.0.1:0", bfd=False, handle_signals=False), runtime=runtime)
    source.load_first()
    run = asyncio.get_running_loop().create_task(agent.run(source))
    try:
        await eventually(lambda: runtime.generation == 1)
        speaker = speakers.last
        assert list(speaker.calls) == [("add", "fw-a")]

        # A broken edit is refused as a whole: nothing changes, the error is visible in the status.
        config.write_text(SERVER + "---\n" + PEER.format(name="fw-a", address="10.0.0.2") + "  port: 0\n")
        assert await source.reload() is False
        status = runtime.status()
        assert status.config.generation == 1
        assert status.config.last_error is not None and "spec.port" in status.config.last_error
        assert speaker.calls == [("add", "fw-a")]

        # A good edit: only the new peer is added; fw-a keeps its session.
        extra = PEER.format(name="fw-b", address="10.0.0.3")
        config.write_text(SERVER + "---\n" + PEER.format(name="fw-a", address="10.0.0.2") + "---\n" + extra)
        assert await source.reload() is True
        assert speaker.calls == [("add", "fw-a"), ("add", "fw-b")]
        status = runtime.status()
        assert status.config.generation == 2 and status.config.last_error is None
        assert status.config.sources == (str(config),)
    finally:
        agent.request_stop()
        assert await run == 0


async def test_watcher_notices_file_changes(tmp_path: Path) -> None:
    config = write(tmp_path / "rs.yaml", SERVER)
    source = FileSource(RunOptions(paths=[str(config)], bfd=False, watch_interval=0.01))
    source._fingerprint = fingerprint([str(config)], False)
    watcher = asyncio.get_running_loop().create_task(source._watch())
    try:
        config.write_text(SERVER + "# edit\n")
        await asyncio.wait_for(source._reload.wait(), 5)
    finally:
        watcher.cancel()
