"""Azure Functions entry point (Python v2 model): wiring only, no logic and no heavy imports."""

import azure.functions as func

from retrainer.triggers.labels import bp as labels_blueprint

app = func.FunctionApp()
app.register_functions(labels_blueprint)
