"""perdure's integrations with other frameworks, each behind an extra of its own.

- ``perdure.integrations.fastapi`` (``perdure[web]``): a lifespan that launches and
  drains the executor, and a 202 with a status URL for a started workflow.
- ``perdure.integrations.pydantic_ai`` (``perdure[pydantic-ai]``): durable Pydantic AI
  agents, whose model requests and tool calls are perdure steps.

Nothing here is imported by ``perdure`` itself: import the integration you use.
"""
