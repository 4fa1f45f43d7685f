"""HTTP serving: `create_app(predictor) -> FastAPI` with a JSON API and a single web page."""
