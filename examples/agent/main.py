"""An AI agent, killed mid-conversation and resumed: ``python examples/agent/main.py``.

Serves the fake LLM (fake_llm.py) on a free local port, starts a worker process for
the agent (agent.py), and asks it a question. The LLM takes two tool calls before it
answers; while it "thinks" about its third reply, the worker is killed with SIGKILL.
A second worker resumes the conversation: the LLM's call counts per request ID and
the tools' ledger show that no completed LLM call and no tool ran again.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # examples/, for _support

import agent
from _support import (
    JsonlTail,
    LocalServer,
    Workers,
    read_jsonl,
    run_id,
    say,
    scratch_folder,
    wait_for,
)
from fake_llm import FakeLLM

HERE = Path(__file__).resolve().parent
QUESTION = "Should I take an umbrella in Paris tomorrow?"
#: The LLM call in progress when worker 1 is killed.
KILL_AT_TURN = 3
#: The conversation's workflow ID; the LLM request IDs derive from it.
AGENT_ID = run_id("agent")


@dataclass
class Outcome:
    """What happened, for the narration and for the example's test."""

    answer: str
    #: LLM calls received per request ID.
    llm_calls: dict[str, int]
    #: (tool, PID of the process) of every tool run, in order.
    tool_runs: list[tuple[str, int]]
    killed_pid: int
    resumed_pid: int


class Narrator:
    """Prints what the LLM and the tools did since the last look."""

    def __init__(self, llm: FakeLLM, workdir: Path) -> None:
        self.llm = llm
        self.seen = 0
        self.tools = JsonlTail(workdir / agent.TOOL_LEDGER)

    def __call__(self) -> None:
        log = list(self.llm.log)
        for line in log[self.seen :]:
            say(f"  [llm] {line}")
        self.seen = len(log)
        for run in self.tools.new():
            say(f"  [tool] {run['tool']} ran in pid {run['pid']}")


def run(workdir: Path) -> Outcome:
    """Run the scenario in ``workdir`` (the current folder), narrating it."""
    llm = FakeLLM(hold_turn=KILL_AT_TURN)
    narrate = Narrator(llm, workdir)
    with (
        LocalServer(llm.api, "fake-llm") as server,
        Workers("agent:app", HERE, workdir, env={"FAKE_LLM_URL": server.url}) as workers,
    ):
        say(f"Fake LLM serving on {server.url}")
        first = workers.start()
        first.wait_ready()
        say(f"Worker 1 (pid {first.pid}) is running: python -m perdure worker agent:app")
        # This process is only a client: it records the workflow, a worker runs it.
        handle = agent.app.start(agent.agent, QUESTION, workflow_id=AGENT_ID)
        say(f"Asked the agent: {QUESTION!r}")

        def holding() -> bool:
            narrate()
            return llm.holding.is_set()

        wait_for(holding, 30, f"the LLM call of turn {KILL_AT_TURN}")
        say(f"SIGKILL worker 1 mid-conversation: exit code {first.kill()}")

        second = workers.start()
        second.wait_ready()
        say(f"Worker 2 (pid {second.pid}) is running; it resumes the conversation")

        def answered() -> bool:
            narrate()
            return handle.status().done

        wait_for(answered, 30, "the agent's answer")
        answer = handle.result(timeout=10)
        say(f"The agent answers: {answer!r}")
        say(f"Worker 2 stopped with SIGTERM: exit code {second.stop()}")

    narrate()
    for request_id, count in sorted(llm.calls.items()):
        note = "  <- in flight at the kill, so it was made again" if count > 1 else ""
        say(f"  {request_id}: {count} call(s){note}")
    tool_runs = [(run["tool"], run["pid"]) for run in read_jsonl(narrate.tools.path)]
    say(f"  tools ran {len(tool_runs)} times in all, each once: {[t for t, _ in tool_runs]}")
    return Outcome(answer, dict(llm.calls), tool_runs, first.pid, second.pid)


def main() -> None:
    with scratch_folder("agent") as workdir:
        try:
            run(workdir)
        finally:
            agent.app.shutdown()


if __name__ == "__main__":
    main()
