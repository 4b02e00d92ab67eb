"""Pipeline steps: each a core function plus a thin CLI (`python -m pipeline_steps.<step>`)."""
