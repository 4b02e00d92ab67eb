"""Azure Functions blueprints, one per trigger family. Each parses its input, calls the core, returns."""
