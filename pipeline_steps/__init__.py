"""Pipeline steps: each a core function plus a thin CLI (`python -m pipeline_steps.<step>`)."""

#: The version under which `retrain register-components` registers the step components and their
#: environment, and which the service's submissions reference (kept equal to the package version).
PIPELINE_RELEASE = "0.1.0"
