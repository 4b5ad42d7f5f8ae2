"""The fault matrix (issue 18): scenarios that inject faults into a live send on the real stack,
checkers that judge what the run left behind, and a runner (`python -m faults`, `make faults`)
that writes faults/results/latest.json and the table in docs/reliability.md."""
