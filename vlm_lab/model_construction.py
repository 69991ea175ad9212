"""One model built at a time in this process: transformers' loading swaps process-wide state.

``from_pretrained`` (transformers 5.23) builds the model inside contexts that change what
every thread sees, and put back what they found on the way out:

- ``local_torch_dtype``: ``torch.set_default_dtype(dtype)`` (one default per process);
- ``init.no_tie_weights``: ``PreTrainedModel.tie_weights`` replaced by a no-op on the class;
- ``init.meta_device_safe_creation_ops`` (remote code): ``torch.linspace`` replaced.

Two loads in two threads (the Space's visitors, the model cache's parallel loads, a
notebook's background compare) interleave as: A saves the real value and swaps it, B saves
*A's swap*, A restores, B restores A's swap, for good. Seen with two bfloat16 loads of the
shapes checkpoints released together: the process left at bfloat16 in 4 of 10 pairs (every
later ``torch.randn`` in bfloat16), and loads whose ``tie_weights`` ran while the other's
no-op was in place left ``lm_head`` on the meta device ("Cannot copy out of meta tensor").
A load's own ``tie_weights`` runs after its contexts close, so the whole load is one
critical section, not just the build.

Every model construction vlm_lab starts takes this lock (re-entrant: a build inside a build
is one thread's). Loads wait for each other's turn; a load reads its weights from disk at
the same speed alone as beside another on these machines, so parallel loads gained little.
"""

from __future__ import annotations

import threading

building_models = threading.RLock()
