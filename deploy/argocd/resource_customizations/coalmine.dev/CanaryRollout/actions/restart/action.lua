-- Argo CD action "restart" for a coalmine CanaryRollout: replace the stable revision's pods a few
-- at a time (a surge of 25%), never below the ready count its traffic needs: for pods that went
-- bad without a new template.
--
-- It sets the annotation coalmine.dev/restart to a token; the operator acts on each new token
-- once (coalmine's docs/resource.md, "Control annotations"). The token is the object's
-- resourceVersion: Argo CD reads the object from the API server to run an action, and every
-- write to it (this action's own, the operator's) changes that version, so each request gets
-- a new token, while two requests that read the same version (a double click) get the same
-- one and act once. Generated from coalmine's tools/devenv/argocdgen.py.
local metadata = obj.metadata
if metadata.annotations == nil then
  metadata.annotations = {}
end
metadata.annotations["coalmine.dev/restart"] = "argocd-" .. (metadata.resourceVersion or "0")
return obj
