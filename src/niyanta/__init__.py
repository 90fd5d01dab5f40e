"""Niyanta: the public SDK a workload author imports.

```python
from niyanta import workload, WorkloadContext, TransientError

@workload("count-primes", resources={"cpu": 0.5, "memory_mb": 128})
async def count_primes(ctx: WorkloadContext) -> dict:
    state = ctx.checkpoint or {"n": 2, "found": 0}
    ...
    await ctx.save_checkpoint(state)
```
"""

from niyanta.errors import FencedOut, PermanentError, TransientError
from niyanta.worker.batch import BatchResult, batch
from niyanta.worker.circuit_breaker import BreakerPolicy, BreakerState, CircuitBreaker
from niyanta.worker.context import WorkloadContext
from niyanta.worker.registry import Registry, WorkloadDefinition, default_registry, workload

__all__ = [
    "BatchResult",
    "BreakerPolicy",
    "BreakerState",
    "CircuitBreaker",
    "FencedOut",
    "PermanentError",
    "Registry",
    "TransientError",
    "WorkloadContext",
    "WorkloadDefinition",
    "batch",
    "default_registry",
    "workload",
]
