-- Argo CD health of a coalmine CanaryRollout (docs/install.md, "Argo CD").
-- Argo CD runs this with the live object in `obj` and reads {status, message} back. Only the
-- base, table and os (time, date) libraries exist there: no string or math functions.
local hs = {status = "Progressing", message = "waiting for the coalmine operator to report"}
local status = obj.status
if status == nil then
  return hs
end
if status.message ~= nil then
  hs.message = status.message
end

-- A status written for an older generation says nothing about the spec Argo CD just synced.
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= generation then
  hs.message = "waiting for the coalmine operator to act on generation " .. generation
  return hs
end

local phase = status.phase
if phase == "Paused" then
  -- Held at a pause step, waiting for time or a promote: nothing is wrong, nothing moves.
  hs.status = "Suspended"
elseif phase == "Degraded" then
  -- Aborted (by hand, failed analysis, progress deadline); traffic is back on stable.
  hs.status = "Degraded"
elseif phase == "Failed" then
  hs.status = "Degraded"
  if status.conditions ~= nil then
    for _, condition in ipairs(status.conditions) do
      if condition.type == "InvalidSpec" and condition.status == "True" then
        hs.message = "invalid spec: " .. condition.message
      end
    end
  end
elseif phase == "Healthy" and status.canaryRevision == nil then
  -- No canary in flight for the current generation: the stable revision is the desired one.
  hs.status = "Healthy"
end
return hs
