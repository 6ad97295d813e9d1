"""keras_awn's internals: the only package that knows Keras' private attributes and backend details.

Nothing here is public API. What each module owns (docs/architecture.md draws how they work
together):

- `topology`: which layers read an adaptive layer's units (`Links`), and whether they can follow
  its width.
- `training_state`: what a running `fit` tells an adaptive layer (the number of examples N, a
  frozen width, its producer), and the one function that changes a value the compiled step
  reads, `set_trace_constants`, which also marks the compiled steps stale.
- `capacity_policy`: when a layer's capacity changes, as plain arithmetic (no Keras).
- `resize`: changing capacities in place (variables, optimizer state, compiled steps), as one
  transaction (`interrupts` holds Ctrl-C back meanwhile).
- `initializers`: host-side (numpy) draws of Keras' built-in initializers for new units.
- `running_state`: reading width parameters from a running `fit` without waiting for it.
- `backend_guards`: refusing distributed setups where a resize would desynchronise replicas.
- `saving`: the capacities a weights file holds (read before loading it), atomic `.keras` and
  weights writes, portable compile configs.
- `folding`: folding an importance vector into a plain Keras reader (`strip`).
- `keras_internals`: the private Keras names the rest of keras_awn needs, in one place.
"""
