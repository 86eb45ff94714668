-- Which coalmine actions Argo CD offers for a CanaryRollout, from its status (the same rules
-- the operator applies: a control token that cannot act is recorded and ignored).
local status = obj.status or {}
local phase = status.phase
-- promote-full and abort act only on a canary still walking its steps (status.stage Steps),
-- not on one already being promoted or retired.
local walking = status.canaryRevision ~= nil and status.stage == "Steps"
  and (phase == "Progressing" or phase == "Paused")
return {
  ["promote"] = {disabled = phase ~= "Paused"},
  ["promote-full"] = {disabled = not walking},
  ["abort"] = {disabled = not walking},
  ["retry"] = {disabled = phase ~= "Degraded"},
}
