"""RCML: verbs, hardened parser and the per-call interpreter (emits commands, never touches sockets)."""
