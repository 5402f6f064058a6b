"""The ailuro pilot: acquires jobs over the v1 protocol and runs their payloads (no Django).

`client` talks to the server (retry, backoff, spool), `runner` runs and measures one payload,
`monitor` reads the payload's process tree from /proc, `pilot` is the job loop and `cli` the
`ailuro pilot` command line.
"""

from __future__ import annotations
