"""Pipeline steps: each a core function plus a thin CLI (`python -m pipeline_steps.<step>`), run as jobs.

What the steps share with the service (the records, the promotion rule, the registry, the contracts, the
components) is in `shared`; the pipeline the service builds from them is `retrainer.assembly`.
"""

from pipeline_steps.cpu_share import wait_passively

# Before any step imports torch, whose OpenMP reads it once: threads that wait sleep, never spin (cpu_share.py).
wait_passively()
