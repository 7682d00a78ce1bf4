"""A durable Pydantic AI agent, killed mid-run and resumed:
``python examples/pydantic_ai_agent/main.py``.

Serves a fake model speaking the OpenAI chat-completions API (fake_openai.py) on a free
local port, starts a worker process for the agent (agent.py), and asks it a question
while this process, the client, follows the answer's tokens on the workflow's perdure
stream. The model calls two tools before it answers; while it "thinks" about its third
reply, the worker is killed with SIGKILL. A second worker resumes the run: the model's
call counts per turn and the tools' ledger show that no finished model call and no tool
ran again, and the client receives the answer token by token.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
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
from fake_openai import FakeOpenAI

HERE = Path(__file__).resolve().parent
QUESTION = "Should I take an umbrella in Paris tomorrow?"
#: The model call in progress when worker 1 is killed.
KILL_AT_TURN = 3
#: The agent run's workflow ID.
AGENT_ID = run_id("forecast")


@dataclass
class Outcome:
    """What happened, for the narration and for the example's test."""

    answer: str
    #: Model calls received per turn.
    model_calls: dict[int, int]
    #: (tool, PID of the process) of every tool run, in order.
    tool_runs: list[tuple[str, int]]
    #: The tokens the client read from the stream, in order.
    tokens: list[str] = field(default_factory=list)
    killed_pid: int = 0
    resumed_pid: int = 0


class Narrator:
    """Prints what the model and the tools did since the last look."""

    def __init__(self, model: FakeOpenAI, workdir: Path) -> None:
        self.model = model
        self.seen = 0
        self.tools = JsonlTail(workdir / agent.TOOL_LEDGER)
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            log = list(self.model.log)
            for line in log[self.seen :]:
                say(f"  [model] {line}")
            self.seen = len(log)
            for run in self.tools.new():
                say(f"  [tool] {run['tool']} ran in pid {run['pid']}")


def follow_tokens(tokens: list[str]) -> threading.Thread:
    """The client: reads the answer's tokens from the workflow's stream as they come, until
    the workflow ends."""

    def read() -> None:
        for token in agent.app.read_stream(AGENT_ID, agent.TOKENS):
            tokens.append(token)
            say(f"  [client] token {token!r}")

    reader = threading.Thread(target=read, name="tokens", daemon=True)
    reader.start()
    return reader


def run(workdir: Path) -> Outcome:
    """Run the scenario in ``workdir`` (the current folder), narrating it."""
    model = FakeOpenAI(hold_turn=KILL_AT_TURN)
    narrate = Narrator(model, workdir)
    tokens: list[str] = []
    with (
        LocalServer(model.api, "fake-openai") as server,
        Workers("agent:app", HERE, workdir, env={"FAKE_OPENAI_URL": f"{server.url}/v1"}) as workers,
    ):
        say(f"Fake OpenAI-compatible model serving on {server.url}/v1")
        first = workers.start()
        first.wait_ready()
        say(f"Worker 1 (pid {first.pid}) is running: python -m perdure worker agent:app")
        # This process is only a client: it records the workflow, a worker runs it.
        handle = agent.app.start(agent.forecast, QUESTION, workflow_id=AGENT_ID)
        say(f"Asked the agent: {QUESTION!r}; following its tokens on stream {agent.TOKENS!r}")
        reader = follow_tokens(tokens)

        def holding() -> bool:
            narrate()
            return model.holding.is_set()

        wait_for(holding, 30, f"the model call of turn {KILL_AT_TURN}")
        say(f"SIGKILL worker 1 mid-run: exit code {first.kill()}")

        second = workers.start()
        second.wait_ready()
        say(f"Worker 2 (pid {second.pid}) is running; it resumes the agent's run")

        def answered() -> bool:
            narrate()
            return handle.status().done

        wait_for(answered, 30, "the agent's answer")
        answer = handle.result(timeout=10)
        reader.join(timeout=10)
        say(f"The agent answers: {answer!r}")
        say(f"The client read it in {len(tokens)} tokens: {''.join(tokens)!r}")
        say(f"Worker 2 stopped with SIGTERM: exit code {second.stop()}")

    narrate()
    for turn, count in sorted(model.calls.items()):
        note = "  <- in flight at the kill, so it was made again" if count > 1 else ""
        say(f"  model turn {turn}: {count} call(s){note}")
    tool_runs = [(run["tool"], run["pid"]) for run in read_jsonl(narrate.tools.path)]
    say(f"  tools ran {len(tool_runs)} times in all, each once: {[t for t, _ in tool_runs]}")
    return Outcome(answer, dict(model.calls), tool_runs, tokens, first.pid, second.pid)


def main() -> None:
    with scratch_folder("pydantic-ai-agent") as workdir:
        try:
            run(workdir)
        finally:
            agent.app.shutdown()


if __name__ == "__main__":
    main()
