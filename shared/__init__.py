"""What the function app and the pipeline steps both import: below both, importing nothing of either.

The domain records and the promotion rule, the step files' contracts, the model registry (its port and two
backends), the settings a step reads, the champion's tags and swap, the sheets and mAP@0.5 both sides score
with, and the steps' Azure ML interface (`components/`: the service registers and submits them, the step CLIs
read their defaults). It ships with the function app and in every component's snapshot.
"""

from pathlib import Path

#: The steps' command components (`<step>.yml`), the environments they run on and the steps' pins.
COMPONENTS = Path(__file__).resolve().parent / "components"
