-- Argo CD health of a coalmine CanaryRollout (coalmine's docs/argocd.md, "Health").
-- Argo CD runs this with the live object in `obj` and reads {status, message} back. Pasted into
-- argocd-cm it gets only the base and table libraries (no string, no math), so it uses neither.
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

-- Held by the pause control (a coalmine.dev/pause token): status.pausedByUser, and the
-- condition Paused with reason PausedByUser (a pause step has reason PauseStep).
local function pausedByUser()
  if status.pausedByUser == true then
    return true
  end
  for _, condition in ipairs(status.conditions or {}) do
    if condition.type == "Paused" and condition.status == "True" and condition.reason == "PausedByUser" then
      return true
    end
  end
  return false
end

local phase = status.phase
if phase == "Degraded" then
  -- Aborted (by hand, failed analysis, progress deadline); traffic is back on stable. An abort
  -- outranks a pause: there is nothing left to hold.
  hs.status = "Degraded"
elseif phase == "Failed" then
  hs.status = "Degraded"
  for _, condition in ipairs(status.conditions or {}) do
    if condition.type == "InvalidSpec" and condition.status == "True" then
      hs.message = "invalid spec: " .. condition.message
    end
  end
elseif pausedByUser() then
  -- Held at its current weight, timers stopped, until a coalmine.dev/resume token.
  hs.status = "Suspended"
  if status.message == nil then
    hs.message = "paused by user: held until resumed (coalmine.dev/resume)"
  end
elseif phase == "Paused" then
  -- Held at a pause step, waiting for time or a promote: nothing is wrong, nothing moves.
  hs.status = "Suspended"
elseif phase == "Healthy" and status.canaryRevision == nil then
  -- No canary in flight for the current generation: the stable revision is the desired one.
  hs.status = "Healthy"
end
return hs
