"""The agent host: submit coalescing and its awaiting semantics, failed applies and their retry, the
periodic pass, refusals, the lifecycle (on failure too), and SIGHUP reloads through the file source."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import textwrap
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from controller import agent as agent_module
from controller.agent import Agent, AgentOptions, AgentStoppedError, ApplyError
from controller.desired import DesiredState, NodeContext
from controller.metrics import Metrics
from controller.runtime import Runtime
from controller.runtime.routes import RoutesPage, RoutesQuery
from controller.standalone import FileSource, RunOptions
from controller.status import AgentStatus, ConfigView
from tests.controller.fakes import SpeakerFactory, WriterFactory
from tests.controller.test_cli import PEER, SERVER

NODE = NodeContext.of("node-1", router_id=IPv4Address("10.0.0.1"))


def state(name: str) -> DesiredState:
    """Distinct desired states (compared by identity in these tests)."""
    return DesiredState(node=NodeContext.of(name))


class FakeRuntime:
    """Records what the agent asks; `gate` holds an apply open; `failures` applies raise."""

    def __init__(self, calls: list[str] | None = None) -> None:
        self.metrics = Metrics()
        self.generation = 0
        self.sources: tuple[str, ...] = ()
        self.applied: list[DesiredState] = []
        self.refused: list[str] = []
        self.calls = calls if calls is not None else []
        self.gate: asyncio.Event | None = None
        self.applying = asyncio.Event()
        self.failures = 0
        self.fail_start = False

    async def start(self) -> None:
        self.calls.append("runtime start")
        if self.fail_start:
            raise RuntimeError("runtime cannot start")

    async def apply(self, desired: DesiredState) -> None:
        self.applied.append(desired)
        self.applying.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise RuntimeError("boom")
        self.generation += 1

    def refuse(self, message: str) -> None:
        self.refused.append(message)

    async def stop(self, keep_routes: bool | None = None) -> None:
        self.calls.append("runtime stop")

    def status(self, max_routes: int = 0) -> AgentStatus:
        return AgentStatus("node-1", "", 0.0, True, ConfigView(self.sources, self.generation))

    async def routes(self, query: RoutesQuery) -> RoutesPage:
        raise KeyError(query.route_server)

    def healthy(self) -> bool:
        return True


class FakeBfd:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.running = False

    def start(self) -> None:
        self.calls.append("bfd start")
        self.running = True

    def stop(self, timeout: float = 5.0) -> None:
        self.calls.append("bfd stop")
        self.running = False


@dataclass
class FakeSource:
    calls: list[str]
    first: DesiredState | None = None
    fail: bool = False
    hang: bool = False
    reloads: int = 0
    agent: Agent | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self, agent: Agent) -> None:
        self.calls.append("source start")
        self.agent = agent
        agent.on_reload(self._on_reload)
        if self.fail:
            raise RuntimeError("source cannot start")
        if self.hang:
            await asyncio.Event().wait()
        if self.first is not None:
            await agent.submit(self.first)
        self.started.set()

    async def stop(self) -> None:
        self.calls.append("source stop")

    def _on_reload(self) -> None:
        self.reloads += 1


def options(**kw: object) -> AgentOptions:
    values: dict[str, object] = {"admin_address": "127.0.0.1:0", "bfd": False, "handle_signals": False}
    values.update(kw)
    return AgentOptions(**values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def applier(agent: Agent) -> AsyncIterator[None]:
    """Only the agent's applier task (no admin, no source), for the submit tests."""
    task = asyncio.get_running_loop().create_task(agent._applier())
    agent._tasks = [task]
    try:
        yield
    finally:
        agent._closing = True
        await agent._stop_tasks()


