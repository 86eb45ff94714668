-- Argo CD action "pause" for a coalmine CanaryRollout: hold the canary in flight at its current
-- weight, whatever the step: nothing moves and its timers stop (a timed pause does not run out,
-- the progress deadline does not pass) until a resume token; an abort still acts.
--
-- It sets the annotation coalmine.dev/pause to a token; the operator acts on each new token
-- once (coalmine's docs/resource.md, "Control annotations"). The token is the object's
-- resourceVersion: Argo CD reads the object from the API server to run an action, and every
-- write to it (this action's own, the operator's) changes that version, so each request gets
-- a new token, while two requests that read the same version (a double click) get the same
-- one and act once. Generated from coalmine's tools/devenv/argocdgen.py.
local metadata = obj.metadata
if metadata.annotations == nil then
  metadata.annotations = {}
end
metadata.annotations["coalmine.dev/pause"] = "argocd-" .. (metadata.resourceVersion or "0")
return obj
