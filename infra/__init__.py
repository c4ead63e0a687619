"""The infrastructure every domain uses, apart from the cache levels (cache/):
settings (the one reader of the environment), PostgreSQL access (db), the one
error shape and its handlers (errors), JSON bodies (responses), the request
log, metrics and their server, security (JWT, rate limits) and Celery wiring
(tasks). Nothing here imports the cache package or the blueprints.
"""
