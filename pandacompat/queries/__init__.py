"""Named reads of pandacompat: `client` for panda-client's job and task calls, `relay` for the
iDDS relay's requests."""
