"""What PanDA's own clients need from ailuro: Rubin's `bps` with its PanDA plugin (the iDDS relay)
and ATLAS's panda-client (system calls, the user file cache, device-flow login configuration).

The top layer beside `config`: it translates the clients' payloads into ailuro's own workflow
spec and calls the dispatcher's services; nothing below imports it.
"""
