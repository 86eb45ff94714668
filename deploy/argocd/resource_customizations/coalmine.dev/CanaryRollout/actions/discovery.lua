-- Which coalmine actions Argo CD offers for a CanaryRollout, from its status. Every action is
-- always listed (disabled ones are greyed out), and offered only where the operator acts on
-- it: a control token that cannot act is recorded and ignored (docs/resource.md).
local status = obj.status or {}
local phase = status.phase

local pausedByUser = status.pausedByUser == true
for _, condition in ipairs(status.conditions or {}) do
  if condition.type == "Paused" and condition.status == "True" and condition.reason == "PausedByUser" then
    pausedByUser = true
  end
end

-- A canary in flight (walking its steps or being promoted), and one still walking its steps:
-- promote-full and abort act only on the latter.
local inFlight = status.canaryRevision ~= nil and (phase == "Progressing" or phase == "Paused")
local walking = inFlight and status.stage == "Steps"

return {
  ["promote"] = {disabled = phase ~= "Paused" or pausedByUser},
  ["promote-full"] = {disabled = not walking or pausedByUser},
  ["abort"] = {disabled = not walking},
  ["retry"] = {disabled = phase ~= "Degraded"},
  ["pause"] = {disabled = not inFlight or pausedByUser},
  ["resume"] = {disabled = not pausedByUser},
  ["restart"] = {disabled = status.stableRevision == nil or phase == "Failed", displayName = "Restart stable pods"},
}
