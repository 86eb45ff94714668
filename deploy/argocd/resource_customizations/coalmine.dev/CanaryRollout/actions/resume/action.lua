-- Argo CD action "resume" for a coalmine CanaryRollout: undo a pause: the canary goes on from
-- where it was held, its timers counting again.
--
-- It sets the annotation coalmine.dev/resume to a token; the operator acts on each new token
-- once (coalmine's docs/resource.md, "Control annotations"). The token is the object's
-- resourceVersion: Argo CD reads the object from the API server to run an action, and every
-- write to it (this action's own, the operator's) changes that version, so each request gets
-- a new token, while two requests that read the same version (a double click) get the same
-- one and act once. Generated from coalmine's tools/devenv/argocdgen.py.
local metadata = obj.metadata
if metadata.annotations == nil then
  metadata.annotations = {}
end
metadata.annotations["coalmine.dev/resume"] = "argocd-" .. (metadata.resourceVersion or "0")
return obj
