"""The embedded llama.cpp engine: one model in this process, continuous batching, a fair
scheduler, sampling, chat templates and tool-call parsing."""
