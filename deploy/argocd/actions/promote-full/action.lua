-- Argo CD action "promote-full" for a coalmine CanaryRollout: skip every remaining step; the
-- canary becomes the stable revision now.
--
-- It sets the annotation coalmine.dev/promote-full to a fresh token:
-- the operator acts on each new token once (docs/resource.md, "Control annotations"). Argo CD's
-- Lua has no random numbers, so the token is the UTC second plus the object's resourceVersion.
-- Any write to the object (this action's own, the operator recording the token it handled)
-- changes the resourceVersion, so every later request gets a new token; a double click on the
-- same version within the same second gets the same one, and acts once.
local os = require("os")
local metadata = obj.metadata
if metadata.annotations == nil then
  metadata.annotations = {}
end
local version = metadata.resourceVersion or "0"
local token = "argocd-" .. os.date("!%Y%m%dT%H%M%SZ") .. "-" .. version
metadata.annotations["coalmine.dev/promote-full"] = token
return obj
