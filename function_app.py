"""Azure Functions entry point (Python v2 model): wiring only, no logic.

One heavy import happens here, at indexing: the label trigger binds a `BlobClient` (an SDK-type binding), so
indexing loads `azure.storage.blob`, about half a second (docs/benchmarks.md). Every other SDK loads inside
the handler that needs it.
"""

import azure.functions as func

from retrainer.triggers.api import blueprint as api_blueprint
from retrainer.triggers.event_grid import bp as event_grid_blueprint
from retrainer.triggers.label_blob import bp as label_blob_blueprint
from retrainer.triggers.monitor import bp as monitor_blueprint

app = func.FunctionApp()
for blueprint in (label_blob_blueprint, event_grid_blueprint, monitor_blueprint, api_blueprint()):
    app.register_functions(blueprint)
