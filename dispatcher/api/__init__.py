"""REST API of the dispatcher (`/api/v1/`), one module per resource: `workflows` (submit and
reads), `workflow_actions` (cancel, pause, …), `jobs` (tasks, jobs, attempts, logs), `sites` (sites,
queues, ping); `base` is what they share; `urls` routes them."""
