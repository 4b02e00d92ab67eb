"""Azure Functions entry point (Python v2 model): wiring only, no logic and no heavy imports."""

import azure.functions as func

from retrainer.triggers.api import bp as api_blueprint
from retrainer.triggers.images import bp as images_blueprint
from retrainer.triggers.labels import bp as labels_blueprint
from retrainer.triggers.monitor import bp as monitor_blueprint

app = func.FunctionApp()
for blueprint in (labels_blueprint, images_blueprint, monitor_blueprint, api_blueprint):
    app.register_functions(blueprint)
