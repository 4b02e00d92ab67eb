"""Serving: an endpoint that answers with the champion, and follows it safely whoever changes it.

- `contract`: the request and the answer (AutoML for Images' MLflow scoring contract over HTTP), shared by every
  caller: the smoke test, the demo, users.
- `endpoint`: the narrow interface to an endpoint and its deployments, with two backends: `local` (the Azure ML
  inference server in processes of its own, behind a local router) and `azureml` (a managed online endpoint).
- `rollout`: the rollout, one step per tick: deploy the new champion, smoke-test it, move traffic (a canary share
  first when asked), keep the previous deployment so a rollback is a traffic switch; a failure leaves traffic where
  it was, says so and retries with back-off.
- `smoke`: the smoke test: a few holdout sheets through the new deployment, their mAP@0.5 against the champion's.
The entry script a local deployment's inference server runs is `inference/score.py`, in the serving environment
(`inference/requirements.txt`), outside the function app.
"""
