"""Runtime helpers every process uses: parent watch, memory, CLI logging, extras, checkpoints,
atomic file writes, free endpoints and child processes.

Imports nothing else of the project (see ``protocol/README.md``).
"""
