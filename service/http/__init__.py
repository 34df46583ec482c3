"""The web server side: gunicorn/uvicorn worker, problem details, OpenAPI, request ids."""
