"""The champion: which version of the model serves, and the one authority that changes it.

- `tags`: the champion as the registry holds it (the best tag, its claim, the pin), and the rule a race settles by.
- `swap`: the only code that moves the best tag: a compare-and-swap, shared by the tag step and the operator.
- `record`: the best-model record that follows the registry.
- `authority`: the service's side: the operator's doors, a completed run's record, the history, ModelPromoted.

Kept free of storage imports here, so that the tag step (an Azure ML job) imports `tags` and `swap` alone.
"""
