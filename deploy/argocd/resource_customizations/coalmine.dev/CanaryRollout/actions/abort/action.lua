-- Argo CD action "abort" for a coalmine CanaryRollout: send all traffic back to the stable
-- revision and scale the canary down; the rollout stays aborted (phase Degraded) until a retry
-- token or a new template.
--
-- It sets the annotation coalmine.dev/abort to a token; the operator acts on each new token
-- once (coalmine's docs/resource.md, "Control annotations"). The token is the object's
-- resourceVersion: Argo CD reads the object from the API server to run an action, and every
-- write to it (this action's own, the operator's) changes that version, so each request gets
-- a new token, while two requests that read the same version (a double click) get the same
-- one and act once. Generated from coalmine's tools/devenv/argocdgen.py.
local metadata = obj.metadata
if metadata.annotations == nil then
  metadata.annotations = {}
end
metadata.annotations["coalmine.dev/abort"] = "argocd-" .. (metadata.resourceVersion or "0")
return obj
