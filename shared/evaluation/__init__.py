"""The sheets a detector is scored on and mAP@0.5 (numpy only): what the tag step scores with and the service's
serving smoke test checks an endpoint with, the same way.

- `sheets`: sheets and their boxes from an MLTable, and a model's predictions on them.
- `comparison`: matching predictions to boxes, per-class AP@0.5 and the weighted mAP@0.5.

The scorer that calls a model (`pipeline_steps.evaluation.scoring`) and the COCO metrics stay with the steps.
"""