async def eventually(condition: Callable[[], object], seconds: float = 5.0) -> None:
    """Poll a condition on fakes (they have no events to wait on)."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


def others() -> set[asyncio.Task[object]]:
    return {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}


# -- submit ----------------------------------------------------------------------------------------


async def test_a_burst_during_an_apply_is_coalesced_into_one_apply_of_the_latest_state() -> None:
    runtime = FakeRuntime()
    runtime.gate = asyncio.Event()
    agent = Agent(options(), runtime=runtime)
    first, *burst = [state(f"s{i}") for i in range(5)]
    async with applier(agent):
        f_first = agent.submit(first)
        await runtime.applying.wait()  # `first` is being applied; everything below arrives meanwhile
        futures = [agent.submit(s) for s in burst]
        await asyncio.sleep(0.01)
        assert not any(f.done() for f in futures)
        runtime.gate.set()
        assert await f_first == 1
        # Every state of the burst is answered by the one apply of the latest.
        assert [await f for f in futures] == [2, 2, 2, 2]
    assert runtime.applied == [first, burst[-1]]
    assert agent.desired is burst[-1]


async def test_awaiting_an_older_state_returns_when_a_newer_one_is_applied() -> None:
    runtime = FakeRuntime()
    agent = Agent(options(), runtime=runtime)
    async with applier(agent):
        old, new = state("old"), state("new")
        f_old = agent.submit(old)
        f_new = agent.submit(new)  # before the applier ran: `old` is never applied
        assert await f_old == await f_new == 1
    assert runtime.applied == [new]


async def test_a_failed_apply_fails_its_awaiters_and_is_retried_until_it_succeeds(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(agent_module, "RETRY_MIN", 0.01)
    runtime = FakeRuntime()
    runtime.failures = 2
    agent = Agent(options(reapply_interval=3600), runtime=runtime)
    wanted = state("s")
    async with applier(agent):
        with pytest.raises(ApplyError, match="boom"):
            await agent.submit(wanted)
        assert not agent.healthy() and agent.desired is None
        # Retried with backoff (0.01 s, then 0.02 s), with no new submit.
        await eventually(lambda: runtime.generation == 1)
        assert runtime.applied == [wanted, wanted, wanted]
        assert agent.healthy() and agent.desired is wanted
    assert [r.getMessage() for r in caplog.records].count("applying the desired state failed; retrying") == 2


async def test_a_submit_without_awaiting_that_fails_is_only_logged() -> None:
    runtime = FakeRuntime()
    runtime.failures = 1
    agent = Agent(options(reapply_interval=3600), runtime=runtime)
    async with applier(agent):
        future = agent.submit(state("s"))
        await eventually(future.done)
    # No "exception was never retrieved": the agent marked it seen; an awaiter still gets it.
    assert isinstance(future.exception(), ApplyError)


async def test_the_periodic_pass_reapplies_the_latest_state() -> None:
    runtime = FakeRuntime()
    agent = Agent(options(reapply_interval=0.02), runtime=runtime)
    wanted = state("s")
    async with applier(agent):
        await agent.submit(wanted)
        await eventually(lambda: len(runtime.applied) >= 3)
    assert all(d is wanted for d in runtime.applied)


async def test_a_refusal_is_recorded_after_the_states_submitted_before_it() -> None:
    runtime = FakeRuntime()
    runtime.gate = asyncio.Event()
    agent = Agent(options(), runtime=runtime)
    async with applier(agent):
        pending = agent.submit(state("good"))
        await runtime.applying.wait()
        agent.refuse("bad edit")  # the apply of "good" would clear it if recorded now
        assert runtime.refused == []
        runtime.gate.set()
        await pending
        await eventually(lambda: runtime.refused == ["bad edit"])
        agent.refuse("idle")  # nothing pending: at once
        assert runtime.refused == ["bad edit", "idle"]


async def test_a_newer_submit_supersedes_a_pending_refusal() -> None:
    runtime = FakeRuntime()
    runtime.gate = asyncio.Event()
    agent = Agent(options(), runtime=runtime)
    async with applier(agent):
        agent.submit(state("a"))
        await runtime.applying.wait()
        agent.refuse("bad")
        newer = agent.submit(state("b"))
        runtime.gate.set()
        await newer
        await asyncio.sleep(0.01)
    assert runtime.refused == []


async def test_pending_submits_fail_when_the_agent_stops() -> None:
    runtime = FakeRuntime()
    runtime.gate = asyncio.Event()
    agent = Agent(options(), runtime=runtime)
    async with applier(agent):
        agent.submit(state("a"))
        await runtime.applying.wait()
        later = agent.submit(state("b"))
        runtime.gate.set()  # "a" finishes; the applier then sees the agent closing
        agent._closing = True
    with pytest.raises(AgentStoppedError):
        await later
    with pytest.raises(AgentStoppedError):
        await agent.submit(state("c"))


# -- lifecycle -------------------------------------------------------------------------------------


async def test_admin_port_taken_exits_1_and_starts_nothing() -> None:
    calls: list[str] = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        agent = Agent(
            options(admin_address=f"127.0.0.1:{port}", handle_signals=True),
            runtime=FakeRuntime(calls),
            bfd=FakeBfd(calls),
        )
        assert await agent.run(FakeSource(calls, state("s"))) == 1
    assert calls == []
    assert not others()


@pytest.mark.parametrize("where", ["runtime", "source"])
async def test_a_failed_start_stops_what_was_started_in_order_and_exits_1(where: str) -> None:
    calls: list[str] = []
    runtime = FakeRuntime(calls)
    runtime.fail_start = where == "runtime"
    bfd = FakeBfd(calls)
    agent = Agent(options(handle_signals=True), runtime=runtime, bfd=bfd)
    source = FakeSource(calls, state("s"), fail=where == "source")
    sighup_before = signal.getsignal(signal.SIGHUP)  # SIG_IGN under nohup, SIG_DFL otherwise
    assert await agent.run(source) == 1
    if where == "runtime":
        assert calls == ["bfd start", "runtime start", "runtime stop", "bfd stop"]
    else:
        assert calls == [
            "bfd start",
            "runtime start",
            "source start",
            "source stop",
            "runtime stop",
            "bfd stop",
        ]
    assert not bfd.running and not others()
    with socket.create_server(("127.0.0.1", agent.admin.port)):
        pass  # the admin port is free again
    assert signal.getsignal(signal.SIGHUP) is sighup_before  # handlers removed


async def test_a_stop_during_a_hanging_source_start_stops_cleanly() -> None:
    calls: list[str] = []
    agent = Agent(options(), runtime=FakeRuntime(calls))
    source = FakeSource(calls, hang=True)
    run = asyncio.get_running_loop().create_task(agent.run(source))
    await eventually(lambda: "source start" in calls)
    agent.request_stop()
    assert await run == 0
    assert calls == ["runtime start", "source start", "source stop", "runtime stop"]
    assert not others()


async def test_signals_reload_through_the_source_and_stop_the_agent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    calls: list[str] = []
    runtime = FakeRuntime(calls)
    agent = Agent(options(handle_signals=True), runtime=runtime, bfd=FakeBfd(calls))
    source = FakeSource(calls, state("s"))
    run = asyncio.get_running_loop().create_task(agent.run(source))
    await asyncio.wait_for(source.started.wait(), 5)
    os.kill(os.getpid(), signal.SIGHUP)
    await eventually(lambda: source.reloads == 1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(run, 5) == 0
    assert calls == ["bfd start", "runtime start", "source start", "source stop", "runtime stop", "bfd stop"]
    events = [getattr(r, "event", None) for r in caplog.records]
    assert [e for e in events if e in ("started", "stopping", "stopped")] == [
        "started",
        "stopping",
        "stopped",
    ]
    assert not others()


# -- the file source, hosted -----------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


async def test_sighup_reloads_the_files_through_the_agent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    config = write(tmp_path / "rs.yaml", SERVER + "---\n" + PEER.format(name="fw-a", address="10.0.0.2"))
    speakers = SpeakerFactory()
    runtime = Runtime(speaker_factory=speakers, writer_factory=WriterFactory(), observe_interval=3600)
    agent = Agent(options(handle_signals=True), runtime=runtime)
    source = FileSource(RunOptions(paths=[str(config)], watch_interval=0), node=NODE)
    source.load_first()
    run = asyncio.get_running_loop().create_task(agent.run(source))
    try:
        await eventually(lambda: runtime.generation == 1)
        extra = PEER.format(name="fw-b", address="10.0.0.3")
        config.write_text(config.read_text() + "---\n" + textwrap.dedent(extra))
        os.kill(os.getpid(), signal.SIGHUP)
        await eventually(lambda: runtime.generation == 2)
        assert speakers.last.calls == [("add", "fw-a"), ("add", "fw-b")]
        assert runtime.status().config.sources == (str(config),)
    finally:
        agent.request_stop()
        assert await asyncio.wait_for(run, 10) == 0
    events = [getattr(r, "event", None) for r in caplog.records]
    assert [e for e in events if e in ("started", "config_applied", "stopping", "stopped")] == [
        "started",
        "config_applied",
        "stopping",
        "stopped",
    ]


def test_a_failing_health_check_fails_healthz_until_it_passes() -> None:
    agent = Agent(AgentOptions(admin_address="127.0.0.1:0", bfd=False))
    fresh = [True]
    agent.add_health_check(lambda: fresh[0])
    assert agent.healthy() is agent.runtime.healthy()
    fresh[0] = False
    assert agent.healthy() is False
    fresh[0] = True
    assert agent.healthy() is agent.runtime.healthy()
