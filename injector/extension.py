"""The name of chaos-inject's block in a Chaos Toolkit experiment's ``extensions`` list (halt guard, verdict,
record): one source for the experiment validator and the recorders, which sit on different floors."""

EXTENSION_NAME = "chaos-inject"
