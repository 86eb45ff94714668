"""The CanaryRollout API: the resource's types, validation and wording, with no I/O.

One definition of the resource serves three readers. `coalmine.crdgen` derives the CRD's
OpenAPI schema from these models, so the API server and the operator agree on field names,
types and defaults. The operator parses every object through `CanaryRollout.from_object`, which
repeats the checks the CRD's CEL rules make: an object the API server never validated (an older
CRD still installed, a status written by hand) then fails as one `SpecError` naming the field,
which becomes the InvalidSpec condition, instead of a KeyError halfway through a reconcile. And
the status models are the operator's only memory, so every field it relies on after a restart is
declared here, where the API server will not prune it.

Pure on purpose: pydantic and the standard library only, no I/O. Modules are imported by their
own names (`coalmine.api.spec`, `coalmine.api.status`); this package re-exports nothing.
"""
