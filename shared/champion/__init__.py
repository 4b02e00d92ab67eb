"""The champion as the model registry holds it, shared by the tag step and the service's authority.

- `tags`: the champion as the registry holds it (the best tag, its claim, the pin), and the rule a race settles by.
- `swap`: the only code that moves the best tag: a compare-and-swap, shared by the tag step and the operator.

Kept free of storage imports, so that the tag step (an Azure ML job) imports `tags` and `swap` alone.
"""
