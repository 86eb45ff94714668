"""Canary analysis: is the canary as healthy as it must be, measured rather than hoped for.

A rollout only moves traffic safely if it notices a bad canary before users do. This package
holds the part of that decision which needs no cluster and no network, so every rule can be
tested exhaustively and read in one place:

- `spec`: what users write (metrics, templates, references) and the checks made before any
  traffic moves;
- `query`: PromQL query templates, their variables and how values are escaped;
- `cel`: success and failure conditions in CEL, compiled once and never `eval`ed;
- `evaluate`: one measurement judged from the provider's raw answer, including the explicit
  no-data policy for empty vectors, NaN and infinities;
- `judge`: the Mann-Whitney U test that compares canary and stable samples;
- `limits`: measurements folded into a verdict per metric and per analysis, and the schedule.

Everything here is pure (no I/O, no clock); only `analysis.prometheus`, which talks to
Prometheus, may do I/O. See docs/analysis.md for the user-facing reference.
"""
