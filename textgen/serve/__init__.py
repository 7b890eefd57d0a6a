"""`textgen serve`: the models over OpenAI's HTTP API, so that every client of it (the
openai SDK, llm, editors, curl) can use them. FastAPI and uvicorn are an optional extra:
pip install 'textgen-cli[serve]'."""
