"""The pipeline the service builds and submits: the graph of the steps, the inputs the settings give each one,
the Azure ML pipeline job (the steps' registered components and the AutoML node) and its release.

The steps themselves are `pipeline_steps` (never imported here: the local runner starts them by module name);
their components, the interface both sides agree on, are in `shared/components/`.
"""
