"""`kubectl coalmine`, the command line for CanaryRollouts (installed as `kubectl-coalmine`).

A package of its own, beside the operator: it shares the models and the `Kube` facade, so it reads
the resource exactly as the operator writes it, but the operator never imports it. `commands`
parses arguments and talks to the API (its `main` is the console script); `view` turns objects
into text without any I/O. Nothing is imported here, so importing `view` stays that light.
"""
