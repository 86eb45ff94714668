"""The rollout state machine: what to do next, decided from what is, with no I/O.

``decide(plan, memory, observed, now)`` takes what the spec asks for (the plan), the rollout's
memory (its status), what the operator just observed in the cluster, and the time, and returns
the actions to take and the memory to write back. It never talks to the API and never reads the
clock, so every transition can be tested exhaustively, and the operator can crash between any
two actions: the next call sees the world as it is and picks up from there.

The safety rules live here and nowhere else:

- the canary only receives a weight its ready pods can serve, and never a larger real share of
  traffic than the step asks (with the ratio of replicas too: see `ratio_sizes`);
- a step counts as done only when the router's read-back confirms its weight;
- nothing is scaled down before the router confirms that traffic has left it;
- steps are walked one by one; only promote-full and a fast rollback skip them, and a fast
  rollback only returns to a revision the status records as having been stable;
- an abort sends all traffic back to the stable revision before anything else happens.

Modules: `types` (plan, memory, observation, actions, sizes), `builder` (one decision's
scratchpad), `core` (the flow), `weighted` and `ratio` (how a weight becomes traffic), `common`.
This package re-exports what the rest of the operator uses.
"""

from coalmine.machine.core import decide as decide
from coalmine.machine.types import Action as Action
from coalmine.machine.types import AdoptedObserved as AdoptedObserved
from coalmine.machine.types import Adoption as Adoption
from coalmine.machine.types import AnalysisObserved as AnalysisObserved
from coalmine.machine.types import CreateRevision as CreateRevision
from coalmine.machine.types import Decision as Decision
from coalmine.machine.types import DeleteRevision as DeleteRevision
from coalmine.machine.types import EmitEvent as EmitEvent
from coalmine.machine.types import FinalizeRouting as FinalizeRouting
from coalmine.machine.types import Memory as Memory
from coalmine.machine.types import Observed as Observed
from coalmine.machine.types import Plan as Plan
from coalmine.machine.types import Problem as Problem
from coalmine.machine.types import ReleaseAdopted as ReleaseAdopted
from coalmine.machine.types import Restart as Restart
from coalmine.machine.types import RestartRevision as RestartRevision
from coalmine.machine.types import RestoreRevision as RestoreRevision
from coalmine.machine.types import RevisionObserved as RevisionObserved
from coalmine.machine.types import ScaleAdopted as ScaleAdopted
from coalmine.machine.types import ScaleRevision as ScaleRevision
from coalmine.machine.types import SelectRevisions as SelectRevisions
from coalmine.machine.types import SetWeight as SetWeight
from coalmine.machine.types import Step as Step
from coalmine.machine.types import canary_replicas_for as canary_replicas_for
from coalmine.machine.types import ratio_sizes as ratio_sizes
from coalmine.machine.types import ratio_weight as ratio_weight
