"""The API worker: a Starlette app under uvicorn that redeems codes and answers for tokens."""
