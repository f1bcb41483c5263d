"""The channel to the hub: the agent's polling loop, commands, results and relayed sign-ins
(docs/protocol.md)."""
