"""A stand-in detector for rehearsing the pipeline steps: it answers from a table of boxes it was given.

Logged as an MLflow model from code (this file is the model), so loading and serving it needs only
MLflow, pandas and the standard library, which the pipeline steps' environment has. It follows AutoML
for Images' scoring contract: a column `image` of base64 image bytes in, a column `boxes` out.
"""

import base64
import hashlib
import json
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

#: The artifact holding the answers: image sha256 -> boxes in the contract's form.
ANSWERS_ARTIFACT = "answers"
#: The answers' key for every image the table does not name.
ANY_IMAGE = "*"


class TableModel(PythonModel):
    def load_context(self, context):
        self.answers = json.loads(Path(context.artifacts[ANSWERS_ARTIFACT]).read_text())

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        digests = (hashlib.sha256(base64.b64decode(value)).hexdigest() for value in model_input["image"])
        otherwise = self.answers.get(ANY_IMAGE, [])
        return pd.DataFrame({"boxes": [self.answers.get(digest, otherwise) for digest in digests]})


mlflow.models.set_model(TableModel())
