"""examples/fastapi_app: a FastAPI app watched live in the taskevents dashboard (see
README.md); a package, so that ``uvicorn examples.fastapi_app.app:app`` imports it."""
