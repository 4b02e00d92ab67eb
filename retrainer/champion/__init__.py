"""The champion: which version of the model serves, and the one authority that changes it.

- `record`: the best-model record that follows the registry.
- `authority`: the service's side: the operator's doors, a completed run's record, the history, ModelPromoted.

The champion as the registry holds it (`shared.champion.tags`) and the only code that moves the best tag
(`shared.champion.swap`) sit below the service and the steps alike: the tag step (an Azure ML job) moves it too.
"""
