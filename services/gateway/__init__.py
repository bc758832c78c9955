"""Gateway: the OpenAI-compatible HTTP edge of the mesh."""
